"""`depscreen bench asr --batch 1,4,8`: speech recognition throughput per core when decodings share model calls.

Each recording is cut by the live segmenter; what a live session decodes without a prompt (each sentence's
pieces, or the sentence itself when it has none) is handed to the recogniser from as many threads as the batch
size, as sessions closing sentences together would, with batching up to that size. Reported per batch size:
model calls, their mean size, speech seconds decoded per process CPU second, and whether every text equals
the text at batch 1. Nothing is written but the markdown table; transcripts stay in memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depscreen.engine.features.asr import AsrCapacity, DecodeWork
from depscreen.engine.features.whisper import WhisperTranscriber
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.segment import Piece, Segmenter, SegmenterSettings
from depscreen.sample import sample_path

BATCH_WAIT_MS = 100.0
"""How long a decoding waits for batch-mates here: long enough that the threads' decodings meet."""


@dataclass(frozen=True)
class Recording:
    """Named speech in one language, as the stretches a live session decodes without a prompt."""

    name: str
    language: str
    stretches: list[np.ndarray]


def stretches(pcm: np.ndarray) -> list[np.ndarray]:
    """Each sentence's pieces, or the sentence when it has none, as the live segmenter cuts `pcm`."""
    pieces: list[Piece] = []
    segmenter = Segmenter(SegmenterSettings(), pieces.append)
    sentences = segmenter.push(pcm) + segmenter.flush()
    found = []
    for sentence in sentences:
        own = [p.pcm for p in pieces if p.sentence_start_sample == sentence.start_sample]
        found += own or [sentence.pcm]
    return found


def recordings(data: Path, eatd_answers: int) -> list[Recording]:
    """Long free speech (codec2 `ve9qrp.wav`), the GRID sample, and Mandarin EATD training answers, where present."""
    found = []
    free_speech = data / "speech" / "codec2" / "ve9qrp.wav"
    if free_speech.exists():
        found.append(Recording("long free speech (ve9qrp.wav)", "en", stretches(decode_audio_file(free_speech))))
    found.append(Recording("GRID sample", "en", stretches(decode_audio_file(sample_path()))))
    answers = sorted((data / "eatd" / "train").glob("t_*/*.flac"))[:eatd_answers]
    if answers:
        mandarin = [s for answer in answers for s in stretches(decode_audio_file(answer))]
        found.append(Recording(f"Mandarin, {len(answers)} EATD answers", "zh", mandarin))
    return found


class BatchSizes:
    """An AsrObserver that keeps the size of every model call (how many decodings each held)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def decoded(self, work: DecodeWork) -> None:
        """Costs are not kept: `bench asr --batch` measures process CPU around the whole run."""

    def batched(self, model: str, size: int) -> None:
        self.sizes.append(size)

    def waited(self, seconds: float) -> None:
        """Waits for a worker are not kept."""

    def closed(self, decodes: Sequence[str], seconds: float) -> None:
        """The benchmark closes no sentences."""


@dataclass(frozen=True)
class Throughput:
    batch: int
    decodings: int
    calls: int
    speech_s: float
    cpu_s: float
    texts: list[str]

    @property
    def per_cpu_s(self) -> float:
        return self.speech_s / self.cpu_s


def measure(recording: Recording, batch: int) -> Throughput:
    """The recording's stretches decoded from `batch` threads at once, batching up to `batch` per call."""
    calls = BatchSizes()
    model = "tiny.en" if recording.language == "en" else "base"
    transcriber = WhisperTranscriber((model,), AsrCapacity(1, batch, BATCH_WAIT_MS), calls)
    transcriber.transcribe(recording.stretches[0], recording.language)  # load the model before timing
    calls.sizes.clear()
    cpu = time.process_time()
    with ThreadPoolExecutor(batch) as pool:
        heard = pool.map(lambda pcm: transcriber.transcribe(pcm, recording.language), recording.stretches)
        texts = [transcript.text for transcript in heard]
    cpu = time.process_time() - cpu
    speech_s = sum(len(s) for s in recording.stretches) / SAMPLE_RATE
    return Throughput(batch, sum(calls.sizes), len(calls.sizes), speech_s, cpu, texts)


def batch_rows(data: Path, eatd_answers: int, batches: list[int]) -> list[str]:
    """Markdown rows: per recording and batch size, calls, mean call size, and speech seconds per CPU second."""
    rows = []
    for recording in recordings(data, eatd_answers):
        alone: Throughput | None = None
        for batch in batches:
            result = measure(recording, batch)
            alone = alone or result
            same = "yes" if result.texts == alone.texts else "no"
            rows.append(
                f"| {recording.name} | {recording.language} | {len(recording.stretches)} | {result.batch} | "
                f"{result.decodings} | {result.calls} | {result.decodings / result.calls:.2f} | "
                f"{result.speech_s:.0f} | {result.cpu_s:.2f} | {result.per_cpu_s:.1f} | "
                f"{result.per_cpu_s / alone.per_cpu_s:.2f} | {same} |"
            )
    return rows


TABLE_HEAD = [
    "| recording | language | stretches | batch size | decodings | model calls | decodings per call | speech s | "
    "CPU s | speech s per CPU s | vs first batch size | same texts as first |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
]
