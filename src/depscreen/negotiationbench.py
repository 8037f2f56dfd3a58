"""`depscreen bench negotiation`: hostile WHIP negotiation beside a good session, against the targets of issue 23.

A good gRPC session streams `--duration` seconds of the media as fast as the server takes it (`bench load`'s
session), alone and then beside a hostile client, `--rounds` times back to back. The hostile client repeats,
every `--interval` seconds (0: as fast as the server answers): an offer of `--candidates` ICE candidates
(700 KB at 12,000), a small offer that opens a session, a trickle PATCH of `--candidates` candidates to it, a
PATCH of as many candidates as fit under `max_sdp_bytes` (over `max_ice_candidates`), and a DELETE. `/healthz`
is asked every `HEALTH_INTERVAL_S` throughout. Targets: the good session within 1.5x its time alone; `/healthz`
under 100 ms. The hostile sessions never connect, so the started server gathers their ICE candidates on loopback
(`SERVER_FLAGS`) and binds nothing on the machine's other interfaces.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from depscreen.clients.media import TimedMessage
from depscreen.loadbench import WARMUP_S, load_messages, percentile, proc_cpu_s, run_session
from depscreen.localserver import LocalServer, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.settings import ServerSettings

HEALTH_INTERVAL_S = 0.05
HEALTH_TIMEOUT_S = 120.0
SERVER_FLAGS = ("--log-level", "WARNING", "--webrtc-host", "127.0.0.1")
SLOWER_TARGET = 1.5
HEALTH_TARGET_S = 0.1


@dataclass
class Phase:
    """One good session, alone or beside the hostile client."""

    hostile: bool
    session_s: float
    server_cpu_s: float
    health_s: list[float]
    requests: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Hostile requests by kind: (HTTP status, seconds to the answer)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("negotiation", help="hostile WHIP offers and trickles beside a good session")
    parser.add_argument("--media", type=Path, default=None, help="media of the good session (default: sample)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of media the good session sends")
    parser.add_argument("--rounds", type=int, default=3, help="alone/beside pairs, back to back")
    parser.add_argument("--candidates", type=int, default=12_000, help="ICE candidates of the hostile offer/PATCH")
    parser.add_argument(
        "--interval", type=float, default=0.25, help="seconds between the hostile client's rounds (0 = flood)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="flag for the started server, e.g. --server-arg=--asr=none"
    )
    parser.set_defaults(func=run_negotiation)


def with_candidates(sdp: str, count: int) -> str:
    """`sdp` with `count` host candidates added to its first m= section."""
    lines = sdp.split("\r\n")
    first_mid = next(i for i, line in enumerate(lines) if line.startswith("a=mid:"))
    candidates = [
        f"a=candidate:{i} 1 udp 2122260223 10.213.{i // 250 % 250}.{i % 250 + 1} {10_000 + i} typ host"
        for i in range(count)
    ]
    return "\r\n".join([*lines[: first_mid + 1], *candidates, *lines[first_mid + 1 :]])


async def bare_offer() -> str:
    """A real offer (audio and the data channel) without candidates: the server waits for trickles."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("depscreen")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return "".join(
        line for line in sdp.splitlines(keepends=True) if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


def largest_fitting(fragment: str, limit: int) -> int:
    """The most candidates `with_candidates` can add to `fragment` within `limit` bytes."""
    count = limit // 50
    while len(with_candidates(fragment, count).encode()) > limit:
        count -= 10
    return count


async def hostile(
    http_url: str, offer: str, candidates: int, interval_s: float, stop: threading.Event
) -> dict[str, list]:
    """The hostile client's requests (see the module) until `stop`; each kind's (status, seconds)."""
    ufrag = next(line for line in offer.splitlines() if line.startswith("a=ice-ufrag:"))
    fragment = f"{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    fit = largest_fitting(fragment, ServerSettings().max_sdp_bytes)
    bodies = {
        f"offer, {candidates} candidates": with_candidates(offer, candidates),
        f"PATCH, {candidates} candidates": with_candidates(fragment, candidates),
        f"PATCH, {fit} candidates": with_candidates(fragment, fit),
    }
    sdp, trickle = {"Content-Type": "application/sdp"}, {"Content-Type": "application/trickle-ice-sdpfrag"}
    requests: dict[str, list] = defaultdict(list)

    async with aiohttp.ClientSession() as client:

        async def timed(kind: str, method: str, path: str, body: str = "", headers: dict | None = None) -> str:
            started = time.perf_counter()
            async with client.request(method, f"{http_url}{path}", data=body, headers=headers) as reply:
                await reply.read()
            requests[kind].append((reply.status, time.perf_counter() - started))
            return reply.headers.get("Location", "")

        while not stop.is_set():
            kind = next(iter(bodies))
            await timed(kind, "POST", "/whip", bodies[kind], sdp)
            location = await timed("small offer (opens a session)", "POST", "/whip", offer, sdp)
            if location:
                for kind in list(bodies)[1:]:
                    await timed(kind, "PATCH", location, bodies[kind], trickle)
                await timed("DELETE", "DELETE", location)
            stop.wait(interval_s)
    return requests


class HealthProbe:
    """Asks `/healthz` every `HEALTH_INTERVAL_S` on its own thread and keeps each answer's time."""

    def __init__(self, server: LocalServer) -> None:
        self._server = server
        self._stop = threading.Event()
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._run, name="healthz-probe")

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self._server.http_url}/healthz", timeout=HEALTH_TIMEOUT_S) as reply:
                    reply.read()
            except OSError:
                pass  # no answer within HEALTH_TIMEOUT_S: counted as the time waited, like an answer
            self.times.append(time.perf_counter() - started)
            self._stop.wait(HEALTH_INTERVAL_S)


async def phase(
    server: LocalServer, messages: list[TimedMessage], args: argparse.Namespace, offer: str | None
) -> Phase:
    """One good session; beside the hostile client (on its own thread and event loop) when `offer` is given."""
    stop = threading.Event()
    cpu_before = proc_cpu_s(server.process.pid)
    with HealthProbe(server) as probe:
        attack = None
        if offer:
            attack = asyncio.ensure_future(
                asyncio.to_thread(asyncio.run, hostile(server.http_url, offer, args.candidates, args.interval, stop))
            )
        started = time.perf_counter()
        await run_session(server.grpc_target, messages, args.duration, speed=0)
        session_s = time.perf_counter() - started
        stop.set()
        requests = await attack if attack else {}
    return Phase(offer is not None, session_s, proc_cpu_s(server.process.pid) - cpu_before, probe.times, requests)


def report(phases: list[Phase], args: argparse.Namespace) -> list[str]:
    """Markdown lines: the good session's time alone and beside, /healthz, and the hostile requests' answers."""
    alone = [p for p in phases if not p.hostile]
    beside = [p for p in phases if p.hostile]
    ratio = statistics.median(b.session_s for b in beside) / statistics.median(a.session_s for a in alone)
    pairs = ", ".join(f"{b.session_s / a.session_s:.2f}" for a, b in zip(alone, beside, strict=True))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Good session: {args.duration:g} s of the media over gRPC as fast as the server takes it; server flags "
        f"`{' '.join(args.server_arg) or '(defaults)'}`; hostile rounds every {args.interval:g} s; "
        f"{len(alone)} rounds alone/beside back to back; load average after the run {load} "
        f"({os.cpu_count()} cores, shared machine).",
        "",
        "| good session | median s | runs (s) | server CPU s (median) | /healthz p50 ms | p99 ms | max ms | asked |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in (("alone", alone), ("beside the hostile client", beside)):
        health = [t for p in runs for t in p.health_s]
        lines.append(
            f"| {name} | {statistics.median(p.session_s for p in runs):.2f} | "
            + ", ".join(f"{p.session_s:.2f}" for p in runs)
            + f" | {statistics.median(p.server_cpu_s for p in runs):.2f} | {percentile(health, 50) * 1000:.1f} | "
            f"{percentile(health, 99) * 1000:.1f} | {max(health) * 1000:.1f} | {len(health)} |"
        )
    worst_health = max(t for p in phases for t in p.health_s)
    lines += [
        "",
        f"Beside / alone: **{ratio:.2f}x** (per pair {pairs}; target <= {SLOWER_TARGET}x: "
        f"{'met' if ratio <= SLOWER_TARGET else 'NOT met'}). Slowest /healthz {worst_health * 1000:.1f} ms "
        f"(target < {HEALTH_TARGET_S * 1000:.0f} ms: {'met' if worst_health < HEALTH_TARGET_S else 'NOT met'}).",
        "",
        "| hostile request | sent | answers | median ms | max ms |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    merged: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for p in beside:
        for kind, answers in p.requests.items():
            merged[kind] += answers
    for kind, answers in merged.items():
        statuses = defaultdict(int)
        for status, _ in answers:
            statuses[status] += 1
        seconds = [s for _, s in answers]
        lines.append(
            f"| {kind} | {len(answers)} | "
            + ", ".join(f"{status} x{count}" for status, count in sorted(statuses.items()))
            + f" | {statistics.median(seconds) * 1000:.1f} | {max(seconds) * 1000:.1f} |"
        )
    return lines


async def negotiation_runs(args: argparse.Namespace, server: LocalServer, messages: list[TimedMessage]) -> list[Phase]:
    offer = await bare_offer()
    await run_session(server.grpc_target, messages, WARMUP_S, speed=0)
    phases = []
    for _ in range(args.rounds):
        phases.append(await phase(server, messages, args, None))
        phases.append(await phase(server, messages, args, offer))
    return phases


def run_negotiation(args: argparse.Namespace) -> int:
    messages = load_messages(args.media or sample_path(), 200, True)
    server = start_local_server(*SERVER_FLAGS, *args.server_arg)
    try:
        phases = asyncio.run(negotiation_runs(args, server, messages))
    finally:
        server.stop()
    print("\n".join(report(phases, args)))
    return 0
