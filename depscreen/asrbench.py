"""`depscreen bench asr`: Whisper's cost and accuracy per sentence, 30 s window (before) vs own-length windows.

Real recordings are cut into sentences by the live segmenter, then each sentence is transcribed twice on one
thread: by faster-whisper's `transcribe()` (pads every sentence to Whisper's 30 s window) and by the ASR stage
(`WhisperModel`, the sentence's own length). Reported: process CPU ms and wall ms per sentence and per
speech-second by language and sentence length, English word error on the LibriVox/JFK clips, Mandarin
character error on EATD answers (`--eatd`, never bundled), and server-side sentence latency of real-time
sessions (`--latency`): long free speech (codec2 `ve9qrp.wav`), the GRID sample, Mandarin EATD answers.
Nothing is written but the markdown table; transcripts stay in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel as FasterWhisper

from depscreen.clients.session import ScreeningClient
from depscreen.engine.features.asr import INITIAL_PROMPTS, WhisperTranscriber, primary_language
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.segment import Segmenter, SegmenterSettings
from depscreen.engine.transcript_error import ErrorCount, transcript_error
from depscreen.localserver import start_local_server
from depscreen.sample import sample_path

LENGTHS = ((0.0, 3.0), (3.0, 6.0), (6.0, 10.0), (10.0, 30.0))
"""Sentence length buckets (s)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("asr", help="Whisper per sentence: 30 s window vs own-length windows")
    parser.add_argument("--data", type=Path, required=True, help="the shared speech folder (speech/, eatd/)")
    parser.add_argument("--eatd-answers", type=int, default=20, help="EATD answers for the Mandarin rows")
    parser.add_argument("--latency", action="store_true", help="also stream real-time sessions through a server")
    parser.add_argument("--out", type=Path, default=Path("bench-asr.md"), help="markdown file to write")
    parser.set_defaults(func=run_asr_bench)


@dataclass
class Clip:
    """A recording, its reference text (or ""), its language, and its sentences."""

    name: str
    language: str
    reference: str
    sentences: list[np.ndarray]


def sentences_of(pcm: np.ndarray) -> list[np.ndarray]:
    segmenter = Segmenter(SegmenterSettings())
    return [s.pcm for s in segmenter.push(pcm) + segmenter.flush()]


def english_clips(data: Path) -> list[Clip]:
    speech = data / "speech"
    clips = [
        Clip(p.stem, "en", p.with_suffix(".txt").read_text(), sentences_of(decode_audio_file(p)))
        for p in sorted((speech / "librivox").glob("*.wav"))
    ]
    jfk = speech / "jfk"
    clips.append(
        Clip("jfk", "en", (jfk / "transcript.txt").read_text(), sentences_of(decode_audio_file(jfk / "jfk.flac")))
    )
    free_speech = speech / "codec2" / "ve9qrp.wav"
    if free_speech.exists():
        clips.append(Clip("ve9qrp", "en", "", sentences_of(decode_audio_file(free_speech))))
    return clips


def mandarin_clips(data: Path, count: int) -> list[Clip]:
    answers = sorted((data / "eatd" / "train").glob("t_*/*.flac"))[:count]
    return [
        Clip(
            f"{a.parent.name}/{a.stem}",
            "zh",
            a.with_suffix(".txt").read_text(encoding="utf-8"),
            sentences_of(decode_audio_file(a)),
        )
        for a in answers
    ]


class Before:
    """faster-whisper `transcribe()` as the project used it: 30 s window, greedy, no timestamps."""

    def __init__(self, transcriber: WhisperTranscriber) -> None:
        self._models: dict[str, FasterWhisper] = {}
        self._transcriber = transcriber

    def __call__(self, pcm: np.ndarray, language: str) -> str:
        code = primary_language(language)
        name = self._transcriber.model_for(language)
        if name not in self._models:
            source = next(s for s in self._transcriber.sources if s.name == name)
            self._models[name] = FasterWhisper(
                name, device="cpu", compute_type="int8", cpu_threads=1, files=source.read()
            )
        segments, _ = self._models[name].transcribe(
            pcm.astype(np.float32) / 32768.0,
            language=code,
            beam_size=1,
            without_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            initial_prompt=INITIAL_PROMPTS.get(code),
        )
        return ("" if code == "zh" else " ").join(s.text.strip() for s in segments)


@dataclass
class Timing:
    cpu_s: float = 0.0
    wall_s: float = 0.0
    speech_s: float = 0.0
    sentences: int = 0


def measure(clips: list[Clip], before: Before, after: WhisperTranscriber) -> tuple[dict, dict]:
    """Timings by (method, language, bucket) and error counts by (method, language)."""
    timings: dict[tuple[str, str, str], Timing] = defaultdict(Timing)
    errors: dict[tuple[str, str], ErrorCount] = defaultdict(ErrorCount)
    methods = {"before (30 s window)": before, "after (own length)": lambda p, lang: after.transcribe(p, lang).text}
    for clip in clips:
        for method, transcribe in methods.items():
            texts = []
            for pcm in clip.sentences:
                seconds = len(pcm) / SAMPLE_RATE
                bucket = next(f"{lo:g}-{hi:g} s" for lo, hi in LENGTHS if seconds < hi or hi == LENGTHS[-1][1])
                cpu, wall = time.process_time(), time.perf_counter()
                texts.append(transcribe(pcm, clip.language))
                for key in ((method, clip.language, bucket), (method, clip.language, "all")):
                    timing = timings[key]
                    timing.cpu_s += time.process_time() - cpu
                    timing.wall_s += time.perf_counter() - wall
                    timing.speech_s += seconds
                    timing.sentences += 1
            if clip.reference:
                joined = ("" if clip.language == "zh" else " ").join(texts)
                errors[(method, clip.language)] += transcript_error(clip.reference, joined, clip.language)
    return timings, errors


async def _latencies(target: str, media: Path, language: str) -> list[float]:
    client = ScreeningClient(target)
    found = []
    async for message in client.stream_file(media, speed=1.0, video=False, language=language):
        if message.WhichOneof("kind") == "sentence":
            found.append(message.sentence.latency_ms / 1000.0)
    return found


def latency_rows(data: Path, eatd_answers: int) -> list[str]:
    """p50/p95 server latency of one real-time session per recording (audio + ASR, no video)."""
    runs = [
        ("long free speech (ve9qrp.wav, 112 s)", [data / "speech" / "codec2" / "ve9qrp.wav"], "en"),
        ("GRID sample (audio)", [sample_path()], "en"),
    ]
    answers = sorted((data / "eatd" / "train").glob("t_*/*.flac"))[:eatd_answers]
    if answers:
        runs.append((f"Mandarin, {len(answers)} EATD answers (zh)", answers, "zh"))
    server = start_local_server("--device", "cpu", "--log-level", "WARNING")
    rows = []
    try:
        for name, paths, language in runs:
            found = [x for p in paths for x in asyncio.run(_latencies(server.grpc_target, p, language))]
            p50, p95 = np.percentile(found, 50), np.percentile(found, 95)
            rows.append(f"| {name} | {len(found)} | {p50:.3f} | {p95:.3f} | {max(found):.3f} |")
    finally:
        server.stop()
    return rows


def run_asr_bench(args: argparse.Namespace) -> int:
    after = WhisperTranscriber()
    before = Before(after)
    clips = english_clips(args.data)
    if (args.data / "eatd" / "train").is_dir():
        clips += mandarin_clips(args.data, args.eatd_answers)
    for clip in clips[:1] + [c for c in clips if c.language == "zh"][:1]:  # load each model before timing
        after.transcribe(clip.sentences[0], clip.language)
        before(clip.sentences[0], clip.language)
    timings, errors = measure(clips, before, after)
    rows = []
    for (method, language, bucket), t in sorted(timings.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        rows.append(
            f"| {language} | {bucket} | {method} | {t.sentences} | {t.cpu_s / t.sentences * 1000:.0f} | "
            f"{t.wall_s / t.sentences * 1000:.0f} | {t.cpu_s / t.speech_s * 1000:.0f} |"
        )
    error_rows = [
        f"| {language} ({'WER' if language == 'en' else 'CER'}) | {method} | {100 * e.rate:.1f}% "
        f"({e.errors}/{e.reference_units}) |"
        for (method, language), e in sorted(errors.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    lines = [
        "# depscreen bench asr",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
        f"{platform.python_version()}; Whisper int8 on CPU, one thread per call, greedy. CPU is process CPU time.",
        "",
        "| language | sentence length | method | sentences | CPU ms / sentence | wall ms / sentence | "
        "CPU ms / speech-second |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "| clips | method | error |",
        "| --- | --- | ---: |",
        *error_rows,
        "",
    ]
    if args.latency:
        lines += [
            "| real-time session | sentences | p50 latency (s) | p95 latency (s) | max (s) |",
            "| --- | ---: | ---: | ---: | ---: |",
            *latency_rows(args.data, min(args.eatd_answers, 6)),
            "",
        ]
    table = "\n".join(lines)
    args.out.write_text(table)
    print(table)
    return 0
