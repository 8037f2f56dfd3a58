"""The estimate's interval: conformal coverage where the truth is known, narrowing with evidence, the
not-enough-speech rule, checkpoints with and without a calibration, and the wire."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from depscreen.engine.model.screening import ModelConfig, ScreeningModel
from depscreen.engine.runtime.checkpoint import ModelFacts, load_checkpoint, save_checkpoint
from depscreen.engine.runtime.interval import (
    ENOUGH_SPEECH_S,
    INTERVAL_LEVEL,
    IntervalCalibration,
    conformal_quantile,
    fit_interval,
    interval_coverage,
    interval_for,
)
from depscreen.engine.runtime.screener import ModalityEstimate, RunningEstimate
from depscreen.streamer.convert import estimate_message
from depscreen.v1 import screening_pb2 as pb


def simulated_sessions(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Sessions whose true label is known and whose estimate separates the labels more with each sentence:
    (estimate, evidence, usable speech per prefix, labels)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    probabilities, evidence, speech = [], [], []
    for label in labels:
        k = int(rng.integers(4, 16))
        seconds = np.cumsum(rng.uniform(4.0, 12.0, k))
        strength = 3.0 * (1 - np.exp(-seconds / 60.0))
        logit = (2 * label - 1) * strength + rng.normal(0.0, 1.0, k) - 0.8
        probabilities.append(1 / (1 + np.exp(-logit)))
        evidence.append(1 - np.exp(-seconds / 60.0))
        speech.append(seconds)
    return probabilities, evidence, speech, labels


def _coverage(calibration: IntervalCalibration, sessions: tuple) -> dict[int, float]:
    hits: dict[int, list[bool]] = {0: [], 1: []}
    for p, e, s, label in zip(*sessions, strict=True):
        for pk, ek, sk in zip(p, e, s, strict=True):
            if sk >= ENOUGH_SPEECH_S:
                low, high = calibration.interval(float(pk), float(ek))
                hits[int(label)].append(low <= label <= high)
    return {label: float(np.mean(h)) for label, h in hits.items()}


def test_conformal_quantile_is_the_finite_sample_rank() -> None:
    scores = np.arange(1, 20) / 20  # 19 scores: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.9) == pytest.approx(18 / 20)
    assert conformal_quantile(scores[:5], 0.9) == 1.0  # too few for the level: everything


def test_interval_covers_each_label_at_its_nominal_level_on_fresh_sessions() -> None:
    calibration = fit_interval(*simulated_sessions(400, seed=1))
    coverage = _coverage(calibration, simulated_sessions(2000, seed=2))
    for label in (0, 1):
        assert abs(coverage[label] - INTERVAL_LEVEL) <= 0.05, coverage
    # and the interval is informative: not the whole range for a confident estimate
    assert calibration.interval(0.05, 0.95) != (0.0, 1.0)


def test_cross_validated_coverage_report_is_near_nominal() -> None:
    sessions = simulated_sessions(500, seed=3)
    folds = np.arange(500) % 5
    report = interval_coverage(*sessions, folds)
    assert abs(report["coverage"] - INTERVAL_LEVEL) <= 0.05
    assert abs(report["coverage_by_label"]["1"] - INTERVAL_LEVEL) <= 0.05
    widths = [row["mean_width"] for row in report["mean_width_by_evidence_quartile"]]
    assert widths[-1] < widths[0]
    assert 0 < report["mean_width_last"] < 1 and report["mean_width_last"] <= widths[0]
    assert 0.5 < report["rules_out_a_label_last"] <= 1, "a separating estimate rules a label out for most sessions"


def test_interval_narrows_as_evidence_grows() -> None:
    calibration = fit_interval(*simulated_sessions(600, seed=4))
    assert len(calibration.evidence_edges) > 1
    widths = [np.subtract(*calibration.interval(0.5, e)[::-1]) for e in np.linspace(0.2, 0.99, 30)]
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(widths))
    assert widths[-1] < widths[0] - 0.1


def test_not_enough_speech_and_no_calibration_give_the_whole_range() -> None:
    calibration = fit_interval(*simulated_sessions(300, seed=5))
    assert interval_for(calibration, 0.1, 0.9, ENOUGH_SPEECH_S - 0.1) == (0.0, 1.0)
    assert interval_for(calibration, 0.1, 0.9, ENOUGH_SPEECH_S) != (0.0, 1.0)
    assert interval_for(None, 0.1, 0.9, 600.0) == (0.0, 1.0)
    assert interval_for(calibration, math.nan, 0.9, 600.0) == (0.0, 1.0)
    assert interval_for(calibration, 0.1, math.nan, math.nan) == (0.0, 1.0)


def test_too_few_held_out_estimates_is_a_clear_error() -> None:
    p, e, s, y = simulated_sessions(6, seed=6)
    with pytest.raises(ValueError, match="needs at least"):
        fit_interval(p, e, s, y)


def test_checkpoint_keeps_the_calibration_and_old_checkpoints_load_without(tmp_path) -> None:
    calibration = fit_interval(*simulated_sessions(300, seed=7))
    model = ScreeningModel(ModelConfig())
    facts = ModelFacts(model_id="t", trained_on="test", interval=calibration)
    save_checkpoint(tmp_path / "new.pt", model, facts)
    _, loaded = load_checkpoint(tmp_path / "new.pt")
    assert loaded.interval == calibration

    blob = torch.load(tmp_path / "new.pt", weights_only=True)
    del blob["facts"]["interval"]  # written before intervals existed
    torch.save(blob, tmp_path / "old.pt")
    _, old = load_checkpoint(tmp_path / "old.pt")
    assert old.interval is None


def test_interval_round_trips_the_wire() -> None:
    estimate = RunningEstimate(
        probability=0.3,
        evidence=0.5,
        modalities=(ModalityEstimate("audio", True, 0.9, 1.0, 0.3),),
        symptoms=(0.0,) * 8,
        interval_low=0.05,
        interval_high=0.75,
        interval_level=0.9,
        enough_speech=True,
    )
    message = pb.Estimate.FromString(estimate_message(estimate).SerializeToString())
    assert message.interval_low == pytest.approx(0.05)
    assert message.interval_high == pytest.approx(0.75)
    assert message.interval_level == pytest.approx(0.9)
    assert message.enough_speech is True


def _sentence(index: int, audio_frames: int, snr_db: float, text: np.ndarray | None, transcript: str = ""):
    from depscreen.engine.features.sentence import SentenceFeatures

    rng = np.random.default_rng(index)
    return SentenceFeatures(
        index=index,
        start_ms=index * 3000,
        end_ms=index * 3000 + 2500,
        speech_ms=audio_frames * 10,
        snr_db=snr_db,
        audio=rng.standard_normal((audio_frames, 25)).astype(np.float32),
        video=np.zeros((0, 136), dtype=np.float32),
        video_frames=0,
        text=text,
        transcript=transcript,
        transcript_source="caption" if text is not None else "",
        text_confidence=1.0 if text is not None else 0.0,
    )


@pytest.fixture(scope="module")
def calibrated_screener():
    from depscreen.engine.runtime.checkpoint import DEMO_MODEL
    from depscreen.engine.runtime.screener import Screener

    screener = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    calibration = fit_interval(*simulated_sessions(300, seed=8))
    return Screener(screener.model, replace(screener.facts, interval=calibration), screener.device)


def test_estimates_carry_the_interval_once_there_is_enough_speech(calibrated_screener) -> None:
    track = calibrated_screener.new_session()
    estimates = []
    for i in range(6):
        estimates.append(calibrated_screener.step(track, _sentence(i, 250, 30.0, None)))
        estimate = estimates[-1]
        assert estimate.interval_level == INTERVAL_LEVEL
        assert estimate.enough_speech == (track.account.usable_speech_s >= ENOUGH_SPEECH_S)
        if not estimate.enough_speech:
            assert (estimate.interval_low, estimate.interval_high) == (0.0, 1.0)
        else:
            assert estimate.interval_low <= estimate.probability <= estimate.interval_high
    assert not estimates[0].enough_speech and estimates[-1].enough_speech, "2.5 s per sentence: enough after two"
    offline = calibrated_screener.offline([_sentence(i, 250, 30.0, None) for i in range(6)])
    bounds = [bound for e in estimates for bound in (e.interval_low, e.interval_high)]
    assert [bound for e in offline for bound in (e.interval_low, e.interval_high)] == pytest.approx(bounds, abs=1e-5)


def test_bad_input_gets_an_estimate_with_its_availability_and_interval_never_nan(calibrated_screener) -> None:
    from depscreen.engine.features.text import make_text_embedder

    embedder = make_text_embedder(calibrated_screener.facts.text_encoder)
    pathological = ("我觉得 😀🙃 ok ça va مرحبا " * 400)[:8000]
    sessions = {
        "audio only": [_sentence(i, 250, 30.0, None) for i in range(4)],
        "text only (no usable audio)": [
            _sentence(i, 0, 0.0, embedder.features(["I can't sleep at night."])[0]) for i in range(4)
        ],
        "pathological transcript": [
            _sentence(i, 250, 30.0, embedder.features([pathological])[0], pathological) for i in range(4)
        ],
    }
    for name, sentences in sessions.items():
        track = calibrated_screener.new_session()
        for sentence in sentences:
            estimate = calibrated_screener.step(track, sentence)
            numbers = [estimate.probability, estimate.evidence, estimate.interval_low, estimate.interval_high]
            numbers += [m.probability for m in estimate.modalities] + [m.weight for m in estimate.modalities]
            assert all(math.isfinite(x) for x in numbers), (name, estimate)
            assert 0.0 <= estimate.interval_low <= estimate.interval_high <= 1.0, name
            available = {m.modality: m.available for m in estimate.modalities}
            assert available["text"] == (sentence.text is not None), name
            assert available["audio"] == (len(sentence.audio) > 0), name
        if name == "text only (no usable audio)":
            assert not estimate.enough_speech and (estimate.interval_low, estimate.interval_high) == (0.0, 1.0)
        else:
            assert estimate.enough_speech and estimate.interval_high - estimate.interval_low < 1.0, name
