"""`depscreen eval` scores sentence by sentence through Screener.step; it equals the offline full scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.features.text import MINILM, MULTILINGUAL, PHQ8_ITEMS, make_text_embedder, text_feature_dim
from depscreen.engine.model.screening import ScreeningModel
from depscreen.engine.pipeline import Extractors
from depscreen.engine.runtime.checkpoint import DEMO_MODEL, ModelFacts, load_checkpoint, save_checkpoint
from depscreen.engine.runtime.screener import Screener
from depscreen.engine.train.evaluate import evaluate, stream_session
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.study import dataset_config
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions
from depscreen.engine.train.trainer import prefix_logits
from depscreen.engine.train.variants import restrict

UNIT = FeatureStats.unit()
SHORT = SyntheticSettings(min_sentences=2, max_sentences=4, max_frames=80)
"""Small sessions: every sentence is a model step in these tests."""


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener.from_checkpoint(DEMO_MODEL, "cpu")


def test_streamed_estimates_equal_the_offline_full_scan(screener: Screener) -> None:
    for session in generate_sessions(3, UNIT, seed=7, settings=SHORT):
        streamed = stream_session(screener, session)
        offline = screener.offline(session.sentences)
        assert len(streamed) == len(offline) == len(session.sentences)
        for a, b in zip(streamed, offline, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-5)
            for ma, mb in zip(a.modalities, b.modalities, strict=True):
                assert ma.weight == pytest.approx(mb.weight, abs=1e-5)
        training_view = 1 / (
            1 + np.exp(-prefix_logits(screener.model, [session])[0] / float(screener.model.temperature))
        )
        assert np.allclose(training_view, [e.probability for e in offline], atol=1e-5), "trainer scores what serves"


def test_evaluate_reports_streamed_final_estimates(screener: Screener) -> None:
    sessions = generate_sessions(10, UNIT, seed=11, settings=SHORT)
    assert 0 < sum(s.label for s in sessions) < 10
    report = evaluate(screener, sessions)
    assert report["n"] == 10 and report["positives"] == sum(s.label for s in sessions)
    finals = np.array([stream_session(screener, s)[-1].probability for s in sessions])
    labels = np.array([s.label for s in sessions])
    predicted = finals >= screener.facts.decision_threshold
    assert report["recall"] == pytest.approx(float((predicted & (labels == 1)).sum() / labels.sum()), abs=1e-4)
    assert {"f1", "auroc", "ece", "balanced_accuracy", "baselines", "ci95"} <= set(report)
    listed = report["sessions"]
    assert [row["id"] for row in listed] == [s.session_id for s in sessions]
    assert [row["label"] for row in listed] == labels.tolist()
    assert [row["probability"] for row in listed] == pytest.approx(finals.tolist(), abs=1e-4)
    for row in listed:
        assert set(row) == {"id", "label", "probability", "interval_low", "interval_high"}
        assert 0.0 <= row["interval_low"] <= row["interval_high"] <= 1.0
    interval = report["interval"]
    heard = [e for s in sessions for e in stream_session(screener, s) if e.enough_speech]
    assert interval["estimates_with_enough_speech"] == len(heard)
    calibration = screener.facts.interval
    assert interval["level"] == (calibration.level if calibration else 0.0)
    lasts = [stream_session(screener, s)[-1] for s in sessions]
    lasts = [e for e in lasts if e.enough_speech]
    ruled_out = [e.interval_low > 0 or e.interval_high < 1 for e in lasts]
    assert interval["rules_out_a_label_last"] == (pytest.approx(np.mean(ruled_out), abs=1e-4) if lasts else None)
    json.dumps(report)  # what `eval --json` prints


def test_checkpoint_records_its_text_encoder_and_the_server_builds_it(tmp_path: Path) -> None:
    _, facts = load_checkpoint(DEMO_MODEL)
    assert facts.text_encoder == MINILM and facts.decision_threshold == 0.5, "old checkpoints: MiniLM, 0.5"
    config = dataset_config(MULTILINGUAL)
    assert config.text_dim == text_feature_dim(MULTILINGUAL) == 520
    save_checkpoint(
        tmp_path / "m.pt",
        ScreeningModel(config),
        ModelFacts("m", "test", decision_threshold=0.3, text_encoder=MULTILINGUAL),
    )
    model, facts = load_checkpoint(tmp_path / "m.pt")
    assert (facts.text_encoder, facts.decision_threshold, model.config.text_dim) == (MULTILINGUAL, 0.3, 520)
    extractors = Extractors.load(asr="none", text_encoder=facts.text_encoder)
    assert extractors.text.feature_dim == model.config.text_dim
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        make_text_embedder("bert")


def test_multilingual_encoder_reads_mandarin_and_english_alike() -> None:
    embedder = make_text_embedder(MULTILINGUAL)
    embeddings, similarity = embedder.embed(
        ["我晚上总是睡不着觉。", "I can't sleep at night.", "今天我们去公园散步了。", ""]
    )
    assert embeddings.shape == (4, 512) and np.allclose(np.linalg.norm(embeddings[:3], axis=1), 1, atol=1e-5)
    assert not embeddings[3].any() and not similarity[3].any(), "no text is all zeros"
    sleep = PHQ8_ITEMS.index("sleep")
    assert similarity[0].argmax() == sleep and similarity[1].argmax() == sleep
    assert embeddings[0] @ embeddings[1] > embeddings[0] @ embeddings[2] + 0.2, "translation beats topic change"


def test_restrict_hides_modalities_and_drops_empty_sentences() -> None:
    sessions = generate_sessions(3, UNIT, seed=1)
    text_only = restrict(sessions, ("text",))
    assert all(s.available == (False, False, True) for x in text_only for s in x.sentences)
    assert sum(len(x.sentences) for x in text_only) == sum(
        1 for x in sessions for s in x.sentences if s.text is not None
    )
    assert all(not s.available[1] for x in restrict(sessions, ("audio", "text")) for s in x.sentences)
