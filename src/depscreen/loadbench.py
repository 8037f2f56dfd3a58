"""`depscreen bench load`: many concurrent real-time sessions against one server, and what they cost.

Each session plays one of the media files (round robin; audio, video and captions as the file has them) in a
loop until `--duration` passes, at `--speed` (1 = real time); their starts are spread over `STAGGER_S`.
Reported: server-side sentence latency p50/p95/p99 (`SentenceUpdate.latency_ms`), the server's CPU use and
RSS per session (from /proc), shed video
frames and rejected sessions (from /metrics), and the load client's own CPU. `--bad-clients` adds one client
that sends as fast as it can, one that stalls mid-sentence and one that vanishes without `end`, and reports
how each was handled. `--find-max` searches the most sessions whose p95 latency stays under `--target-p95`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np

from depscreen.clients.media import MediaSource, TimedMessage
from depscreen.clients.session import ScreeningClient
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.metrics import REJECT_REASONS
from depscreen.v1 import screening_pb2 as pb

T = TypeVar("T")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RSS_SAMPLE_S = 30.0
WARMUP_S = 8.0
STAGGER_S = 5.0
"""Session starts are spread evenly over this many seconds: real interviews never start in lockstep, and
identical media started together would close every session's sentences at the same instant."""
"""Media streamed through one session before measuring, so lazily loaded models and buffers count as idle."""


@dataclass
class LoadResult:
    """One load run, as printed by `--json`."""

    sessions: int
    duration_s: float
    sentences: int
    p50_latency_s: float
    p95_latency_s: float
    p99_latency_s: float
    server_cpu_cores: float
    client_cpu_cores: float
    rss_idle_mb: float
    rss_peak_mb: float
    rss_per_session_mb: float
    rss_timeline_mb: list[float]
    """Server RSS every `RSS_SAMPLE_S` seconds of the run: flat for a long session means no leak."""
    shed_video_frames: float
    shed_asr_sentences: float
    """Sentences left without ASR under overload: a latency bought by skipping ASR shows here."""
    transcribed_sentences: float
    """Sentences the server ran ASR on."""
    asr_ms_per_speech_second: dict[str, float]
    """Speech recognition's seconds by part (`depscreen_asr_seconds_total`) per speech-second transcribed, in ms."""
    asr_decodes: dict[str, float]
    """Whisper decodings by kind (`depscreen_asr_decodes_total`)."""
    asr_decodings_per_call: dict[str, float]
    """Decodings per speech recognition model call, by model (`depscreen_asr_batch_size`): 1 = none batched."""
    asr_worker_wait_p95_s: float | None
    """95th percentile of the waits of pieces for a speech recognition worker (bucket bound)."""
    asr_close_decodes: dict[str, float]
    """Decodings closed sentences waited for, by kind (`depscreen_asr_close_decodes_total`): the close path."""
    asr_close_wait_p95_s: float | None
    """95th percentile of how long a closed sentence waited for its transcript (bucket bound)."""
    rejected_sessions: float
    failed_sessions: int
    event_loop_lag_p95_s: float | None = None
    sessions_active_after: float | None = None
    """Sessions the server still held once every client was gone (must be 0: nothing leaks)."""
    state_slots_after: float | None = None
    bad_clients: dict[str, str] = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("load", help="N concurrent real-time sessions against one server")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds each session streams")
    parser.add_argument("--media", type=Path, action="append", help="media file(s), round robin (default: sample)")
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as possible")
    parser.add_argument("--chunk-ms", type=int, default=200, help="audio per message (default 200)")
    parser.add_argument("--no-video", dest="video", action="store_false", help="send audio (and captions) only")
    parser.add_argument("--language", default="", help="BCP-47 tag each session starts with (default: English)")
    parser.add_argument("--server", help="HOST:PORT of a running server (default: start one on loopback)")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="flag for the started server, e.g. --server-arg=--asr=none"
    )
    parser.add_argument("--bad-clients", action="store_true", help="add a fast, a stalling and a vanishing client")
    parser.add_argument("--find-max", action="store_true", help="search the most sessions with p95 < --target-p95")
    parser.add_argument("--target-p95", type=float, default=0.5)
    parser.add_argument("--json", action="store_true", help="print one JSON object per run")
    parser.set_defaults(func=run_load)


def load_messages(path: Path, chunk_ms: int, video: bool) -> list[TimedMessage]:
    """Decode and encode a media file once; every session replays the result."""
    with MediaSource(path, video=video) as source:
        return list(source.messages(chunk_ms=chunk_ms))


def looped(messages: list[TimedMessage], loop: int, period_ms: float) -> list[pb.ClientMessage]:
    """The messages of one more pass over the file, with video and caption times moved on by whole loops."""
    out = []
    offset = round(loop * period_ms)
    for timed in messages:
        message = timed.message
        kind = message.WhichOneof("kind")
        if offset and kind == "video":
            v = message.video
            message = pb.ClientMessage(
                video=pb.VideoFrame(timestamp_ms=v.timestamp_ms + offset, image=v.image, format=v.format)
            )
        elif offset and kind == "caption":
            c = message.caption
            message = pb.ClientMessage(
                caption=pb.Caption(start_ms=c.start_ms + offset, end_ms=c.end_ms + offset, text=c.text)
            )
        out.append(message)
    return out


async def paced_session(
    messages: list[TimedMessage],
    duration_s: float,
    speed: float,
    stop_after_s: float | None = None,
    language: str = "",
):
    """Start, the file in a loop until `duration_s` of media, end; `stop_after_s` of media then go silent."""
    audio = pb.AudioFormat(sample_rate_hz=16_000, channels=1)
    yield pb.ClientMessage(start=pb.SessionStart(audio=audio, language=language))
    period_ms = max(m.media_ms for m in messages)
    started = time.monotonic()
    loop = 0
    while loop * period_ms < duration_s * 1000:
        for timed, message in zip(messages, looped(messages, loop, period_ms), strict=True):
            media_s = (loop * period_ms + timed.media_ms) / 1000
            if stop_after_s is not None and media_s > stop_after_s:
                await asyncio.sleep(3600)
            if media_s > duration_s:
                break
            if speed > 0:
                delay = started + media_s / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield message
        loop += 1
    yield pb.ClientMessage(end=pb.SessionEnd())


async def _after(delay_s: float, job: Awaitable[T]) -> T:
    await asyncio.sleep(delay_s)
    return await job


async def run_session(
    target: str, messages: list[TimedMessage], duration_s: float, speed: float, language: str = ""
) -> list[float]:
    latencies = []
    paced = paced_session(messages, duration_s, speed, language=language)
    async for reply in ScreeningClient(target).stream_messages(paced):
        if reply.WhichOneof("kind") == "sentence":
            latencies.append(reply.sentence.latency_ms / 1000)
    return latencies


async def bad_clients(target: str, messages: list[TimedMessage]) -> dict[str, str]:
    """A fast client (paced by the server), a staller (timed out) and one that vanishes (cleaned up)."""

    async def fast() -> str:
        started = time.monotonic()
        latencies = await run_session(target, messages, 60.0, speed=0)
        return f"sent 60 s of media as fast as it could: took {time.monotonic() - started:.1f} s, " + (
            f"{len(latencies)} sentences scored"
        )

    async def staller() -> str:
        started = time.monotonic()
        try:
            async for _ in ScreeningClient(target).stream_messages(paced_session(messages, 60.0, 1.0, 5.0)):
                pass
        except grpc.aio.AioRpcError as error:
            return f"stalled after 5 s: ended {error.code().name} after {time.monotonic() - started:.1f} s"
        return "stalled after 5 s: not ended by the server"

    async def vanisher() -> str:
        stream = ScreeningClient(target).stream_messages(paced_session(messages, 60.0, 1.0))
        task = asyncio.ensure_future(_drain(stream))
        await asyncio.sleep(5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return "disconnected after 5 s without `end`"

    names = ("fast", "staller", "vanisher")
    outcomes = await asyncio.gather(fast(), staller(), vanisher())
    return dict(zip(names, outcomes, strict=True))


async def _drain(stream) -> None:
    async for _ in stream:
        pass


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _watch_rss(pid: int, peak: list[float], timeline: list[float], stop: asyncio.Event) -> None:
    """Track the server's peak RSS, and sample it every `RSS_SAMPLE_S` for the timeline (soak runs)."""
    started = time.monotonic()
    while not stop.is_set():
        rss = _proc_rss_mb(pid)
        peak[0] = max(peak[0], rss)
        if time.monotonic() - started >= len(timeline) * RSS_SAMPLE_S:
            timeline.append(round(rss, 1))
        await asyncio.sleep(0.5)


async def load_run(
    target: str,
    server: LocalServer | None,
    media: list[list[TimedMessage]],
    sessions: int,
    duration_s: float,
    speed: float,
    with_bad_clients: bool,
    language: str = "",
) -> LoadResult:
    pid = server.process.pid if server else None
    await run_session(target, media[0], WARMUP_S, speed=0, language=language)
    metrics_before = _metrics(server)
    rss_idle = _proc_rss_mb(pid) if pid else float("nan")
    cpu_before = proc_cpu_s(pid) if pid else 0.0
    client_cpu_before = time.process_time()
    peak = [rss_idle]
    timeline: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_rss(pid, peak, timeline, stop)) if pid else None
    started = time.monotonic()
    jobs = [
        _after(i * STAGGER_S / sessions, run_session(target, media[i % len(media)], duration_s, speed, language))
        for i in range(sessions)
    ]
    bad = bad_clients(target, media[0]) if with_bad_clients else None
    results = await asyncio.gather(*jobs, *([bad] if bad else []), return_exceptions=True)
    wall = time.monotonic() - started
    stop.set()
    if watcher:
        await watcher
    session_results = results[:sessions]
    latencies = [x for r in session_results if isinstance(r, list) for x in r]
    metrics_after = await _settled_metrics(server)
    return LoadResult(
        sessions=sessions,
        duration_s=round(wall, 1),
        sentences=len(latencies),
        p50_latency_s=round(percentile(latencies, 50), 3),
        p95_latency_s=round(percentile(latencies, 95), 3),
        p99_latency_s=round(percentile(latencies, 99), 3),
        server_cpu_cores=round((proc_cpu_s(pid) - cpu_before) / wall, 2) if pid else float("nan"),
        client_cpu_cores=round((time.process_time() - client_cpu_before) / wall, 2),
        rss_idle_mb=round(rss_idle, 1),
        rss_peak_mb=round(peak[0], 1),
        rss_per_session_mb=round((peak[0] - rss_idle) / sessions, 2),
        rss_timeline_mb=timeline,
        shed_video_frames=_delta(metrics_before, metrics_after, "depscreen_shed_video_frames_total"),
        shed_asr_sentences=_delta(metrics_before, metrics_after, "depscreen_shed_asr_total"),
        transcribed_sentences=_delta(metrics_before, metrics_after, 'depscreen_stage_seconds_count{stage="asr"}'),
        asr_ms_per_speech_second=_asr_parts(metrics_before, metrics_after),
        asr_decodes=_labelled_deltas(metrics_before, metrics_after, "depscreen_asr_decodes_total"),
        asr_decodings_per_call=_per_call(metrics_before, metrics_after),
        asr_worker_wait_p95_s=_histogram_p95(metrics_before, metrics_after, "depscreen_asr_worker_wait_seconds"),
        asr_close_decodes=_labelled_deltas(metrics_before, metrics_after, "depscreen_asr_close_decodes_total"),
        asr_close_wait_p95_s=_histogram_p95(metrics_before, metrics_after, "depscreen_asr_close_wait_seconds"),
        rejected_sessions=sum(
            _delta(metrics_before, metrics_after, f'depscreen_rejected_sessions_total{{reason="{reason}"}}')
            for reason in REJECT_REASONS
        ),
        failed_sessions=sum(1 for r in session_results if isinstance(r, BaseException)),
        event_loop_lag_p95_s=_histogram_p95(metrics_before, metrics_after, "depscreen_event_loop_lag_seconds"),
        bad_clients=results[sessions] if bad and isinstance(results[sessions], dict) else {},
        sessions_active_after=read_counter(metrics_after, "depscreen_sessions_active") if server else None,
        state_slots_after=read_counter(metrics_after, "depscreen_state_pool_slots_used") if server else None,
    )


async def _settled_metrics(server: LocalServer | None, timeout_s: float = 10.0) -> str:
    """The server's metrics once its sessions have wound down (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    metrics = _metrics(server)
    while server and read_counter(metrics, "depscreen_sessions_active") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        metrics = _metrics(server)
    return metrics


def _metrics(server: LocalServer | None) -> str:
    return server.metrics() if server else ""


def _delta(before: str, after: str, sample: str) -> float:
    return read_counter(after, sample) - read_counter(before, sample)


def _labelled_deltas(before: str, after: str, name: str) -> dict[str, float]:
    """The growth of each series of a counter with one label between two scrapes, by label value."""
    samples = [line.rsplit(" ", 1)[0] for line in after.splitlines() if line.startswith(f"{name}{{")]
    return {sample.split('"')[1]: _delta(before, after, sample) for sample in samples}


def _asr_parts(before: str, after: str) -> dict[str, float]:
    """ms of each speech recognition part per speech-second transcribed between two scrapes."""
    speech_s = _delta(before, after, "depscreen_asr_speech_seconds_total")
    seconds = _labelled_deltas(before, after, "depscreen_asr_seconds_total")
    return {part: round(s / speech_s * 1000, 1) for part, s in seconds.items()} if speech_s else {}


def _per_call(before: str, after: str) -> dict[str, float]:
    """Mean decodings per speech recognition model call between two scrapes, by model."""
    counts = _labelled_deltas(before, after, "depscreen_asr_batch_size_count")
    sums = _labelled_deltas(before, after, "depscreen_asr_batch_size_sum")
    return {model: round(sums[model] / calls, 2) for model, calls in counts.items() if calls}


def _histogram_p95(before: str, after: str, name: str) -> float | None:
    """Upper bound of the bucket holding the 95th percentile of observations made between two scrapes."""
    buckets = []
    for line in after.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            sample = line.rsplit(" ", 1)[0]
            buckets.append((float(bound), read_counter(after, sample) - read_counter(before, sample)))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= 0.95 * total)


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile of `values` (linear interpolation); NaN when there are none."""
    return float(np.percentile(values, q)) if values else float("nan")


async def find_max(args: argparse.Namespace, target: str, server: LocalServer | None, media) -> LoadResult | None:
    """Double the session count while p95 < target, then bisect between the last good and first bad."""
    good: LoadResult | None = None
    low, high = 0, None
    n = max(1, args.sessions)
    while high is None or high - low > max(1, low // 10):
        result = await load_run(target, server, media, n, args.duration, args.speed, False, args.language)
        _print(result, args.json, prefix=f"try {n} sessions")
        ok = result.p95_latency_s < args.target_p95 and result.failed_sessions == 0 and not result.rejected_sessions
        if ok:
            good, low = result, n
        else:
            high = n
        n = n * 2 if high is None else (low + high) // 2
        if n in (low, high):
            break
        await asyncio.sleep(2)
    return good


def _print(result: LoadResult, as_json: bool, prefix: str = "") -> None:
    if as_json:
        print(json.dumps(asdict(result)), flush=True)
        return
    print(f"{prefix}: " if prefix else "", end="")
    print(", ".join(f"{k}={v}" for k, v in asdict(result).items()), flush=True)


def run_load(args: argparse.Namespace) -> int:
    paths = args.media or [sample_path()]
    media = [load_messages(path, args.chunk_ms, args.video) for path in paths]
    server = None if args.server else start_local_server("--log-level", "WARNING", *args.server_arg)
    target = args.server or server.grpc_target
    try:
        if args.find_max:
            best = asyncio.run(find_max(args, target, server, media))
            if best is None:
                print(f"no session count met p95 < {args.target_p95} s")
                return 1
            _print(best, args.json, prefix="most sessions meeting the target")
        else:
            result = asyncio.run(
                load_run(
                    target, server, media, args.sessions, args.duration, args.speed, args.bad_clients, args.language
                )
            )
            _print(result, args.json)
    finally:
        if server:
            server.stop()
    return 0
