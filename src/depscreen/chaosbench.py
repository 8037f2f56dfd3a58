"""`depscreen bench soak`: live interviews broken at random moments must leave no trace in what their clients get.

A round streams several recordings at once, uninterrupted, to a resumable server on loopback (its reference),
then again, each interview through its own loopback relay, while a seeded random schedule breaks them at random
offsets: the server is killed with SIGKILL and restarted on the same port and store (every live stream breaks
wherever it was: inside a sentence, in a pause, during the first sentence, during a resume), or one interview's
connection is cut (its stream is cancelled under it). The resumable client reconnects each time. Each
interview must then be its reference: the same sentence indices, each once, the same spans and the same
estimates within `ESTIMATE_TOLERANCE`. `tests/test_resume_chaos.py` runs one round per store; the soak runs
rounds with fresh seeds for `--minutes` and reports sessions, faults, sentences compared and mismatches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from depscreen.clients.session import ScreeningClient
from depscreen.clients.settings import ClientSettings
from depscreen.localserver import LocalServer, free_port, start_local_server
from depscreen.sample import sample_path
from depscreen.v1 import screening_pb2 as pb

ESTIMATE_TOLERANCE = 1e-5
"""How far a probability, the evidence or a modality's probability may be from the uninterrupted run's (float32
model steps in another process)."""
SERVER_FLAGS = (
    "--device", "cpu", "--asr", "none", "--max-speed", "0",
    "--video-sparse-backlog", "1000", "--video-drop-backlog", "1000", "--asr-skip-backlog", "1000",
    "--reject-backlog", "1000",
)  # fmt: skip
"""No ASR, no pacing and no load shedding: a busy machine must not shed video in one run and not the other."""
QUICK = ClientSettings(reply_timeout_s=10.0, first_backoff_s=0.05, max_backoff_s=0.5, reconnect_s=120.0)
"""Client settings of the broken runs: short backoffs so that rounds stay short; the rest as shipped."""


class CuttableRelay:
    """A TCP relay on loopback for one client; `cut()` aborts its connections both ways (the client sees the
    stream broken, the server a cancelled stream). A side that closes closes the other."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._transports: list[asyncio.BaseTransport] = []
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()  # the server is down: refuse as it would
            return
        self._transports += [writer.transport, up_writer.transport]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        for transport in (writer.transport, up_writer.transport):
            transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def close(self) -> None:
        """Stop relaying, once every connection's handler has finished."""
        self._server.close()
        self.cut()
        await asyncio.gather(*self._handlers, return_exceptions=True)


@dataclass(frozen=True)
class Seen:
    """A sentence update as the client saw it, for comparison."""

    index: int
    start_ms: int
    end_ms: int
    probability: float
    evidence: float
    modalities: tuple[float, ...]

    @classmethod
    def of(cls, update: pb.SentenceUpdate) -> Seen:
        estimate = update.estimate
        modalities = tuple(m.probability for m in estimate.modalities)
        return cls(update.index, update.start_ms, update.end_ms, estimate.probability, estimate.evidence, modalities)


def mismatches(reference: list[Seen], got: list[Seen]) -> list[str]:
    """How `got` differs from `reference` (empty when it is the same interview): indices in order and each
    once, the same spans, estimates within `ESTIMATE_TOLERANCE`."""
    problems = []
    indices = [s.index for s in got]
    if indices != list(range(len(reference))):
        problems.append(f"indices {indices}, expected 0-{len(reference) - 1} each once")
    for old, new in zip(reference, got, strict=False):
        if (old.index, old.start_ms, old.end_ms) != (new.index, new.start_ms, new.end_ms):
            span, expected = f"{new.start_ms}-{new.end_ms}", f"{old.start_ms}-{old.end_ms}"
            problems.append(f"sentence {old.index}: span {span} ms, expected {expected} ms")
            continue
        if len(old.modalities) != len(new.modalities):
            problems.append(f"sentence {old.index}: {len(new.modalities)} modalities, expected {len(old.modalities)}")
            continue
        before = (old.probability, old.evidence, *old.modalities)
        after = (new.probability, new.evidence, *new.modalities)
        worst = max(abs(a - b) for a, b in zip(before, after, strict=True))
        if worst > ESTIMATE_TOLERANCE:
            problems.append(f"sentence {old.index}: estimates differ by {worst:.2e}")
    return problems


async def interview(target: str, path: Path, speed: float, settings: ClientSettings | None = None) -> list[Seen]:
    """Stream a recording as one resumable interview; its sentence updates as the caller sees them."""
    seen = []
    client = ScreeningClient(target, settings=settings) if settings else ScreeningClient(target)
    async for message in client.stream_file(path, speed=speed):
        if message.WhichOneof("kind") == "sentence":
            seen.append(Seen.of(message.sentence))
    return seen


@dataclass
class Round:
    """One round: its seed, the faults it dealt, and how its interviews compared with their references."""

    seed: int
    sessions: int
    faults: list[str] = field(default_factory=list)
    sentences_compared: int = 0
    mismatches: list[str] = field(default_factory=list)


def chaos_round(
    flags: tuple[str, ...],
    log_path: Path,
    seed: int,
    recordings: tuple[Path, ...],
    *,
    faults: int,
    window_s: float,
    speed: float,
) -> Round:
    """Stream `recordings` uninterrupted, then again under `faults` faults at seeded random offsets within
    `window_s` seconds, to a server started with `flags` (which must name a state store); compare."""
    rng = random.Random(seed)
    grpc_port, http_port = free_port(), free_port()
    result = Round(seed, len(recordings))
    with log_path.open("a") as log:

        def start() -> LocalServer:
            return start_local_server(*flags, grpc_port=grpc_port, http_port=http_port, output=log)

        servers = [start()]

        async def run() -> tuple[list[list[Seen]], list[list[Seen]]]:
            target = servers[0].grpc_target
            expected = await asyncio.gather(*(interview(target, path, speed) for path in recordings))
            relays = [CuttableRelay(grpc_port) for _ in recordings]
            ports = [await relay.start() for relay in relays]
            tasks = [
                asyncio.create_task(interview(f"127.0.0.1:{port}", path, speed, QUICK))
                for port, path in zip(ports, recordings, strict=True)
            ]
            began = time.monotonic()
            for offset in sorted(rng.uniform(0.2, window_s) for _ in range(faults)):
                await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
                if all(task.done() for task in tasks):
                    break
                if rng.random() < 0.5:
                    servers[-1].process.kill()  # SIGKILL: nothing is flushed or closed
                    await asyncio.to_thread(servers[-1].process.wait)
                    servers.append(await asyncio.to_thread(start))
                    result.faults.append(f"server killed at {offset:.2f} s")
                else:
                    which = rng.randrange(len(relays))
                    relays[which].cut()
                    result.faults.append(f"interview {which} cut at {offset:.2f} s")
            try:
                return expected, await asyncio.gather(*tasks)
            finally:
                for relay in relays:
                    await relay.close()

        try:
            expected, resumed = asyncio.run(run())
        finally:
            for server in servers:
                server.stop()
    for path, reference, got in zip(recordings, expected, resumed, strict=True):
        result.sentences_compared += len(reference)
        result.mismatches += [f"{path.name}: {problem}" for problem in mismatches(reference, got)]
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("soak", help="interviews broken at random moments must match uninterrupted runs")
    parser.add_argument("--minutes", type=float, default=10.0, help="run rounds until this much time has passed")
    parser.add_argument("--media", type=Path, action="append", help="recordings, one interview each (default: sample)")
    parser.add_argument("--faults", type=int, default=4, help="faults per round")
    parser.add_argument("--window-s", type=float, default=8.0, help="faults fall in this many seconds of a round")
    parser.add_argument("--speed", type=float, default=3.0, help="times real time the interviews stream at")
    parser.add_argument("--store", default="sqlite", help="sqlite (a temporary file) or a redis://HOST:PORT/DB URL")
    parser.add_argument("--seed", type=int, default=None, help="first round's seed (default: random)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per round")
    parser.set_defaults(func=run_soak)


def run_soak(args: argparse.Namespace) -> int:
    recordings = tuple(args.media or (sample_path(), sample_path(), sample_path()))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    deadline = time.monotonic() + args.minutes * 60
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="depscreen-soak-") as folder:
        while not rounds or time.monotonic() < deadline:
            store = f"sqlite://{folder}/round-{len(rounds)}.db" if args.store == "sqlite" else args.store
            flags = (*SERVER_FLAGS, "--state-store", store)
            done = chaos_round(
                flags,
                Path(folder) / "server.log",
                seed + len(rounds),
                recordings,
                faults=args.faults,
                window_s=args.window_s,
                speed=args.speed,
            )
            rounds.append(done)
            print(json.dumps(asdict(done)) if args.json else _line(done), flush=True)
    total = Round(seed, sum(r.sessions for r in rounds))
    for done in rounds:
        total.faults += done.faults
        total.sentences_compared += done.sentences_compared
        total.mismatches += done.mismatches
    print(
        f"soak: {len(rounds)} rounds, {total.sessions} sessions, {len(total.faults)} faults, "
        f"{total.sentences_compared} sentences compared, {len(total.mismatches)} mismatches (first seed {seed})"
    )
    return 1 if total.mismatches else 0


def _line(done: Round) -> str:
    return (
        f"seed {done.seed}: {done.sessions} sessions, {len(done.faults)} faults ({'; '.join(done.faults)}), "
        f"{done.sentences_compared} sentences compared, {len(done.mismatches)} mismatches"
        + "".join(f"\n  {problem}" for problem in done.mismatches)
    )
