"""Feature statistics for normalising model inputs: measured on real media, or on training sessions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.face import FaceLandmarker
from depscreen.engine.media import DEFAULT_VIDEO_FPS, decode_audio_file, iter_video_frames
from depscreen.engine.modalities import MODALITIES
from depscreen.engine.train.sessions import LabelledSession

NORMALISED = tuple(m for m in MODALITIES if m.normalised)
"""The modalities the model standardises (see `Modality.normalised`)."""


@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension mean and standard deviation of each normalised modality's raw features, by name."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def unit(cls) -> FeatureStats:
        """Mean 0 and standard deviation 1 at every normalised modality's default dimension."""
        return cls({m.name: np.zeros(m.dim) for m in NORMALISED}, {m.name: np.ones(m.dim) for m in NORMALISED})

    def tensors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(mean, std) as float32 tensors, for `ScreeningModel.set_feature_stats`."""
        return {
            name: (
                torch.as_tensor(self.mean[name], dtype=torch.float32),
                torch.as_tensor(self.std[name], dtype=torch.float32),
            )
            for name in self.mean
        }


def measured_stats(sessions: list[LabelledSession], fallback: FeatureStats) -> FeatureStats:
    """Per-dimension mean and std of every frame of each normalised modality in `sessions`; `fallback`'s
    statistics for a modality that none of their sentences has."""
    mean, std = {}, {}
    for m in NORMALISED:
        frames = [m.values(s) for session in sessions for s in session.sentences if m.present(s)]
        if frames:
            stacked = np.concatenate(frames)
            mean[m.name], std[m.name] = stacked.mean(0), stacked.std(0) + 1e-6
        else:
            mean[m.name], std[m.name] = fallback.mean[m.name], fallback.std[m.name]
    return FeatureStats(mean, std)


def feature_stats_from_media(paths: list[Path]) -> FeatureStats:
    """Mean and std of eGeMAPS LLDs over all audio and of landmarks over all faces found in `paths`."""
    audio_frames, faces = [], []
    audio = AudioFeatureExtractor()
    for path in paths:
        audio_frames.append(audio.extract(decode_audio_file(path)))
        landmarker = FaceLandmarker()
        for _, rgb in iter_video_frames(path, DEFAULT_VIDEO_FPS):
            landmarks = landmarker.landmarks(rgb)
            if landmarks is not None:
                faces.append(landmarks)
    if not faces:
        raise ValueError(f"no face found in {', '.join(map(str, paths))}: give at least one video with a face")
    lld = np.concatenate(audio_frames)
    face = np.stack(faces)
    return FeatureStats(
        {"audio": lld.mean(0), "video": face.mean(0)}, {"audio": lld.std(0) + 1e-6, "video": face.std(0) + 1e-6}
    )
