"""The pitch check: median pitch over voiced frames, pitch groups split without the test fold, correlations."""

from __future__ import annotations

import numpy as np
import pytest

from depscreen.engine.features.audio import PITCH
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import modality
from depscreen.engine.train.pitch import median_f0, pitch_check
from depscreen.engine.train.sessions import LabelledSession

from .conftest import spoken_sentence


def sentence(index: int, pitch: list[float]) -> SentenceFeatures:
    audio = np.ones((len(pitch), modality("audio").dim), dtype=np.float32)
    audio[:, PITCH] = pitch
    return spoken_sentence(index, audio)


def test_median_f0_is_the_median_of_voiced_frames_over_the_whole_session() -> None:
    session = LabelledSession(1, [sentence(0, [0.0, 30.0, 0.0]), sentence(1, [32.0, 34.0, 0.0])], "s")
    assert median_f0(session) == pytest.approx(32.0), "unvoiced frames (0) are not pitch"
    assert np.isnan(median_f0(LabelledSession(0, [sentence(0, [0.0, 0.0])], "silent")))


def test_pitch_groups_are_split_at_the_training_folds_median_not_the_pooled_one() -> None:
    f0 = np.array([0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15], dtype=np.float64)
    folds = np.array([0] * 8 + [1] * 8)
    labels = np.zeros(16, dtype=int)
    labels[[4, 5]] = 1  # f0 8 and 9: above the pooled median (7.5), below fold 1's (9.5)
    check = pitch_check(f0, labels, {"fused": f0}, folds)
    assert check["positives"] == {"low": 2, "high": 0}
    assert check["groups"] == {"low": 8, "high": 8}
    assert check["fused"]["corr_with_median_f0"] == pytest.approx(1.0)
    assert check["fused"]["auroc_high_pitch"] is None, "a group without both labels has no AUROC"
    assert check["fused"]["auroc_low_pitch"] == pytest.approx(1.0), "8 and 9 are the highest of the low group"


def test_sessions_without_voiced_frames_are_left_out_and_counted() -> None:
    rng = np.random.default_rng(0)
    f0 = rng.normal(30, 3, 40)
    f0[[3, 7]] = np.nan
    labels = np.array([0, 1] * 20)
    estimate = rng.uniform(0, 1, 40)
    check = pitch_check(f0, labels, {"fused": estimate, "audio_head": -f0}, np.arange(40) % 5)
    assert (check["sessions"], check["without_voiced_frames"]) == (38, 2)
    assert check["audio_head"]["corr_with_median_f0"] == pytest.approx(-1.0)
    assert abs(check["fused"]["corr_with_median_f0"]) < 0.5
    assert 0.0 <= check["median_f0_auroc"] <= 1.0
