"""Feature statistics measured on real media with the live extractors, for normalising model inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.face import FaceLandmarker
from depscreen.engine.media import decode_audio_file, iter_video_frames
from depscreen.engine.train.synthetic import FeatureStats

STATS_VIDEO_FPS = 5.0


def feature_stats_from_media(paths: list[Path]) -> FeatureStats:
    """Mean and std of eGeMAPS LLDs over all audio and of landmarks over all faces found in `paths`."""
    audio_frames, faces = [], []
    audio = AudioFeatureExtractor()
    for path in paths:
        audio_frames.append(audio.extract(decode_audio_file(path)))
        landmarker = FaceLandmarker()
        for _, rgb in iter_video_frames(path, STATS_VIDEO_FPS):
            landmarks = landmarker.landmarks(rgb)
            if landmarks is not None:
                faces.append(landmarks)
    if not faces:
        raise ValueError(f"no face found in {', '.join(map(str, paths))}: give at least one video with a face")
    lld = np.concatenate(audio_frames)
    face = np.stack(faces)
    return FeatureStats(
        audio_mean=lld.mean(0), audio_std=lld.std(0) + 1e-6, video_mean=face.mean(0), video_std=face.std(0) + 1e-6
    )
