"""`depscreen bench`: model step time over a long session, server latency under real-time load, CPU per stage.

Writes a markdown table (and prints it). Five parts:
1. the session step at sentence 1, 100 and 1000 of one session (must be flat: the state is fixed-size);
   and one batched encode + step over the StatePool at batch sizes 1-128 (how batching scales);
2. server-side sentence latency p50/p95 for 1 and N concurrent real-time sessions streaming the bundled real
   interview (audio + video + Whisper ASR), from a `depscreen serve` subprocess on loopback;
3. CPU time per second of audio for each stage, from the server's `depscreen_stage_cpu_seconds_total`;
4. the segmenter with each voice-activity detector against human speaker turns (AMI meeting clips): frame-level
   speech F1 and CPU ms per second of audio (left out, with the reason, when the clips are absent).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from depscreen import asrbench, chaosbench, loadbench, negotiationbench
from depscreen.clients.session import ScreeningClient
from depscreen.engine.media import SAMPLE_RATE
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.runtime.screener import EvidenceAccount, Screener, collate
from depscreen.engine.runtime.state_pool import StatePool
from depscreen.engine.segment import SegmenterSettings, segment_pcm
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions
from depscreen.engine.vad import VAD_NAMES, preload_vad
from depscreen.engine.vad_score import CorpusScore, load_corpus, score_corpus
from depscreen.localserver import read_counter, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.metrics import STAGES

STEP_POSITIONS = (1, 100, 1000)
AMI_CLIPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "speech" / "ami_train"
"""Real far-field meeting clips with human speaker turns (`train.rttm`), beside the project when present."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench")
    parser.add_argument("--out", type=Path, default=Path("bench.md"), help="markdown file to write")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions for the load row")
    parser.add_argument("--media", type=Path, default=None, help="media to stream (default: bundled sample)")
    parser.add_argument(
        "--ami", type=Path, default=AMI_CLIPS, help="folder of WAV clips + train.rttm to score the segmenter on"
    )
    parser.set_defaults(func=run_bench)
    commands = parser.add_subparsers(dest="bench_command")
    loadbench.register(commands)
    asrbench.register(commands)
    chaosbench.register(commands)
    negotiationbench.register(commands)


def step_times(repeats: int = 21) -> dict[int, float]:
    """Median time of one session step (encode excluded) at the given sentence positions, in ms."""
    torch.set_num_threads(1)
    screener = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    model = screener.model
    unit = FeatureStats.unit()
    settings = SyntheticSettings(min_sentences=1, max_sentences=1, min_frames=100, max_frames=100)
    features = generate_sessions(1, unit, seed=0, settings=settings)[0].sentences[0]
    track = screener.new_session()
    with torch.no_grad():
        encoded = model.encode(collate([features], model.config, screener.device), track.state.audio_moments)
        times: dict[int, float] = {}
        for k in range(1, max(STEP_POSITIONS) + 1):
            if k in STEP_POSITIONS:
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model.step(encoded, track.state)
                    samples.append(time.perf_counter() - start)
                times[k] = statistics.median(samples) * 1000
            _, track.state = model.step(encoded, track.state)
    return times


BATCH_SIZES = (1, 8, 32, 128)


def batch_scaling(repeats: int = 5) -> dict[int, tuple[float, float]]:
    """Median (encode + step) time of one batched step over a StatePool, per batch and per sentence, in ms.

    Sentences are 3 s of audio LLDs and 15 face frames with text, as in a full-modality session.
    """
    torch.set_num_threads(1)
    screener = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    unit = FeatureStats.unit()
    settings = SyntheticSettings(min_sentences=1, max_sentences=1, min_frames=300, max_frames=300, text_rate=1.0)
    sentences = [s.sentences[0] for s in generate_sessions(max(BATCH_SIZES), unit, seed=1, settings=settings)]
    pool = StatePool(screener.model, max(BATCH_SIZES))
    slots = [pool.acquire() for _ in range(max(BATCH_SIZES))]
    result = {}
    for size in BATCH_SIZES:
        index = torch.tensor(slots[:size])
        accounts = [EvidenceAccount() for _ in range(size)]
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            _, state, _ = screener.step_batch(sentences[:size], accounts, pool.gather(index))
            pool.scatter(index, state)
            samples.append(time.perf_counter() - start)
        batch_ms = statistics.median(samples) * 1000
        result[size] = (batch_ms, batch_ms / size)
    return result


async def _one_session(target: str, media: Path) -> list[float]:
    client = ScreeningClient(target)
    latencies = []
    async for message in client.stream_file(media, speed=1.0):
        if message.WhichOneof("kind") == "sentence":
            latencies.append(message.sentence.latency_ms / 1000.0)
    return latencies


async def _load(target: str, media: Path, sessions: int) -> list[float]:
    results = await asyncio.gather(*(_one_session(target, media) for _ in range(sessions)))
    return [latency for session in results for latency in session]


def segmenter_scores(folder: Path) -> dict[str, CorpusScore]:
    """Each voice-activity detector's segmenter scored on the clips of `folder` (models loaded beforehand, so
    the CPU column is the steady cost)."""
    corpus = load_corpus(folder)
    scores = {}
    for name in VAD_NAMES:
        preload_vad(name)
        settings = SegmenterSettings(vad=name)
        scores[name] = score_corpus(
            corpus,
            lambda pcm, s=settings: [
                (x.start_sample / SAMPLE_RATE, x.end_sample / SAMPLE_RATE) for x in segment_pcm(pcm, s)
            ],
        )
    return scores


def segmenter_table(folder: Path) -> list[str]:
    """Markdown lines of the segmenter's accuracy and cost per detector, or why they are missing."""
    lines = ["## Segmenter against human speaker turns (AMI far-field meeting clips)", ""]
    if not (folder / "train.rttm").exists():
        return [*lines, f"Left out: no clips with a train.rttm in `{folder}`.", ""]
    scores = segmenter_scores(folder)
    clips = list(next(iter(scores.values())).clips)
    return [
        *lines,
        f"Frame-level (10 ms) speech F1 of the sentence spans against the union of the speaker turns, {len(clips)}",
        "clips of 30 s, pooled over all frames; CPU is process time of the segmenter alone (machine shared).",
        "",
        "| vad | F1 | precision | recall | mean F1 per clip | CPU ms per audio second | " + " | ".join(clips) + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in clips) + " |",
        *(
            f"| {name} | {s.pooled.f1:.3f} | {s.pooled.precision:.3f} | {s.pooled.recall:.3f} | {s.mean_f1:.3f} | "
            f"{s.cpu_ms_per_audio_s:.2f} | " + " | ".join(f"{c.f1:.2f}" for c in s.clips.values()) + " |"
            for name, s in scores.items()
        ),
        "",
    ]


def run_bench(args: argparse.Namespace) -> int:
    media = args.media or sample_path()
    steps = step_times()
    batches = batch_scaling()
    server = start_local_server("--device", "cpu", "--log-level", "WARNING")
    try:
        before = server.metrics()
        single = asyncio.run(_load(server.grpc_target, media, 1))
        after = server.metrics()
        loaded = asyncio.run(_load(server.grpc_target, media, args.sessions))
    finally:
        server.stop()
    audio_s = read_counter(after, "depscreen_audio_seconds_total") - read_counter(
        before, "depscreen_audio_seconds_total"
    )

    def per_audio_second(sample: str) -> dict[str, float]:
        return {
            stage: (read_counter(after, sample.format(stage)) - read_counter(before, sample.format(stage)))
            / audio_s
            * 1000
            for stage in STAGES
        }

    stage_wall = per_audio_second('depscreen_stage_seconds_sum{{stage="{}"}}')
    stage_cpu = per_audio_second('depscreen_stage_cpu_seconds_total{{stage="{}"}}')
    lines = [
        "# depscreen bench",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, torch {torch.__version__}, CPU. Media: `{media.name}` "
        f"({audio_s:.1f} s, real-time pace, audio + video at 5 fps + Whisper tiny.en ASR).",
        "",
        "## Session step (model, one session, 1 torch thread)",
        "",
        "| sentence | step time (ms) |",
        "| ---: | ---: |",
        *(f"| {k} | {t:.3f} |" for k, t in steps.items()),
        "",
        "## Batched model step over the state pool (encode + step, 1 torch thread)",
        "",
        "| batch (sessions) | ms per batch | ms per sentence |",
        "| ---: | ---: | ---: |",
        *(f"| {size} | {batch:.1f} | {per:.2f} |" for size, (batch, per) in batches.items()),
        "",
        "## Server-side sentence latency (sentence closed → update written)",
        "",
        "| concurrent sessions | sentences | p50 (s) | p95 (s) | max (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {n} | {len(v)} | {loadbench.percentile(v, 50):.3f} | {loadbench.percentile(v, 95):.3f} | {max(v):.3f} |"
            for n, v in ((1, single), (args.sessions, loaded))
        ),
        "",
        "## Time per second of audio, by stage (one session alone)",
        "",
        "Wall time is what the session waited for; worker-thread CPU excludes work that a library runs in its",
        "own threads (Whisper's CTranslate2 workers), so for `asr` the wall column is the cost.",
        "",
        "| stage | wall ms per audio second | worker CPU ms per audio second |",
        "| --- | ---: | ---: |",
        *(f"| {stage} | {stage_wall[stage]:.2f} | {stage_cpu[stage]:.2f} |" for stage in STAGES),
        f"| **total** | **{sum(stage_wall.values()):.2f}** | **{sum(stage_cpu.values()):.2f}** |",
        "",
        *segmenter_table(args.ami),
    ]
    table = "\n".join(lines)
    args.out.write_text(table)
    print(table)
    return 0
