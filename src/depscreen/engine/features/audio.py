"""Audio of one sentence: eGeMAPSv02 low-level descriptors (25 per 10 ms frame, via openSMILE) of 16 kHz mono
int16 speech, and its integrity (clipping, content narrower than the declared sample rate)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import opensmile
from opensmile.core.config import config as smile_config
from opensmile.core.lib import OpenSMILE

from depscreen.engine.media import SAMPLE_RATE

LLD_CONFIG = Path(__file__).with_name("egemaps_lld.conf")
"""openSMILE configuration of the eGeMAPSv02 descriptors alone: the package's eGeMAPSv02.conf also computes
the functionals, which an LLD sink never reads (about 5% of the CPU; the descriptors are bit-identical)."""


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

    Cost: each thread keeps one native openSMILE instance, initialised (configuration parsed, components
    built: ~3-5 ms) on its first call, reset after each run and freed with the thread, rather than one built
    and freed per call as `opensmile.Smile` does; the output is bit-identical to a fresh instance's (checked
    in the tests). The configuration is `LLD_CONFIG`: the descriptors without eGeMAPSv02's functionals.
    Each run's sink callback is let go after the run (the wrapper would keep every callback it was given for
    the instance's life, and with each the rows of its sentence: ~20 kB per second of speech per thread).

    Thread safety: one instance may be shared by a thread pool. The native instances are per thread, so
    concurrent calls do not share mutable state (checked: 4 threads on one extractor give bit-identical
    results).
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
        core = Path(opensmile.__file__).resolve().parent / "core" / smile_config.CONFIG_ROOT
        includes = {
            "gemapslld": str(core / "gemaps" / "v01b" / "GeMAPSv01b_core.lld.conf.inc"),
            "egemapslld": str(core / "egemaps" / "v02" / "eGeMAPSv02_core.lld.conf.inc"),
        }
        self._smile = opensmile.Smile(feature_set=str(LLD_CONFIG), feature_level="lld", options=includes)
        if tuple(self._smile.feature_names) != self.NAMES:
            raise RuntimeError(
                f"opensmile {opensmile.__version__} eGeMAPSv02 LLDs are {self._smile.feature_names}, "
                f"expected {list(self.NAMES)}"
            )
        self._native_options = self._smile._options() | {
            "source": os.path.join(self._smile.default_config_root, smile_config.EXTERNAL_INPUT_CONFIG),
            "sampleRate": SAMPLE_RATE,
            "nBits": 16,
        }
        self._per_thread = threading.local()

    def extract(self, pcm: np.ndarray) -> np.ndarray:
        """Descriptors of 16 kHz mono int16 `pcm` as float32 `[T, 25]`; `[0, 25]` below `MIN_SAMPLES`."""
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise ValueError(f"expected 1-D int16 PCM at {SAMPLE_RATE} Hz, got {pcm.dtype} of shape {pcm.shape}")
        if len(pcm) < self.MIN_SAMPLES:
            return np.zeros((0, self.DIM), dtype=np.float32)
        owned = getattr(self._per_thread, "smile", None)
        if owned is None:
            owned = _OwnedSmile(self._smile._smile(options=self._native_options))
        self._per_thread.smile = None  # an instance whose run fails is freed, not reused
        native, rows = owned.native, []
        native.external_sink_set_callback_ex(
            smile_config.EXTERNAL_OUTPUT_COMPONENT, lambda data, _meta: rows.append(data.copy())
        )
        native.external_audio_source_write_data(smile_config.EXTERNAL_SOURCE_COMPONENT, pcm.tobytes())
        native.external_audio_source_set_eoi(smile_config.EXTERNAL_SOURCE_COMPONENT)
        native.run()
        native.reset()  # also unsets the sink's callback
        native._callbacks.clear()  # the wrapper would keep every callback, and with it every sentence's rows
        self._per_thread.smile = owned
        values = np.vstack(rows).reshape(-1, self.DIM)
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


class _OwnedSmile:
    """A native openSMILE instance held by one thread's storage, freed when that lets it go (the thread ended
    or a run failed)."""

    def __init__(self, native: OpenSMILE) -> None:
        self.native = native

    def __del__(self) -> None:
        self.native.free()


PITCH = AudioFeatureExtractor.NAMES.index("F0semitoneFrom27.5Hz_sma3nz")
"""Column of the pitch descriptor (semitones above 27.5 Hz); a frame is voiced where it is above 0."""
VOICED_ONLY: tuple[bool, ...] = tuple(name.endswith("_sma3nz") for name in AudioFeatureExtractor.NAMES)
"""Per column: the descriptor is defined in voiced frames only (0 in unvoiced frames: pitch, voice quality,
formants)."""


CLIP_LEVEL = 0.9
"""A sample this close to the sentence's peak magnitude counts as at the clipping level. A clipped waveform
piles its tops up there (flat, or rippling a few percent after resampling); speech that is not clipped
reaches it only at its rare highest peaks (measured on real speech: at most 0.4% of a sentence's samples)."""

CLIPPED_FRACTION_OK = 0.01
"""Up to this fraction of samples at the clipping level, the audio is not discounted."""

CLIPPED_FRACTION_WORTHLESS = 0.10
"""From this fraction on (speech driven 8x past full scale: 3-40%), the audio is worth nothing; the discount
is linear in between."""

SPECTRUM_WINDOW = 512
"""Samples per spectrum frame (32 ms at 16 kHz, 31.25 Hz bins); frames overlap by half."""

CLIFF_MIN_HZ = 2000.0
"""Lowest band edge looked for: 4 kHz content (8 kHz sampling) declared at a higher rate is the lie to catch."""

CLIFF_MAX_SHARE = 0.75
"""Highest band edge looked for, as a share of the band the declared rate carries: above it sit the
anti-aliasing roll-offs of honest recordings."""

CLIFF_SIDE_HZ = (100.0, 600.0)
"""The level is compared between the bands this far below and above a candidate edge."""

CLIFF_DB = 25.0
"""A drop this steep (dB across ~700 Hz) is a band edge: resampled 8 kHz speech drops 25-57 dB at 4 kHz,
while real speech recorded at its declared rate fell at most 21 dB anywhere on the data measured (JFK's
1961 broadcast, far-field meetings, audiobooks, studio speech)."""


@dataclass(frozen=True)
class AudioIntegrity:
    """How far one sentence's samples can be trusted, and the resulting factor on its audio quality."""

    clipped_fraction: float
    """Share of samples at the clipping level (within `CLIP_LEVEL` of the peak magnitude)."""
    bandwidth_hz: float
    """Where the content's spectrum ends: the band edge found, or `declared_bandwidth_hz` when none is."""
    declared_bandwidth_hz: float
    """The band the declared sample rate carries into the 16 kHz signal: half of it, at most 8 kHz."""

    @property
    def rate_mismatch(self) -> bool:
        """The content ends well below what its declared sample rate carries (e.g. 8 kHz audio sent as 48 kHz)."""
        return self.bandwidth_hz < self.declared_bandwidth_hz

    @property
    def factor(self) -> float:
        """0..1: the share of the declared band that holds content, times the clipping discount."""
        excess = (self.clipped_fraction - CLIPPED_FRACTION_OK) / (CLIPPED_FRACTION_WORTHLESS - CLIPPED_FRACTION_OK)
        return float(np.clip(1.0 - excess, 0.0, 1.0)) * self.bandwidth_hz / self.declared_bandwidth_hz


def audio_integrity(pcm: np.ndarray, declared_rate_hz: int) -> AudioIntegrity:
    """Clipping and band edge of one sentence of 16 kHz mono int16 `pcm` that arrived at `declared_rate_hz`."""
    if pcm.ndim != 1 or pcm.dtype != np.int16:
        raise ValueError(f"expected 1-D int16 PCM at {SAMPLE_RATE} Hz, got {pcm.dtype} of shape {pcm.shape}")
    declared_band = min(declared_rate_hz, SAMPLE_RATE) / 2
    magnitude = np.abs(pcm.astype(np.int32))
    peak = int(magnitude.max()) if len(pcm) else 0
    clipped = float(np.mean(magnitude >= CLIP_LEVEL * peak)) if peak else 0.0
    return AudioIntegrity(clipped, _band_edge(pcm, declared_band), declared_band)


def _band_edge(pcm: np.ndarray, declared_band: float) -> float:
    """The frequency where the mean spectrum drops by `CLIFF_DB` or more, if any; else `declared_band`."""
    if len(pcm) < SPECTRUM_WINDOW:
        return declared_band
    frames = np.lib.stride_tricks.sliding_window_view(pcm.astype(np.float64), SPECTRUM_WINDOW)[:: SPECTRUM_WINDOW // 2]
    power = np.mean(np.abs(np.fft.rfft(frames * np.hanning(SPECTRUM_WINDOW), axis=1)) ** 2, axis=0)
    quantisation = np.sum(np.hanning(SPECTRUM_WINDOW) ** 2) / 12  # int16 rounding noise per bin: the floor
    level = np.concatenate(([0.0], np.cumsum(10 * np.log10(power + quantisation))))
    bin_hz = SAMPLE_RATE / SPECTRUM_WINDOW
    near, far = (round(side / bin_hz) for side in CLIFF_SIDE_HZ)
    edges = np.arange(round(CLIFF_MIN_HZ / bin_hz), int(CLIFF_MAX_SHARE * declared_band / bin_hz) + 1)
    if not len(edges):
        return declared_band
    below = (level[edges - near] - level[edges - far]) / (far - near)
    above = (level[edges + far] - level[edges + near]) / (far - near)
    drops = below - above
    best = int(np.argmax(drops))
    return float(edges[best] * bin_hz) if drops[best] >= CLIFF_DB else declared_band
