"""`depscreen bench asr`: Whisper's cost and accuracy per sentence: 30 s window, own-length window, pieces.

Real recordings are cut into sentences (and their pieces) by the live segmenter, then each sentence is
transcribed three ways: by faster-whisper's `transcribe()` (pads every sentence to Whisper's 30 s window), by
the ASR stage on the whole sentence (`WhisperModel`, its own length), and as a live session does it: its
pieces on a background worker, then the rest at its close (`SentenceInPieces`). Reported: process CPU ms and
wall ms per sentence, wall ms of the transcription at the close (what a sentence's update waits for once its
pieces are done), CPU ms per speech-second, by language and sentence length; English word error on the
LibriVox/JFK clips, Mandarin character error on EATD answers (`--eatd`, never bundled), and server-side
sentence latency of real-time sessions (`--latency`): long free speech (codec2 `ve9qrp.wav`), the GRID
sample, Mandarin EATD answers. `--batch 1,4,8`: throughput per core with decodings of many sessions batched
(`asrbatchbench`) instead.
Nothing is written but the markdown table; transcripts stay in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel as FasterWhisper

from depscreen import asrbatchbench
from depscreen.clients.session import ScreeningClient
from depscreen.engine.features.asr import DECODE_KINDS, DecodeWork, join_text, primary_language
from depscreen.engine.features.asr_pieces import SentenceInPieces
from depscreen.engine.features.whisper import WHISPER_OPTIONS, WhisperTranscriber
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.runtime.threads import one_thread_per_call
from depscreen.engine.segment import Piece, Segmenter, SegmenterSettings, Sentence
from depscreen.engine.transcript_error import ErrorCount, transcript_error
from depscreen.localserver import start_local_server
from depscreen.sample import sample_path

LENGTHS = ((0.0, 3.0), (3.0, 6.0), (6.0, 10.0), (10.0, 30.0))
"""Sentence length buckets (s)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("asr", help="Whisper per sentence: 30 s window, own-length window, pieces")
    parser.add_argument("--data", type=Path, required=True, help="the shared speech folder (speech/, eatd/)")
    parser.add_argument("--eatd-answers", type=int, default=20, help="EATD answers for the Mandarin rows")
    parser.add_argument("--latency", action="store_true", help="also stream real-time sessions through a server")
    parser.add_argument("--out", type=Path, default=Path("bench-asr.md"), help="markdown file to write")
    parser.add_argument(
        "--batch",
        type=_batch_sizes,
        help="instead: throughput per core with decodings batched up to each of these sizes, e.g. 1,4,8",
    )
    parser.set_defaults(func=run_asr_bench)


def _batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(size) for size in value.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of batch sizes >= 1, e.g. 1,4,8")
    return sizes


@dataclass
class Clip:
    """A recording, its reference text (or ""), its language, its sentences and the pieces cut from them."""

    name: str
    language: str
    reference: str
    sentences: list[Sentence]
    pieces: list[Piece]


def clip(name: str, language: str, reference: str, pcm: np.ndarray) -> Clip:
    """The recording cut by the live segmenter, with the pieces of its open sentences."""
    pieces: list[Piece] = []
    segmenter = Segmenter(SegmenterSettings(), pieces.append)
    return Clip(name, language, reference, segmenter.push(pcm) + segmenter.flush(), pieces)


def english_clips(data: Path) -> list[Clip]:
    speech = data / "speech"
    clips = [
        clip(p.stem, "en", p.with_suffix(".txt").read_text(), decode_audio_file(p))
        for p in sorted((speech / "librivox").glob("*.wav"))
    ]
    jfk = speech / "jfk"
    clips.append(clip("jfk", "en", (jfk / "transcript.txt").read_text(), decode_audio_file(jfk / "jfk.flac")))
    free_speech = speech / "codec2" / "ve9qrp.wav"
    if free_speech.exists():
        clips.append(clip("ve9qrp", "en", "", decode_audio_file(free_speech)))
    return clips


def mandarin_clips(data: Path, count: int) -> list[Clip]:
    answers = sorted((data / "eatd" / "train").glob("t_*/*.flac"))[:count]
    return [
        clip(f"{a.parent.name}/{a.stem}", "zh", a.with_suffix(".txt").read_text(encoding="utf-8"), decode_audio_file(a))
        for a in answers
    ]


class Before:
    """faster-whisper `transcribe()` as the project used it: 30 s window, greedy, no timestamps."""

    def __init__(self, transcriber: WhisperTranscriber) -> None:
        self._models: dict[str, FasterWhisper] = {}
        self._transcriber = transcriber

    def __call__(self, clip: Clip, sentence: Sentence) -> str:
        pcm, language = sentence.pcm, clip.language
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
            initial_prompt=WHISPER_OPTIONS.initial_prompts.get(code),
        )
        return ("" if code == "zh" else " ").join(s.text.strip() for s in segments)


class InPieces:
    """The live path: a sentence's pieces transcribed on a worker thread (here all at once, as a session
    whose pieces were cut while the patient talked), then the rest at its close in the calling thread."""

    def __init__(self, transcriber: WhisperTranscriber) -> None:
        self._transcriber = transcriber
        self._workers = ThreadPoolExecutor(max_workers=1)
        self.close_s = 0.0
        """Wall seconds of the transcriptions made at closes, in the calling thread, once the pieces were done
        (Whisper computes on its own threads, so the calling thread's CPU time would miss it)."""

    def _timed(self, seconds: float, cpu_seconds: float) -> None:
        if threading.current_thread() is threading.main_thread():
            self.close_s += seconds

    def __call__(self, clip: Clip, sentence: Sentence) -> str:
        pieces = SentenceInPieces(
            self._transcriber, clip.language, self._workers, SegmenterSettings().min_piece_ms, self._timed
        )
        for piece in clip.pieces:
            if piece.sentence_start_sample == sentence.start_sample:
                pieces.add(piece, allowed=True)
        return pieces.close(sentence).text


WHOLE = "own length, whole sentence"
METHODS = ("before (30 s window)", WHOLE, "pieces while speaking")


PARTS = ("features", "encode", "tail", "generate", "fallback", "no_speech_check")
"""The CPU breakdown's columns (as the `depscreen_asr_seconds` metric's parts)."""


class CostCollector:
    """Process CPU of each decoding by part, added to the keys of the sentence being measured (an AsrObserver:
    the benchmark makes one decoding at a time, so process CPU over a part is that part's)."""

    def __init__(self) -> None:
        self.keys: tuple[tuple[str, str], ...] = ()
        self.parts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def decoded(self, work: DecodeWork) -> None:
        for key in self.keys:
            parts = self.parts[key]
            parts[work.kind] += 1
            if work.kind == "own":
                parts["features"] += work.features_cpu_s
                parts["encode"] += work.encode_cpu_s * (1 - work.padding_share)
                parts["tail"] += work.encode_cpu_s * work.padding_share
                parts["generate"] += work.generate_cpu_s
            else:
                parts[f"{work.kind} cpu"] += work.features_cpu_s + work.encode_cpu_s + work.generate_cpu_s

    def batched(self, model: str, size: int) -> None:
        """The benchmark makes one decoding at a time: every call is a batch of one."""

    def waited(self, seconds: float) -> None:
        """Pieces wait for the benchmark's one worker only behind their own sentence's: not reported."""

    def closed(self, decodes: Sequence[str], seconds: float) -> None:
        """The benchmark closes a sentence once all its pieces were handed over at once: not a live close."""


@dataclass
class Timing:
    cpu_s: float = 0.0
    close_s: float = 0.0
    wall_s: float = 0.0
    speech_s: float = 0.0
    sentences: int = 0


def measure(clips: list[Clip], before: Before, after: WhisperTranscriber, costs: CostCollector) -> tuple[dict, dict]:
    """Timings by (method, language, bucket) and error counts by (method, language); `costs` (the observer of
    `after`) gets each decoding's parts by (method, language)."""
    timings: dict[tuple[str, str, str], Timing] = defaultdict(Timing)
    errors: dict[tuple[str, str], ErrorCount] = defaultdict(ErrorCount)
    in_pieces = InPieces(after)
    methods: dict[str, Callable[[Clip, Sentence], str]] = {
        METHODS[0]: before,
        METHODS[1]: lambda clip, sentence: after.transcribe(sentence.pcm, clip.language).text,
        METHODS[2]: in_pieces,
    }
    for clip in clips:
        for method, transcribe in methods.items():
            texts = []
            for sentence in clip.sentences:
                seconds = len(sentence.pcm) / SAMPLE_RATE
                bucket = next(f"{lo:g}-{hi:g} s" for lo, hi in LENGTHS if seconds < hi or hi == LENGTHS[-1][1])
                costs.keys = ((method, clip.language),)
                cpu, wall, close = time.process_time(), time.perf_counter(), in_pieces.close_s
                texts.append(transcribe(clip, sentence))
                costs.keys = ()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                for key in ((method, clip.language, bucket), (method, clip.language, "all")):
                    timing = timings[key]
                    timing.cpu_s += cpu
                    timing.close_s += in_pieces.close_s - close if transcribe is in_pieces else wall
                    timing.wall_s += wall
                    timing.speech_s += seconds
                    timing.sentences += 1
            if clip.reference:
                joined = join_text(texts, clip.language)
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


def breakdown_rows(timings: dict, costs: CostCollector) -> list[str]:
    """Per (language, method): decodings per sentence by kind and process CPU ms per speech-second by part."""
    rows = []
    for (method, language), parts in sorted(costs.parts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        t = timings[(method, language, "all")]
        per_second = {part: parts[part] / t.speech_s * 1000 for part in PARTS[:4]}
        per_second |= {kind: parts[f"{kind} cpu"] / t.speech_s * 1000 for kind in DECODE_KINDS[1:]}
        decodes = " / ".join(f"{parts[kind] / t.sentences:.2f}" for kind in DECODE_KINDS)
        rows.append(
            f"| {language} | {method} | {t.sentences} | {decodes} | "
            + " | ".join(f"{per_second[part]:.1f}" for part in PARTS)
            + f" | {sum(per_second.values()):.1f} | {t.cpu_s / t.speech_s * 1000:.1f} |"
        )
    return rows


def run_batch_bench(args: argparse.Namespace) -> int:
    one_thread_per_call()  # as the server does once its models are loaded
    lines = [
        "# depscreen bench asr --batch",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work (load average "
        f"{os.getloadavg()[0]:.1f} at the start), Python {platform.python_version()}; Whisper int8 on CPU, one "
        "thread per model call, greedy. CPU is process CPU time.",
        "",
        *asrbatchbench.TABLE_HEAD,
        *asrbatchbench.batch_rows(args.data, args.eatd_answers, args.batch),
        "",
    ]
    table = "\n".join(lines)
    args.out.write_text(table)
    print(table)
    return 0


def run_asr_bench(args: argparse.Namespace) -> int:
    if args.batch:
        return run_batch_bench(args)
    costs = CostCollector()
    after = WhisperTranscriber(observer=costs)
    before = Before(after)
    clips = english_clips(args.data)
    if (args.data / "eatd" / "train").is_dir():
        clips += mandarin_clips(args.data, args.eatd_answers)
    for clip in clips[:1] + [c for c in clips if c.language == "zh"][:1]:  # load each model before timing
        after.transcribe(clip.sentences[0].pcm, clip.language)
        before(clip, clip.sentences[0])
    one_thread_per_call()  # as the server does once its models are loaded
    timings, errors = measure(clips, before, after, costs)
    rows = []
    order = {method: i for i, method in enumerate(METHODS)}
    for (method, language, bucket), t in sorted(timings.items(), key=lambda kv: (kv[0][1], kv[0][2], order[kv[0][0]])):
        rows.append(
            f"| {language} | {bucket} | {method} | {t.sentences} | {t.cpu_s / t.sentences * 1000:.0f} | "
            f"{t.close_s / t.sentences * 1000:.0f} | {t.wall_s / t.sentences * 1000:.0f} | "
            f"{t.cpu_s / t.speech_s * 1000:.0f} |"
        )
    error_rows = [
        f"| {language} ({'WER' if language == 'en' else 'CER'}) | {method} | {100 * e.rate:.1f}% "
        f"({e.errors}/{e.reference_units}) |"
        for (method, language), e in sorted(errors.items(), key=lambda kv: (kv[0][1], order[kv[0][0]]))
    ]
    lines = [
        "# depscreen bench asr",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
        f"{platform.python_version()}; Whisper int8 on CPU, one thread per call, greedy. CPU is process CPU time.",
        "",
        "| language | sentence length | method | sentences | CPU ms / sentence | wall ms at close | "
        "wall ms / sentence | CPU ms / speech-second |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "Where the CPU goes (process CPU ms per speech-second; decodings per sentence own / fallback / no-speech "
        "check; tail = the encoder's share for the 1 s silent tail and the padding to 5 s; fallback and no-speech "
        "check = whole re-decodings in the longer check window (English 30 s, Mandarin twice the own window); "
        "the last column is the process CPU measured around whole sentences):",
        "",
        "| language | method | sentences | decodings per sentence | features | encode | tail | generate | "
        "fallback | no-speech check | sum of parts | measured |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *breakdown_rows(timings, costs),
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
