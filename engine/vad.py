"""Pluggable frame-level voice-activity detection of one 16 kHz mono stream: webrtcvad, or Silero VAD.

A detector belongs to one stream and is fed its frames in order; its decisions depend only on the samples,
never on how the frames were grouped into calls, so the segmenter built on it stays chunk-invariant.
"""

from __future__ import annotations

import hashlib
import threading
from importlib import metadata, resources
from typing import Protocol

import numpy as np
import webrtcvad

from depscreen.engine.media import SAMPLE_RATE


class VoiceActivityDetector(Protocol):
    """Speech or not for each frame of one stream."""

    name: str

    def decide(self, frames: np.ndarray) -> list[bool]:
        """Whether each row of `[count, frame_len]` int16 `frames` (the stream's next frames, in order) is
        speech. Decisions may depend on earlier frames of the stream but never on the grouping into calls."""
        ...


class WebrtcVad:
    """webrtcvad (the WebRTC GMM detector) at one aggressiveness, 0 (least) to 3 (most)."""

    name = "webrtc"

    def __init__(self, aggressiveness: int, frame_len: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_len = frame_len

    def decide(self, frames: np.ndarray) -> list[bool]:
        """One webrtcvad call per frame."""
        is_speech, n = self._vad.is_speech, self._frame_len
        raw = frames.tobytes()
        return [is_speech(raw[i * 2 * n : (i + 1) * 2 * n], SAMPLE_RATE, n) for i in range(len(frames))]


SILERO_VERSION = "6.2.3"
"""The `silero-vad` package release whose model is used (pinned: another model would move the sentences)."""

SILERO_MODEL = "silero_vad.onnx"
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
"""SHA-256 of `silero_vad/data/silero_vad.onnx` in silero-vad 6.2.3, checked before the model is loaded."""

SILERO_WINDOW = 512
"""Samples the model decides at once at 16 kHz (32 ms)."""

SILERO_CONTEXT = 64
"""Samples of the previous window the model sees before each window."""

_silero_session: object | None = None
_silero_lock = threading.Lock()


def _load_silero() -> object:
    """The ONNX session of the packaged Silero model, built once per process after its version and checksum
    are checked (an onnxruntime session may be run from many threads at once)."""
    global _silero_session
    with _silero_lock:
        if _silero_session is None:
            try:
                import onnxruntime
                import silero_vad
            except ImportError as error:
                raise RuntimeError(
                    f"--vad silero needs the silero-vad and onnxruntime packages ({error.name} is missing): "
                    f"pip install silero-vad=={SILERO_VERSION} onnxruntime"
                ) from error
            version = metadata.version("silero-vad")
            if version != SILERO_VERSION:
                raise RuntimeError(
                    f"silero-vad {version} is installed but the segmenter is pinned to {SILERO_VERSION}: "
                    f"pip install silero-vad=={SILERO_VERSION}"
                )
            model = (resources.files(silero_vad) / "data" / SILERO_MODEL).read_bytes()
            digest = hashlib.sha256(model).hexdigest()
            if digest != SILERO_SHA256:
                raise RuntimeError(
                    f"silero-vad's {SILERO_MODEL} has SHA-256 {digest}, expected {SILERO_SHA256}: the package is "
                    f"damaged or altered; reinstall it with pip install --force-reinstall silero-vad=={SILERO_VERSION}"
                )
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            _silero_session = onnxruntime.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        return _silero_session


class SileroVad:
    """Silero VAD (a small recurrent network, MIT, shipped in the `silero-vad` package) run with onnxruntime.

    The model decides 32 ms windows in sequence, carrying its recurrent state; a frame takes the speech
    probability of the last window finished by its end (so decisions lag the audio by up to one window) and
    is speech when that probability reaches `threshold`.
    """

    name = "silero"

    def __init__(self, threshold: float) -> None:
        self._session = _load_silero()
        self._threshold = threshold
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._samples = np.zeros(SILERO_CONTEXT, dtype=np.float32)
        """The model's context followed by the samples not yet decided."""
        self._probability = 0.0
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def decide(self, frames: np.ndarray) -> list[bool]:
        """Run every window the frames complete; each frame takes the latest probability at its end."""
        count, frame_len = frames.shape
        held = len(self._samples) - SILERO_CONTEXT
        self._samples = np.concatenate((self._samples, frames.reshape(-1).astype(np.float32) / 32768.0))
        decisions = []
        window_end = SILERO_WINDOW - held  # where the next window ends, in samples of this call
        for frame in range(count):
            while window_end <= (frame + 1) * frame_len:
                start = window_end - SILERO_WINDOW + held
                output, self._state = self._session.run(  # type: ignore[attr-defined]
                    None,
                    {
                        "input": self._samples[np.newaxis, start : start + SILERO_CONTEXT + SILERO_WINDOW],
                        "state": self._state,
                        "sr": self._rate,
                    },
                )
                self._probability = float(output[0, 0])
                window_end += SILERO_WINDOW
            decisions.append(self._probability >= self._threshold)
        self._samples = self._samples[window_end - SILERO_WINDOW + held :]
        return decisions


VAD_NAMES = (WebrtcVad.name, SileroVad.name)


def preload_vad(name: str) -> None:
    """Load and check the model of detector `name` now (nothing to load for webrtc), so that a missing package
    or a bad checksum stops a server at start rather than failing its first session."""
    if name == SileroVad.name:
        _load_silero()


def make_vad(name: str, *, aggressiveness: int, threshold: float, frame_len: int) -> VoiceActivityDetector:
    """A fresh detector called `name` ("webrtc" or "silero") for one stream of `frame_len`-sample frames;
    `aggressiveness` is webrtcvad's mode, `threshold` Silero's speech probability."""
    if name == WebrtcVad.name:
        return WebrtcVad(aggressiveness, frame_len)
    if name == SileroVad.name:
        return SileroVad(threshold)
    raise ValueError(f"unknown voice-activity detector {name!r}: choose one of {', '.join(VAD_NAMES)}")
