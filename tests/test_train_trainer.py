"""Trainer options for real datasets: early stopping, audio crops, unlabelled faces, ablation variants."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from depscreen.engine.features.text import MINILM
from depscreen.engine.media import DEFAULT_VIDEO_FPS
from depscreen.engine.model.encoders import BiMamba
from depscreen.engine.train.faces import attach_faces
from depscreen.engine.train.interpret import video_gate_weight
from depscreen.engine.train.stats import FeatureStats, measured_stats
from depscreen.engine.train.study import dataset_config
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions
from depscreen.engine.train.trainer import (
    TrainSettings,
    _validation_loss,
    best_temperature,
    prefix_logits,
    train_model,
)
from depscreen.engine.train.variants import MeanPoolScreeningModel, forward_only, restrict

UNIT = FeatureStats.unit()
SMALL = SyntheticSettings(min_sentences=2, max_sentences=4, max_frames=60, video_session_rate=0.0)


@pytest.fixture(scope="module")
def sessions() -> list:
    return generate_sessions(24, UNIT, seed=5, settings=SMALL)


def test_early_stopping_keeps_the_best_validation_epoch(sessions: list) -> None:
    losses: list[float] = []
    train, validation = sessions[:16], sessions[16:]
    settings = TrainSettings(epochs=12, batch_size=8, learning_rate=3e-2, patience=2, seed=1)
    model = train_model(
        train,
        measured_stats(train, UNIT),
        dataset_config(MINILM),
        settings,
        lambda epoch, loss, validation_loss: losses.append(validation_loss),
        validation=validation,
    )
    assert len(losses) < 12, "stopped after `patience` epochs without improvement"
    assert losses.index(min(losses)) == len(losses) - 1 - settings.patience
    rate = np.mean([s.label for s in train])
    assert _validation_loss(model, validation, (1 - rate) / rate) == pytest.approx(min(losses), rel=1e-5)


def test_faces_are_attached_by_span_and_video_weight_is_reported(sessions: list) -> None:
    faces = np.random.default_rng(0).normal(size=(50, 136)).astype(np.float32)
    sentence = sessions[0].sentences[0]
    attached = attach_faces(sentence, faces, random.Random(0))
    expected = max(1, int((sentence.end_ms - sentence.start_ms) / 1000 * DEFAULT_VIDEO_FPS))
    assert len(attached.video) == attached.video_frames == expected and attached.available[1]
    settings = TrainSettings(epochs=1, batch_size=8, unlabelled_video=1.0, crop_frames=20)
    model = train_model(sessions, measured_stats(sessions, UNIT), dataset_config(MINILM), settings, faces=faces)
    weights = video_gate_weight(model, sessions, faces)
    assert set(weights) == {"audio", "video", "text"} and sum(weights.values()) == pytest.approx(1.0, abs=1e-3)


def test_ablation_variants_differ_from_the_model_where_they_should(sessions: list) -> None:
    config = dataset_config(MINILM)
    torch.manual_seed(0)
    mean_pool = MeanPoolScreeningModel(config).eval()
    one = prefix_logits(mean_pool, sessions[:1])[0]
    assert len(one) == len(sessions[0].sentences)
    unidirectional = forward_only(config).eval()
    blocks = [m for m in unidirectional.modules() if isinstance(m, BiMamba)]
    assert blocks and not any(b.bidirectional for b in blocks)
    before = prefix_logits(unidirectional, sessions[:2])
    with torch.no_grad():
        for block in blocks:
            for parameter in block.backward_scan.parameters():
                parameter.add_(1.0)
    after = prefix_logits(unidirectional, sessions[:2])
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)), "no backward scan is run"
    for block in blocks:
        block.bidirectional = True
    assert not all(
        np.array_equal(a, b) for a, b in zip(before, prefix_logits(unidirectional, sessions[:2]), strict=True)
    )
    audio_only = restrict(sessions, ("audio",))
    assert all(s.text is None for x in audio_only for s in x.sentences)


def test_temperature_is_the_likelihood_optimum_and_never_runs_off() -> None:
    separated = torch.tensor([-30.0, -20.0, 25.0, 31.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert best_temperature(*separated) == pytest.approx(0.05, rel=1e-3)
    reversed_ = torch.tensor([2.0, 1.0, -1.0, -2.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert best_temperature(*reversed_) == pytest.approx(20.0, rel=1e-3)
    logits, labels = torch.tensor([0.5, -0.3, 1.2, -1.0, 0.2]), torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    fine = np.exp(np.linspace(np.log(0.05), np.log(20.0), 100_000))
    nll = [float(torch.nn.functional.binary_cross_entropy_with_logits(logits / t, labels)) for t in fine[::50]]
    optimum = fine[::50][int(np.argmin(nll))]
    assert 0.2 < optimum < 0.3 and best_temperature(logits, labels) == pytest.approx(optimum, rel=0.02)
