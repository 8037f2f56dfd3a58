"""Fixed windows stand in for sentences where a dataset gives frame features but no sentence timing.

D-Vlog and LMVD ship per-second (or per-0.96 s) features of whole vlogs, with no speech segmentation: each
`WINDOW_S` of features becomes one "sentence" (the last window may be shorter). A window's speech time is
its length and its audio quality is unknown, taken as full (`FULL_QUALITY_SNR_DB`); landmarks are
normalised the way the live landmarker normalises them (`features.face.normalise`). Models trained on such
windows see other frame rates (and, for LMVD, other audio features) than the live extractors produce: they
are for research on those datasets, not for the live server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from depscreen.engine.features.face import normalise
from depscreen.engine.features.sentence import SNR_FOR_FULL_QUALITY_DB, SentenceFeatures
from depscreen.engine.modalities import modality

VIDEO = modality("video")

WINDOW_S = 10.0
"""Seconds of features per stand-in sentence."""
FULL_QUALITY_SNR_DB = SNR_FOR_FULL_QUALITY_DB


def require_finite(values: np.ndarray, path: Path) -> np.ndarray:
    """`values` as float32, or a ValueError naming `path` and the first bad row when any is NaN or infinite."""
    values = np.asarray(values, dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{path} has NaN or infinite features (first at row {row}): fix or drop that file")
    return values


def normalise_landmarks(points: np.ndarray) -> np.ndarray:
    """`[F, 136]` landmarks as (x0, y0, x1, y1, ...) pixels → the live landmarker's normalised form."""
    return np.stack([normalise(p.reshape(68, 2)) for p in points]) if len(points) else VIDEO.absent(VIDEO.dim)


def fixed_windows(
    audio: np.ndarray,
    audio_times: np.ndarray,
    video: np.ndarray,
    video_times: np.ndarray,
    window_s: float = WINDOW_S,
) -> list[SentenceFeatures]:
    """Cut audio `[T, D]` and normalised landmark `[F, 136]` frames, stamped with their start times in
    seconds, into consecutive windows of `window_s` (windows with no frame at all are left out)."""
    ends = [t[-1] for t in (audio_times, video_times) if len(t)]
    duration = max(ends) + 1e-6 if ends else 0.0
    sentences = []
    for start in np.arange(0.0, duration, window_s):
        end = min(start + window_s, duration)
        a = audio[(audio_times >= start) & (audio_times < end)]
        v = video[(video_times >= start) & (video_times < end)]
        if not len(a) and not len(v):
            continue
        sentences.append(
            SentenceFeatures(
                index=len(sentences),
                start_ms=int(start * 1000),
                end_ms=int(end * 1000),
                speech_ms=int((end - start) * 1000),
                snr_db=FULL_QUALITY_SNR_DB,
                audio=np.ascontiguousarray(a, dtype=np.float32),
                video=np.ascontiguousarray(v, dtype=np.float32),
                video_frames=len(v),
                text=None,
                transcript="",
                transcript_source="",
                text_confidence=0.0,
            )
        )
    return sentences
