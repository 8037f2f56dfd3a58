"""Unlabelled faces for datasets without video, so the model learns that video told it nothing.

EATD has no video, so no real label ever reaches the video pathway. Left untrained, its gate weight at
inference would be arbitrary. During training, `TrainSettings.unlabelled_video` of the sentences get a
window of real landmark frames from the bundled GRID corpus sample (CC BY 4.0), unrelated to the speaker
and the label: the gate learns to give video a low weight and its auxiliary head learns to say nothing,
which is the honest confidence for a pathway trained on no real labels.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np

from depscreen.engine.features.face import FaceLandmarker
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.media import DEFAULT_VIDEO_FPS, iter_video_frames
from depscreen.engine.modalities import modality
from depscreen.engine.train.cache import FeatureCache, content_key
from depscreen.sample import sample_path


def unlabelled_faces(path: Path | None = None, cache: FeatureCache | None = None) -> np.ndarray:
    """Normalised landmarks `[F, video dim]` of the frames of `path` (default: the bundled sample) sampled at
    `DEFAULT_VIDEO_FPS` that show a face."""
    path = path or sample_path()
    key = content_key([path], f"faces|{DEFAULT_VIDEO_FPS}|{FaceLandmarker.DIM}|{FaceLandmarker.REDETECT_EVERY}")
    if cache is not None and (cached := cache.load(key)) is not None:
        return cached[0].video
    landmarker = FaceLandmarker()
    faces = [f for _, rgb in iter_video_frames(path, DEFAULT_VIDEO_FPS) if (f := landmarker.landmarks(rgb)) is not None]
    if not faces:
        raise ValueError(f"no face found in {path}: unlabelled faces need a video with a face")
    video = np.stack(faces).astype(np.float32)
    if cache is not None:
        audio = modality("audio").absent(modality("audio").dim)
        holder = SentenceFeatures(0, 0, 0, 0, 0.0, audio, video, len(video), None, "", "", 0.0)
        cache.store(key, [holder])
    return video


def attach_faces(sentence: SentenceFeatures, faces: np.ndarray, rng: random.Random) -> SentenceFeatures:
    """`sentence` with a random window of `faces`, as many frames as its span holds at `DEFAULT_VIDEO_FPS`."""
    frames = min(len(faces), max(1, int((sentence.end_ms - sentence.start_ms) / 1000 * DEFAULT_VIDEO_FPS)))
    start = rng.randrange(len(faces) - frames + 1)
    return replace(sentence, video=faces[start : start + frames], video_frames=frames)
