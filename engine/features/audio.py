"""eGeMAPSv02 low-level descriptors (25 per 10 ms frame) of 16 kHz mono int16 speech, via openSMILE."""

from __future__ import annotations

import numpy as np
import opensmile

from depscreen.engine.media import SAMPLE_RATE


class AudioFeatureExtractor:
    """Frame-level eGeMAPSv02 descriptors of one sentence of speech.

    `extract` returns float32 `[T, 25]`, one row per 10 ms hop (openSMILE's eGeMAPSv02 frames: 20 ms windows
    for energy/spectral descriptors, 60 ms for pitch, voice quality and formants), so
    `T = (n_samples - 800) // 160 + 1` for inputs of at least `MIN_SAMPLES`, about `duration / 10 ms - 4`.

    Conventions:
    - input shorter than `MIN_SAMPLES` (60 ms, openSMILE's longest analysis window) has no complete frame;
      it returns `[0, 25]` instead of openSMILE's all-NaN placeholder row;
    - the `*_sma3nz` descriptors (pitch, jitter, shimmer, HNR, harmonic and formant features) are 0 in
      unvoiced frames, as openSMILE itself writes them; any non-finite value (NaN or +-Inf, which openSMILE
      does not produce for int16 input but the contract rules out) is replaced by 0.0, the same
      "undefined" value.

    Thread safety: one instance may be shared by a thread pool. The `opensmile.Smile` held here keeps only
    its configuration; every call builds, runs and frees its own native openSMILE instance, so concurrent
    calls do not share mutable state (checked: 4 threads on one extractor give bit-identical results).
    """

    DIM = 25
    HOP_MS = 10
    MIN_SAMPLES = 60 * SAMPLE_RATE // 1000
    NAMES: tuple[str, ...] = (
        "Loudness_sma3",
        "alphaRatio_sma3",
        "hammarbergIndex_sma3",
        "slope0-500_sma3",
        "slope500-1500_sma3",
        "spectralFlux_sma3",
        "mfcc1_sma3",
        "mfcc2_sma3",
        "mfcc3_sma3",
        "mfcc4_sma3",
        "F0semitoneFrom27.5Hz_sma3nz",
        "jitterLocal_sma3nz",
        "shimmerLocaldB_sma3nz",
        "HNRdBACF_sma3nz",
        "logRelF0-H1-H2_sma3nz",
        "logRelF0-H1-A3_sma3nz",
        "F1frequency_sma3nz",
        "F1bandwidth_sma3nz",
        "F1amplitudeLogRelF0_sma3nz",
        "F2frequency_sma3nz",
        "F2bandwidth_sma3nz",
        "F2amplitudeLogRelF0_sma3nz",
        "F3frequency_sma3nz",
        "F3bandwidth_sma3nz",
        "F3amplitudeLogRelF0_sma3nz",
    )

    def __init__(self) -> None:
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
        )
        if tuple(self._smile.feature_names) != self.NAMES:
            raise RuntimeError(
                f"opensmile {opensmile.__version__} eGeMAPSv02 LLDs are {self._smile.feature_names}, "
                f"expected {list(self.NAMES)}"
            )

    def extract(self, pcm: np.ndarray) -> np.ndarray:
        """Descriptors of 16 kHz mono int16 `pcm` as float32 `[T, 25]`; `[0, 25]` below `MIN_SAMPLES`."""
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise ValueError(f"expected 1-D int16 PCM at {SAMPLE_RATE} Hz, got {pcm.dtype} of shape {pcm.shape}")
        if len(pcm) < self.MIN_SAMPLES:
            return np.zeros((0, self.DIM), dtype=np.float32)
        # Smile scales float input by 32768 back to int16, so this round trip is exact.
        values = self._smile(pcm.astype(np.float32) / 32768.0, SAMPLE_RATE)[0].T
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)
