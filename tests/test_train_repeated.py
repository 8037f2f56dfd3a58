"""Repeated cross-validation against the baselines: paired differences and their summary."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from depscreen.engine.train.baselines import BASELINES, applicable_baselines, cross_validate_baseline
from depscreen.engine.train.crossval import CrossValidation
from depscreen.engine.train.model_card import repeated_table
from depscreen.engine.train.repeated import auroc_difference, repeated_comparison
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.trainer import TrainSettings

from .conftest import spoken_sentence

WORDS = ("天气", "工作", "朋友", "学校", "周末", "电影", "家里", "吃饭")


def sessions(count: int = 30, seed: int = 0) -> list[LabelledSession]:
    """Sessions whose words carry a weak, noisy trace of the label; their audio and text features carry none."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        label = int(i % 3 == 0)
        sentences = []
        for k in range(3):
            words = rng.choice(WORDS, 4).tolist() + (["失眠"] if label and rng.random() < 0.25 else [])
            audio = rng.normal(0.0, 1.0, (50, 25)).astype(np.float32)
            sentences.append(spoken_sentence(k, audio, rng.normal(0.0, 1.0, 10).astype(np.float32), "".join(words)))
        result.append(LabelledSession(label, sentences, f"s{i}"))
    return result


def oracle(labelled: list[LabelledSession]):
    """A cross-validator whose out-of-fold estimate is the label itself (a perfect model)."""

    def run(settings: TrainSettings) -> CrossValidation:
        labels = np.array([s.label for s in labelled])
        return CrossValidation(
            session_ids=[s.session_id for s in labelled],
            labels=labels,
            probabilities=labels.astype(float),
            prefix_probabilities=[labels[i : i + 1].astype(float) for i in range(len(labels))],
            thresholds=np.full(len(labels), 0.5),
            folds=np.zeros(len(labels), int),
            epochs=[],
        )

    return run


def test_a_model_identical_to_a_baseline_gains_exactly_nothing() -> None:
    labelled = sessions()
    result = repeated_comparison(
        labelled,
        lambda settings: cross_validate_baseline("text-tfidf", labelled, 3, settings.seed),
        TrainSettings(seed=4),
        3,
        3,
        log=lambda _: None,
    )
    assert [row["seed"] for row in result["repeats"]] == [4, 5, 6]
    for row in result["repeats"]:
        assert row["baselines_difference"]["text-tfidf"] == {"value": 0.0, "low": 0.0, "high": 0.0}
        assert row["model"] == row["baselines"]["text-tfidf"]
    summary = result["summary"]
    assert summary["baselines"]["text-tfidf"]["auroc_difference"]["mean"] == 0.0
    assert summary["baselines"]["text-tfidf"]["repeats_model_clearly_better"] == 0
    assert summary["baselines"]["text-tfidf"]["repeats_model_higher"] == 0
    aurocs = [row["model"]["auroc"] for row in result["repeats"]]
    assert summary["model"]["auroc"]["mean"] == pytest.approx(np.mean(aurocs), abs=1e-4)
    assert summary["model"]["auroc"]["min"] == min(aurocs) and summary["model"]["auroc"]["max"] == max(aurocs)
    if len(set(aurocs)) > 1:
        assert summary["model"]["auroc"]["sd"] > 0


def test_a_perfect_model_beats_noisy_baselines_in_every_repeat_and_the_card_says_so() -> None:
    labelled = sessions()
    result = repeated_comparison(labelled, oracle(labelled), TrainSettings(seed=0), 3, 2, log=lambda _: None)
    for name in ("text-tfidf", "text-lsa", "audio-functionals", "text-embedding"):
        for row in result["repeats"]:
            difference = row["baselines_difference"][name]
            assert difference["value"] == pytest.approx(1.0 - row["baselines"][name]["auroc"], abs=1e-3)
            assert difference["low"] <= difference["value"] <= difference["high"]
        assert result["summary"]["baselines"][name]["repeats_model_clearly_better"] == 2
        assert result["summary"]["baselines"][name]["repeats_model_higher"] == 2
    assert result["summary"]["model"]["auroc"] == {"mean": 1.0, "sd": 0.0, "min": 1.0, "max": 1.0}
    assert result["summary"]["model"]["heads"]["fused"]["mean"] == 1.0
    table = repeated_table(result)
    assert "| model | 1.00 ± 0.00 [1.00, 1.00]" in table and "| baseline: text-tfidf |" in table
    assert "| baseline: text-lsa |" in table
    assert table.count("| 2 of 2 | 2 of 2 |") == 4, "higher and clearly better in both repeats, per baseline"


def test_ablations_run_on_the_same_folds_with_paired_differences() -> None:
    labelled = sessions()
    seeds: list[int] = []

    def ablation(settings: TrainSettings) -> CrossValidation:
        seeds.append(settings.seed)
        return cross_validate_baseline("text-tfidf", labelled, 3, settings.seed)

    first = cross_validate_baseline("text-tfidf", labelled, 3, 0)
    result = repeated_comparison(
        labelled,
        oracle(labelled),
        TrainSettings(seed=0),
        3,
        4,
        log=lambda _: None,
        ablations={"weaker": ablation},
        first_ablations={"weaker": first},
        ablation_repeats=3,
    )
    assert seeds == [1, 2], "the first assignment's run is reused, the others run on their own seeds, up to 3"
    for row in result["repeats"][:3]:
        assert row["ablations"]["weaker"] == row["baselines"]["text-tfidf"]
        assert row["ablations_difference"]["weaker"] == row["baselines_difference"]["text-tfidf"]
    assert result["repeats"][3]["ablations"] == {}
    summary = result["summary"]["ablations"]["weaker"]
    assert summary["repeats"] == 3 and summary["repeats_model_higher"] == 3
    tfidf = [row["baselines"]["text-tfidf"]["auroc"] for row in result["repeats"][:3]]
    assert summary["auroc"]["mean"] == pytest.approx(np.mean(tfidf), abs=1e-4)
    assert summary["model_auroc_same_repeats"]["mean"] == 1.0
    assert "| ablation: weaker |" in repeated_table(result) and "| 3 of 3 | 3 of 3 |" in repeated_table(result)
    with pytest.raises(ValueError, match="different sessions"):
        repeated_comparison(
            labelled, oracle(labelled), TrainSettings(), 3, 2, log=lambda _: None, ablations={"x": oracle(labelled[1:])}
        )


def test_the_first_repeat_reuses_the_run_already_made() -> None:
    labelled = sessions()
    calls: list[int] = []

    def model(settings: TrainSettings) -> CrossValidation:
        calls.append(settings.seed)
        return oracle(labelled)(settings)

    repeated_comparison(
        labelled, model, TrainSettings(seed=0), 3, 3, first=oracle(labelled)(TrainSettings()), log=print
    )
    assert calls == [1, 2]


def test_paired_difference_and_bad_arguments_are_checked() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    better, worse = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7]), np.array([0.9, 0.2, 0.1, 0.9, 0.3, 0.7])
    difference = auroc_difference(labels, better, worse, seed=0)
    assert difference["value"] > 0 and difference["low"] <= difference["value"] <= difference["high"]
    labelled = sessions()
    with pytest.raises(ValueError, match="at least 2 repeats"):
        repeated_comparison(labelled, oracle(labelled), TrainSettings(), 3, 1)
    with pytest.raises(ValueError, match="different sessions"):
        repeated_comparison(labelled, oracle(labelled[1:]), TrainSettings(), 3, 2, log=lambda _: None)


def test_baselines_run_only_where_every_session_has_their_input() -> None:
    labelled = sessions()
    assert applicable_baselines(labelled) == list(BASELINES)
    untranscribed = [
        replace(s, sentences=[replace(x, transcript="", text=None) for x in s.sentences]) if i == 3 else s
        for i, s in enumerate(labelled)
    ]
    assert applicable_baselines(untranscribed) == ["audio-functionals"]
