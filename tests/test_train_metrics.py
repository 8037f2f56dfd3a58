"""Screening metrics, thresholds, bootstrap intervals, the cross-validation splits, transcript alignment and
transcript error, on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from depscreen.engine.train.align import align_transcript, split_clauses
from depscreen.engine.train.crossval import split_validation, stratified_folds
from depscreen.engine.train.metrics import (
    auroc,
    best_f1_threshold,
    bootstrap,
    classification,
    expected_calibration_error,
    logistic,
    screening_report,
)
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.transcript_error import ErrorCount, edit_distance, error_units, transcript_error


def test_logistic_turns_logits_into_probabilities() -> None:
    probabilities = logistic(np.array([-np.log(3.0), 0.0, np.log(3.0)]))
    np.testing.assert_allclose(probabilities, [0.25, 0.5, 0.75])


def test_classification_metrics_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    predicted = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    m = classification(labels, predicted)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert classification(labels, np.zeros(8))["f1"] == 0.0


def test_auroc_and_ece_by_hand() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="one positive and one negative"):
        auroc([1, 1], [0.2, 0.3])
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    assert expected_calibration_error([1, 1], [0.05, 0.05]) == pytest.approx(0.95)


def test_best_f1_threshold_separates_when_it_can() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([0.1, 0.2, 0.3, 0.6, 0.9])
    threshold = best_f1_threshold(labels, probabilities)
    assert 0.3 < threshold <= 0.6
    assert classification(labels, probabilities >= threshold)["f1"] == 1.0


def test_best_f1_threshold_never_calls_every_session_positive() -> None:
    labels = np.array([1, 0])
    probabilities = np.array([0.2, 0.7])  # ranked wrongly: "all positive" has the best F1 (0.67)
    threshold = best_f1_threshold(labels, probabilities)
    assert 0.2 < threshold <= 0.7
    assert best_f1_threshold(labels, np.array([0.4, 0.4])) == 0.5, "nothing to split"


def test_report_has_intervals_around_values_and_baselines() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([1] * 10 + [0] * 30)
    probabilities = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 40), 0, 1)
    report = screening_report(labels, probabilities, 0.5)
    assert report["n"] == 40 and report["positives"] == 10
    for name in ("f1", "precision", "recall", "accuracy", "balanced_accuracy", "auroc", "ece"):
        ci = report["ci95"][name]
        assert ci["low"] <= ci["value"] <= ci["high"], name
    assert report["baselines"]["all_positive"]["recall"] == 1.0
    assert report["baselines"]["all_positive"]["f1"] == pytest.approx(2 * 0.25 / 1.25)
    assert report["baselines"]["majority"]["accuracy"] == 0.75 and report["baselines"]["majority"]["f1"] == 0.0
    narrow = bootstrap(labels, lambda i: float(labels[i].mean()))
    assert narrow.low == narrow.high == 0.25, "stratified resampling keeps the class balance"


def test_stratified_folds_partition_and_balance() -> None:
    labels = [1] * 19 + [0] * 63
    folds = stratified_folds(labels, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(82))
    assert all(3 <= sum(labels[i] for i in fold) <= 4 for fold in folds)
    assert [f.tolist() for f in folds] == [f.tolist() for f in stratified_folds(labels, 5, seed=3)]
    with pytest.raises(ValueError, match="at least 5 sessions of each class"):
        stratified_folds([1, 1, 0, 0, 0, 0, 0], 5, seed=0)
    with pytest.raises(ValueError, match="at least 2 sessions of each class"):
        stratified_folds([], 2, seed=0)  # no session at all: the same clear error, not numpy's cast error


def test_validation_split_is_stratified_and_disjoint() -> None:
    sessions = [LabelledSession(label=int(i < 10), sentences=[], session_id=str(i)) for i in range(40)]
    train, validation = split_validation(sessions, 0.2, seed=0)
    assert {s.session_id for s in train}.isdisjoint({s.session_id for s in validation})
    assert len(train) + len(validation) == 40
    assert sum(s.label for s in validation) == 2 and len(validation) == 8


def test_transcript_spreads_over_sentences_by_speech_time() -> None:
    assert split_clauses("嗯，放松的时候，看电影吧。 ") == ["嗯，", "放松的时候，", "看电影吧。"]
    captions = align_transcript("一二三四，五六七八。九十", [1000, 1000, 500])
    assert captions == ["一二三四，", "五六七八。", "九十"]
    assert align_transcript("只有一句。", [800, 100]) == ["只有一句。", ""]
    assert align_transcript("", [500]) == [""]


def test_transcript_error_normalises_alike_and_counts_characters_for_mandarin() -> None:
    assert error_units("我最近，睡不好。 Zzz!", "zh-CN") == list("我最近睡不好zzz")
    assert error_units("Ask not -- what YOUR country's!", "en") == ["ask", "not", "what", "your", "country's"]
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert transcript_error("我最近睡不好。", "我最近水不好，", "zh") == ErrorCount(1, 6)
    assert transcript_error("我最近睡不好。", "我最近睡不好吧", "cmn") == ErrorCount(1, 6)
    assert transcript_error("ask not what", "Ask, not that!", "en") == ErrorCount(1, 3)
    pooled = ErrorCount(1, 6) + ErrorCount(3, 4)
    assert pooled == ErrorCount(4, 10) and pooled.rate == 0.4 and ErrorCount().rate == 0.0
    assert transcript_error("我們", "我们", "zh") == ErrorCount(1, 2), "no script conversion"
