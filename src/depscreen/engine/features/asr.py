"""The speech-to-text seam: what every recogniser backend offers (`Transcriber`) and what it reports.

A backend is one module (`features.whisper`, say) with a `Transcriber` and an `asr_backends.AsrBackend` entry
naming it; the pipeline, the pieces, the server and the trainer know only this module. It loads no model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from depscreen.engine.language import DEFAULT_LANGUAGE as DEFAULT_LANGUAGE
from depscreen.engine.language import primary_language as primary_language


@dataclass(frozen=True)
class Transcript:
    """Recognised text of one sentence and a confidence in 0..1 (0 when the text is empty)."""

    text: str
    confidence: float
    decodes: tuple[str, ...] = field(default=(), compare=False)
    """The kinds (`DECODE_KINDS`) of the decodings that made it, in order (for the close path's count; not part
    of what the transcript says)."""


NO_TRANSCRIPT = Transcript("", 0.0)


class Transcriber(Protocol):
    """A speech recogniser for one sentence (or piece of one) at a time, safe to call from many threads."""

    name: str
    """The backend's name, as `--asr` gives it ("whisper"; "none": no recognition)."""

    def model_for(self, language: str) -> str:
        """The name of the model that transcribes `language` (a BCP-47 tag), or "" when none does."""
        ...

    def preload(self, language: str) -> None:
        """Load now the model for `language`, so its first sentence does not pay for the loading."""
        ...

    def transcribe(self, pcm: np.ndarray, language: str, said_before: str = "", recheck: bool = True) -> Transcript:
        """Transcribe 16 kHz mono int16 `pcm` spoken in `language` (BCP-47, e.g. "en", "zh-CN"); `said_before`
        is the text of the same sentence just before `pcm` (its earlier pieces), which the decoding follows on
        (the decoder's prompt). `recheck` False: a decoding that runs away or doubts its speech gets no text
        instead of being decoded again (one decoding, as at a sentence's close after its pieces)."""
        ...


class ModelFilesError(RuntimeError):
    """A recogniser's model package is missing, at another version, or its files do not match their checksum."""


@dataclass(frozen=True)
class AsrCapacity:
    """How a recogniser shares the CPU among sessions: calls at once, and decodings of different sessions
    batched into one model call (`asr_batch.Batcher`)."""

    parallel: int = 1
    """Model calls that may run at once (one model replica and one runner thread each)."""
    max_batch: int = 1
    """Most decodings (of any sessions) in one model call; 1: each alone."""
    max_wait_ms: float = 0.0
    """Longest a decoding waits for others to share its call once it is ready (only while another caller is
    preparing one)."""


ONE_AT_A_TIME = AsrCapacity()
"""One recogniser call at a time, each decoding alone: offline drivers, which feed one sentence at a time."""


@dataclass(frozen=True)
class AsrBackend:
    """A recogniser `--asr` can pick by name: the model keys a comma-separated `--asr` may list, how to build
    its `Transcriber` for some of them (raising `ModelFilesError` when their files are missing or damaged),
    and its cache key: what its text depends on besides the audio (models, library, options, by name), read
    without loading anything."""

    name: str
    models: tuple[str, ...]
    build: Callable[[tuple[str, ...], AsrCapacity, AsrObserver | None], Transcriber]
    cache_key: Callable[[tuple[str, ...]], dict[str, object]]


def join_text(texts: Sequence[str], language: str) -> str:
    """Consecutive transcripts of one stretch of speech as one text: with spaces, or without for Mandarin."""
    return ("" if language == "zh" else " ").join(text for text in texts if text)


DECODE_KINDS = ("own", "fallback", "no_speech_check")
"""Why a sentence was decoded: in its own-length window ("own"); again in the check window because the own
decoding ran away or repeated itself ("fallback"), or because it doubted there was speech ("no_speech_check")."""


@dataclass(frozen=True)
class DecodeWork:
    """One decoding's cost: its kind (`DECODE_KINDS`), the speech it decoded, and the wall seconds of its
    parts (the log-mel in the calling thread; encode and generate on the model's own thread, one call at a time
    on one thread, so they are that thread's busy time; a call shared by a batch is split evenly among its
    decodings) with the process CPU seconds over the same spans (exact only when nothing else runs in the
    process, as in `depscreen bench asr`)."""

    kind: str
    speech_s: float
    features_s: float
    encode_s: float
    generate_s: float
    padding_share: float
    """Share of the encoded frames that are the silent tail or padding, not the sentence (encoder cost is about
    linear in frames, so this share of `encode_s` is what the padding costs)."""
    features_cpu_s: float = 0.0
    encode_cpu_s: float = 0.0
    generate_cpu_s: float = 0.0


class AsrObserver(Protocol):
    """Receives the cost of every decoding a transcriber makes, the size of every model call, and the waits of
    pieces for a worker (for metrics and benchmarks)."""

    def decoded(self, work: DecodeWork) -> None:
        """One decoding was made."""
        ...

    def batched(self, model: str, size: int) -> None:
        """One model call decoded `size` decodings (of one or more sessions) of `model` together."""
        ...

    def waited(self, seconds: float) -> None:
        """A piece of a sentence waited `seconds` for a free worker thread (`asr_pieces`)."""
        ...

    def closed(self, decodes: Sequence[str], seconds: float) -> None:
        """A sentence closed and its transcript was ready `seconds` later (wall); `decodes`: the kinds of the
        decodings it waited for (its pieces still being transcribed at the close, then the close's own)."""
        ...


class NoTranscriber:
    """No speech recognition (captions come from elsewhere, or text is not used): always empty."""

    name = "none"

    def model_for(self, language: str) -> str:
        """No model transcribes anything."""
        return ""

    def preload(self, language: str) -> None:
        """Nothing to load."""

    def transcribe(self, pcm: np.ndarray, language: str, said_before: str = "", recheck: bool = True) -> Transcript:
        """Return an empty transcript."""
        return NO_TRANSCRIPT
