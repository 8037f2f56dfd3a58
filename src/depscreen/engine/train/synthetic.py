"""Synthetic interviews with a planted, documented signal: enough to prove the plumbing learns, nothing more.

Each session gets a label y (1 with probability `positive_rate`) and 4-14 sentences. Features are drawn in
standardised units and mapped to real units with feature statistics measured on real speech and faces
(`FeatureStats`), so the demo model sees inputs on the scale the live extractors produce.

The planted signal, per sentence and deliberately weak so evidence must accumulate over sentences:
- audio: loudness (LLD 0) shifted by -`audio_shift` standard deviations for y=1, and the pitch contour
  (LLD 10, F0 semitones) flattened to (1 - `audio_flatten`) of its variability (monotone, quiet speech);
- video: landmark motion amplitude scaled by (1 - `video_damping`) for y=1 (psychomotor slowing);
- text: the similarity to two PHQ-8 items (chosen per session) raised by `text_shift`, and the sentence
  embedding nudged along one fixed direction.
Missing modalities are simulated: video absent in 30% of sessions, faces missed in 10% of frames, text
absent in 25% of sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import modality
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.stats import FeatureStats

LOUDNESS, F0 = 0, 10
"""Columns of the eGeMAPS LLDs that carry the planted audio signal."""
AUDIO_DIM, VIDEO_DIM = modality("audio").dim, modality("video").dim


@dataclass(frozen=True)
class SyntheticSettings:
    """Knobs of the generator; the defaults are what the shipped demo model was trained on."""

    positive_rate: float = 0.4
    min_sentences: int = 4
    max_sentences: int = 14
    min_frames: int = 40
    """Audio frames (10 ms) per sentence, lower bound."""
    max_frames: int = 160
    audio_shift: float = 0.5
    audio_flatten: float = 0.5
    video_damping: float = 0.5
    text_shift: float = 0.12
    video_session_rate: float = 0.7
    face_found_rate: float = 0.9
    text_rate: float = 0.75


def generate_sessions(
    count: int, stats: FeatureStats, seed: int, settings: SyntheticSettings = SyntheticSettings()
) -> list[LabelledSession]:
    """`count` synthetic sessions, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    text_direction = np.random.default_rng(1234).standard_normal(384)
    text_direction /= np.linalg.norm(text_direction)
    return [_session(rng, stats, settings, text_direction, f"synthetic-{i}") for i in range(count)]


def _smooth_noise(rng: np.random.Generator, frames: int, dims: int, rho: float = 0.9) -> np.ndarray:
    """AR(1) noise with unit variance, so features move like real contours rather than white noise."""
    noise = rng.standard_normal((frames, dims))
    out = np.empty_like(noise)
    out[0] = noise[0]
    scale = np.sqrt(1 - rho**2)
    for t in range(1, frames):
        out[t] = rho * out[t - 1] + scale * noise[t]
    return out


def _session(
    rng: np.random.Generator, stats: FeatureStats, s: SyntheticSettings, text_direction: np.ndarray, session_id: str
) -> LabelledSession:
    y = int(rng.random() < s.positive_rate)
    has_video = rng.random() < s.video_session_rate
    face_shape = rng.standard_normal(VIDEO_DIM) * 0.5
    items = rng.choice(8, size=2, replace=False)
    sentences = []
    start_ms = 0
    for index in range(int(rng.integers(s.min_sentences, s.max_sentences + 1))):
        frames = int(rng.integers(s.min_frames, s.max_frames + 1))
        z = _smooth_noise(rng, frames, AUDIO_DIM)
        z[:, LOUDNESS] -= s.audio_shift * y
        z[:, F0] *= 1 - s.audio_flatten * y
        audio = (stats.mean["audio"] + stats.std["audio"] * z).astype(np.float32)

        video_frames = max(1, frames // 20) if has_video else 0
        faces = [t for t in range(video_frames) if rng.random() < s.face_found_rate]
        motion = _smooth_noise(rng, video_frames, VIDEO_DIM) * (1 - s.video_damping * y) if video_frames else None
        video = (
            np.stack([stats.mean["video"] + stats.std["video"] * (face_shape + motion[t]) for t in faces]).astype(
                np.float32
            )
            if faces
            else modality("video").absent(VIDEO_DIM)
        )

        text = None
        if rng.random() < s.text_rate:
            embedding = rng.standard_normal(384) + 4.0 * y * text_direction
            embedding /= np.linalg.norm(embedding)
            similarity = rng.normal(0.15, 0.08, 8)
            similarity[items] += s.text_shift * y
            text = np.concatenate([embedding, similarity]).astype(np.float32)

        duration_ms = frames * 10
        sentences.append(
            SentenceFeatures(
                index=index,
                start_ms=start_ms,
                end_ms=start_ms + duration_ms,
                speech_ms=int(duration_ms * 0.8),
                snr_db=float(rng.uniform(10, 30)),
                audio=audio,
                video=video,
                video_frames=video_frames,
                text=text,
                transcript="",
                transcript_source="",
                text_confidence=1.0 if text is not None else 0.0,
            )
        )
        start_ms += duration_ms + 700
    return LabelledSession(label=y, sentences=sentences, session_id=session_id)
