"""Pluggable frame-level voice-activity detection of one 16 kHz mono stream: webrtcvad, or Silero VAD.

A detector belongs to one stream and is fed its frames in order; its decisions depend only on the samples,
never on how the frames were grouped into calls, so the segmenter built on it stays chunk-invariant.

A resumed session's detector goes on exactly where the interrupted one stopped: `model_state` gives what it
learnt of the stream (never its audio), and a fresh detector fed a warm-up stretch of the same audio and then
given that state (`restore_model_state`) decides every later frame as the first would have. Silero's state is
its recurrent tensor, its last probability and how many samples it holds undecided (those, and its context,
come from the warm-up). webrtcvad's C
state (`VadInstT`, plain integers) is read and written through ctypes: its Gaussian models, minimum tracker and
hangover are the model state; its filter memories (a few samples of filtered audio) are not saved but rebuilt
by the warm-up: measured on the speech recordings of the shared data (680 offsets in AMI, codec2, LibriVox and
JFK audio), 5 frames of 20 ms rebuild them bit-exactly; `WARMUP_SAMPLES` allows 25.
"""

from __future__ import annotations

import ctypes
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

    def model_state(self) -> bytes | None:
        """What the detector learnt of the stream so far, without audio; None when it cannot be saved."""
        ...

    def restore_model_state(self, state: bytes, heard: np.ndarray) -> None:
        """Take `model_state` of another detector of the same stream, after a warm-up on `heard` (the int16
        samples just before the resume point, at least `WARMUP_SAMPLES` of them)."""
        ...


WARMUP_SAMPLES = 8_000
"""Audio before a resume point that a resumed detector is fed before it takes the saved model state (500 ms:
5x what rebuilt webrtcvad's filter memories bit-exactly at every offset measured)."""

_I16, _I32 = ctypes.c_int16, ctypes.c_int32


class _Downsampler48k(ctypes.Structure):
    """WebRtcSpl_State48khzTo8khz (unused at 16 kHz, kept for the layout)."""

    _fields_ = (("s_48_24", _I32 * 8), ("s_24_24", _I32 * 16), ("s_24_16", _I32 * 8), ("s_16_8", _I32 * 8))


class _VadInst(ctypes.Structure):
    """webrtcvad's `VadInstT` (common_audio/vad/vad_core.h of the WebRTC code that webrtcvad 2.0 builds)."""

    _fields_ = (
        ("vad", ctypes.c_int),
        ("downsampling_filter_states", _I32 * 4),
        ("state_48_to_8", _Downsampler48k),
        ("noise_means", _I16 * 12),
        ("speech_means", _I16 * 12),
        ("noise_stds", _I16 * 12),
        ("speech_stds", _I16 * 12),
        ("frame_counter", _I32),
        ("over_hang", _I16),
        ("num_of_speech", _I16),
        ("index_vector", _I16 * 96),
        ("low_value_vector", _I16 * 96),
        ("mean_value", _I16 * 6),
        ("upper_state", _I16 * 5),
        ("lower_state", _I16 * 5),
        ("hp_filter_state", _I16 * 4),
        ("over_hang_max_1", _I16 * 3),
        ("over_hang_max_2", _I16 * 3),
        ("individual", _I16 * 3),
        ("total", _I16 * 3),
        ("init_flag", ctypes.c_int),
    )


_FILTER_MEMORIES = ("downsampling_filter_states", "state_48_to_8", "upper_state", "lower_state", "hp_filter_state")
_MODEL_FIELDS = tuple(name for name, _ in _VadInst._fields_ if name not in _FILTER_MEMORIES)
_WEBRTC_INIT_FLAG = 42
"""What webrtcvad's init writes into `init_flag`: read back to check the layout before any state is used."""

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = (ctypes.py_object, ctypes.c_char_p)


class WebrtcVad:
    """webrtcvad (the WebRTC GMM detector) at one aggressiveness, 0 (least) to 3 (most)."""

    name = "webrtc"

    def __init__(self, aggressiveness: int, frame_len: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_len = frame_len

    def _inst(self) -> _VadInst | None:
        """The detector's C state, or None when its layout is not the one `_VadInst` describes."""
        inst = _VadInst.from_address(_capsule_pointer(self._vad._vad, b"WebRtcVadPtr"))
        if inst.init_flag != _WEBRTC_INIT_FLAG:
            return None
        return inst

    def model_state(self) -> bytes | None:
        """The C state's model fields (Gaussian models, minimum tracker, hangover), not its filter memories."""
        inst = self._inst()
        if inst is None:
            return None
        saved = _VadInst()
        for name in _MODEL_FIELDS:
            setattr(saved, name, getattr(inst, name))
        return bytes(saved)

    def restore_model_state(self, state: bytes, heard: np.ndarray) -> None:
        """Take the model fields of `state`; this detector's filter memories (from its warm-up on `heard`) stay."""
        inst = self._inst()
        if inst is None or len(state) != ctypes.sizeof(_VadInst):
            raise ValueError("this webrtcvad build's state is not the one the snapshot holds")
        saved = _VadInst.from_buffer_copy(state)
        for name in _MODEL_FIELDS:
            setattr(inst, name, getattr(saved, name))

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

    def model_state(self) -> bytes | None:
        """The recurrent state, the last probability and the count of samples held undecided (not the samples)."""
        held = len(self._samples) - SILERO_CONTEXT
        header = np.array([self._probability], dtype=np.float64).tobytes() + np.array([held], dtype=np.int64).tobytes()
        return header + self._state.astype(np.float32).tobytes()

    def restore_model_state(self, state: bytes, heard: np.ndarray) -> None:
        """Take the state of `model_state`; the undecided samples and the model's context are the last of `heard`."""
        if len(state) != 16 + self._state.nbytes:
            raise ValueError("the snapshot's Silero state is not this model's")
        self._probability = float(np.frombuffer(state[:8], dtype=np.float64)[0])
        held = int(np.frombuffer(state[8:16], dtype=np.int64)[0])
        self._state = np.frombuffer(state[16:], dtype=np.float32).reshape(self._state.shape).copy()
        self._samples = heard[len(heard) - held - SILERO_CONTEXT :].astype(np.float32) / 32768.0


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
