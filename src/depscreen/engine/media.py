"""Media decoding and resampling with `av`: any input rate or file becomes 16 kHz mono s16 PCM."""

from __future__ import annotations

from collections.abc import Iterator
from math import gcd
from pathlib import Path

import av
import numpy as np
from av.audio.resampler import AudioResampler

SAMPLE_RATE = 16_000
"""The engine's one internal audio rate: everything is resampled to it exactly once, on arrival."""
DEFAULT_VIDEO_FPS = 5.0
"""Video frames analysed per second unless configured otherwise (the rate the shipped models were made at)."""

RESAMPLER_WARMUP_SAMPLES = 160
"""16 kHz samples a restarted resampler runs before its output is used (`PcmResampler.restart_sample`): five
times the reach of swresample's default filter (16 input samples each side: 32 output samples at 8 kHz)."""

MIN_INPUT_RATE = 8_000
MAX_INPUT_RATE = 48_000
MAX_CHANNELS = 2


class PcmResampler:
    """Streaming converter from interleaved PCM s16le at any supported rate to 16 kHz mono int16.

    The output depends only on the samples, never on how they were chunked (swresample keeps its filter
    state between calls). 16 kHz mono input passes through untouched.
    """

    def __init__(self, sample_rate_hz: int, channels: int) -> None:
        if not MIN_INPUT_RATE <= sample_rate_hz <= MAX_INPUT_RATE:
            raise ValueError(
                f"sample_rate_hz={sample_rate_hz} is not supported: send PCM at {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz"
            )
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels={channels} is not supported: send mono (1) or stereo (2) PCM")
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self._passthrough = sample_rate_hz == SAMPLE_RATE and channels == 1
        self._resampler = None if self._passthrough else AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._pts = 0

    @property
    def passthrough(self) -> bool:
        """Whether the input is 16 kHz mono already (nothing is resampled, no filter state is kept)."""
        return self._passthrough

    def restart_sample(self, sample: int) -> int:
        """A 16 kHz sample at least `RESAMPLER_WARMUP_SAMPLES` before `sample` where a fresh resampler, fed this
        input from there, gives from `sample` on exactly this one's output (`sample` itself for 16 kHz mono).

        The resampler's output sample k is a fixed function of the input samples within its filter's reach of
        k's time and of k's phase between input samples. A fresh one started at an input sample that falls on
        an output sample (a multiple of the two rates' common period) reproduces every phase, and once the warm-up
        has filled its filter, every output (tests/test_resume_rates.py checks it at random points of several
        rates)."""
        if self._passthrough:
            return sample
        period = SAMPLE_RATE // gcd(self.sample_rate_hz, SAMPLE_RATE)
        return max(0, (sample - RESAMPLER_WARMUP_SAMPLES) // period * period)

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one interleaved sample frame (2 bytes per channel)."""
        return 2 * self.channels

    def push(self, data: bytes) -> np.ndarray:
        """Convert one chunk; its length must be a whole number of sample frames."""
        if len(data) % self.bytes_per_frame:
            raise ValueError(
                f"audio chunk of {len(data)} bytes is not a whole number of {self.channels}-channel s16le "
                f"samples ({self.bytes_per_frame} bytes each)"
            )
        samples = np.frombuffer(data, dtype="<i2")
        if self._passthrough or not len(samples):
            return samples.astype(np.int16, copy=True)
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout="mono" if self.channels == 1 else "stereo"
        )
        frame.sample_rate = self.sample_rate_hz
        frame.pts = self._pts
        self._pts += len(samples) // self.channels
        return _concat([out.to_ndarray()[0] for out in self._resampler.resample(frame)])

    def flush(self) -> np.ndarray:
        """Drain the resampler's filter delay at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return _concat([out.to_ndarray()[0] for out in self._resampler.resample(None)])


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)


def decode_audio_file(path: str | Path) -> np.ndarray:
    """Decode the first audio stream of any file `av` reads into 16 kHz mono int16 PCM."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot open media file {path}: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        parts = []
        for frame in container.decode(audio=0):
            frame.pts = None
            parts.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
        parts.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    return _concat(parts)


def iter_video_frames(path: str | Path, fps: float) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (timestamp_ms, RGB uint8 array) from the first video stream, sampled at most `fps` per second."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        next_ms = 0.0
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            ts_ms = round(float(frame.pts * stream.time_base) * 1000)
            if ts_ms + 1e-6 < next_ms:
                continue
            next_ms = ts_ms + 1000.0 / fps
            yield ts_ms, frame.to_ndarray(format="rgb24")
