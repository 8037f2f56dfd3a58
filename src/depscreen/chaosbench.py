"""`depscreen bench soak`: live interviews broken at random moments must leave no trace in what their clients get.

A round streams several recordings at once, uninterrupted, to a resumable server on loopback (its reference),
then again, each interview through its own loopback relay, while a seeded random schedule breaks them. Faults at
random offsets, each kind once per round while there are as many faults as kinds (`FAULT_KINDS`):
- `kill`: the server is killed with SIGKILL and restarted on the same port and store (every live stream breaks
  wherever it was: inside a sentence, in a pause, during a resume);
- `cut`: one interview's connection is cut (its stream is cancelled under it);
- `freeze`: the server is frozen (SIGSTOP), a replica on the same store takes over (the relays fail over to
  it and drop their clients' connections, as a balancer whose health check failed, leaving the frozen server's
  side open), and once every interview still running has resumed there, plus `FREEZE_S`, the frozen server
  wakes (SIGCONT) with its old streams, which go on with the media that waited in their sockets: any snapshot
  they try to write or delete is fenced (refused);
- `replay`: one interview's connection is cut, and cut again while it resumes (just after its next `accepted`,
  while the replayed audio goes out).
And at the edges of every round: one interview's first stream breaks between `start` and `accepted` (its relay
drops the connection at the server's first message), another's during its first sentence.
The resumable client reconnects each time. Each interview must then be its reference: the same sentence
indices, each once, the same spans and the same estimates within `ESTIMATE_TOLERANCE`.
`tests/test_resume_chaos.py` runs one round per store; the soak runs rounds with fresh seeds for `--minutes`
and reports sessions, faults, sentences compared, mismatches and the stale writes the store refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from depscreen.clients.session import ScreeningClient
from depscreen.clients.settings import ClientSettings
from depscreen.localserver import LocalServer, start_local_server
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
FAULT_KINDS = ("kill", "cut", "freeze", "replay")
FREEZE_S = 3.0
"""How long a frozen server stays stopped once its interviews have resumed on the replica."""
RESUME_CUT_S = 0.3
"""A `replay` fault's second cut falls this long at most after the resumed stream's `accepted`."""
STALE_MARK = "a stale stream stops without writing"
"""What a server logs when the store fenced one of its streams' writes (`streamer/snapshot_writer.py`)."""
HTTP2_HEADER_BYTES = 9
HTTP2_DATA = 0


class CuttableRelay:
    """A TCP relay on loopback for one client; `cut()` aborts its connections both ways (the client sees the
    stream broken, the server a cancelled stream), `detach()` only the client's side. A side that closes closes
    the other, unless it was detached."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        """Where new connections go (a failover points it at another server)."""
        self.break_before_reply = False
        """Drop the next connection at the server's first message (gRPC's first DATA frame: `accepted`), so
        the server has taken `start` and the client never sees the answer."""
        self.broke_before_reply = asyncio.Event()
        self._connections: list[tuple[asyncio.BaseTransport, asyncio.BaseTransport]] = []
        """Each live connection's client and server side."""
        self._held: list[asyncio.BaseTransport] = []
        """Server sides left open by `detach`."""
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
        self._connections.append((writer.transport, up_writer.transport))
        if self.break_before_reply:
            self.break_before_reply = False
            downstream = self._pump_until_data(up_reader, writer, up_writer)
        else:
            downstream = self._pump(up_reader, writer)
        await asyncio.gather(self._pump(reader, up_writer), downstream, return_exceptions=True)
        for transport in (writer.transport, up_writer.transport):
            self._abort(transport)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if writer.transport.is_closing():
                continue  # a detached client's side: what the server sends goes nowhere
            writer.write(data)
            await writer.drain()
        self._abort(writer.transport)

    def _abort(self, transport: asyncio.BaseTransport) -> None:
        if transport not in self._held:
            transport.abort()

    async def _pump_until_data(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: asyncio.StreamWriter
    ) -> None:
        """Relay the server's HTTP/2 frames whole until its first DATA frame, then drop the connection both ways
        without relaying it."""
        while True:
            header = await reader.readexactly(HTTP2_HEADER_BYTES)
            length, kind = int.from_bytes(header[:3], "big"), header[3]
            payload = await reader.readexactly(length)
            if kind == HTTP2_DATA and length:
                writer.transport.abort()
                upstream.transport.abort()
                self.broke_before_reply.set()
                return
            writer.write(header + payload)
            await writer.drain()

    def cut(self) -> None:
        for client, server in self._connections:
            client.abort()
            self._abort(server)
        self._connections.clear()

    def detach(self) -> None:
        """Drop the client's side of every connection and leave the server's side open and silent, as a frozen
        server finds its streams when it wakes after its clients went elsewhere."""
        for client, server in self._connections:
            self._held.append(server)
            client.abort()
        self._connections.clear()

    async def close(self) -> None:
        """Stop relaying (the detached server sides too), once every connection's handler has finished."""
        self._server.close()
        self.cut()
        for server in self._held:
            server.abort()
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


async def interview(
    target: str,
    path: Path,
    speed: float,
    settings: ClientSettings | None = None,
    on_message: Callable[[pb.ServerMessage], None] | None = None,
) -> list[Seen]:
    """Stream a recording as one resumable interview; its sentence updates as the caller sees them.
    `on_message` is told every server message (each `accepted`, each sentence once) as it arrives."""
    seen = []
    client = ScreeningClient(target, settings=settings) if settings else ScreeningClient(target)
    async for message in client.stream_file(path, speed=speed):
        if on_message is not None:
            on_message(message)
        if message.WhichOneof("kind") == "sentence":
            seen.append(Seen.of(message.sentence))
    return seen


class Watch:
    """One broken interview as its client sees it: `accepted`s and sentences so far, and cuts armed to fall
    a set time after its next `accepted`."""

    def __init__(self, relay: CuttableRelay, faults: list[str], name: str) -> None:
        self.relay = relay
        self.accepted = 0
        self.sentences = 0
        self._faults = faults
        self._name = name
        self._armed: list[tuple[float, str]] = []

    def cut_after_next_accepted(self, delay_s: float, what: str) -> None:
        self._armed.append((delay_s, what))

    def __call__(self, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "sentence":
            self.sentences += 1
        elif kind == "accepted":
            self.accepted += 1
            armed, self._armed = self._armed, []
            for delay_s, what in armed:
                asyncio.get_running_loop().call_later(delay_s, self._cut, what)

    def _cut(self, what: str) -> None:
        where = "no sentence yet" if not self.sentences else f"{self.sentences} sentences in"
        self.relay.cut()
        self._faults.append(f"{self._name} cut {what} ({where})")


@dataclass
class Round:
    """One round: its seed, the faults it dealt, and how its interviews compared with their references."""

    seed: int
    sessions: int
    faults: list[str] = field(default_factory=list)
    sentences_compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    stale_writes_refused: int = 0
    """Snapshot writes of frozen servers' stale streams that the store fenced (counted in their logs)."""


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
    """Stream `recordings` uninterrupted, then again under the edge faults and `faults` faults at seeded random
    offsets within `window_s` seconds, to a server started with `flags` (which must name a state store);
    compare."""
    rng = random.Random(seed)
    result = Round(seed, len(recordings))
    kinds = [*rng.sample(FAULT_KINDS, min(faults, len(FAULT_KINDS)))]
    kinds += [rng.choice(FAULT_KINDS) for _ in range(faults - len(kinds))]
    offsets = sorted(rng.uniform(0.2, window_s) for _ in range(faults))
    log_path.touch()
    log_from = log_path.stat().st_size
    with log_path.open("a") as log:

        def start(grpc_port: int = 0, http_port: int = 0) -> LocalServer:
            return start_local_server(*flags, grpc_port=grpc_port, http_port=http_port, output=log)

        servers = [start()]

        async def run() -> tuple[list[list[Seen]], list[list[Seen]]]:
            target = servers[0].grpc_target
            expected = await asyncio.gather(*(interview(target, path, speed) for path in recordings))
            relays = [CuttableRelay(servers[0].grpc_port) for _ in recordings]
            ports = [await relay.start() for relay in relays]
            names = [f"interview {which}" for which in range(len(recordings))]
            watches = [Watch(relay, result.faults, name) for relay, name in zip(relays, names, strict=True)]
            edges = rng.sample(range(len(recordings)), min(2, len(recordings)))
            relays[edges[0]].break_before_reply = True
            if len(edges) > 1:
                first_s = expected[edges[1]][0].end_ms / 1000 / speed if expected[edges[1]] else 1.0
                watches[edges[1]].cut_after_next_accepted(rng.uniform(0.05, first_s), "during its first sentence")
            tasks = [
                asyncio.create_task(interview(f"127.0.0.1:{port}", path, speed, QUICK, watch))
                for port, path, watch in zip(ports, recordings, watches, strict=True)
            ]
            began = time.monotonic()
            thawing: list[asyncio.Task] = []
            for offset, kind in zip(offsets, kinds, strict=True):
                await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
                if all(task.done() for task in tasks):
                    break
                if kind == "kill":
                    killed = servers[-1]
                    killed.process.kill()  # SIGKILL: nothing is flushed or closed
                    await asyncio.to_thread(killed.process.wait)
                    servers.append(await asyncio.to_thread(start, killed.grpc_port, killed.http_port))
                    result.faults.append(f"server killed at {offset:.2f} s")
                elif kind == "freeze":
                    frozen = servers[-1]
                    frozen.process.send_signal(signal.SIGSTOP)
                    servers.append(await asyncio.to_thread(start))
                    for relay in relays:
                        relay.upstream_port = servers[-1].grpc_port
                        relay.detach()
                    result.faults.append(f"server frozen at {offset:.2f} s, a replica took over")
                    accepted = [watch.accepted for watch in watches]

                    def resumed(accepted: list[int] = accepted) -> bool:
                        return all(
                            task.done() or watch.accepted > count
                            for task, watch, count in zip(tasks, watches, accepted, strict=True)
                        )

                    thawing.append(asyncio.create_task(thaw(frozen, resumed)))
                else:
                    which = rng.randrange(len(relays))
                    relays[which].cut()
                    result.faults.append(f"{names[which]} cut at {offset:.2f} s")
                    if kind == "replay":
                        watches[which].cut_after_next_accepted(rng.uniform(0.0, RESUME_CUT_S), "again while resuming")
            try:
                return expected, await asyncio.gather(*tasks)
            finally:
                if relays[edges[0]].broke_before_reply.is_set():
                    result.faults.append(f"{names[edges[0]]} cut between start and accepted")
                await asyncio.gather(*thawing)
                for relay in relays:
                    await relay.close()

        try:
            expected, resumed = asyncio.run(run())
        finally:
            for server in servers:
                server.process.send_signal(signal.SIGCONT)  # a stopped server cannot end
                server.stop()
    with log_path.open() as log:
        log.seek(log_from)
        result.stale_writes_refused = log.read().count(STALE_MARK)
    for path, reference, got in zip(recordings, expected, resumed, strict=True):
        result.sentences_compared += len(reference)
        result.mismatches += [f"{path.name}: {problem}" for problem in mismatches(reference, got)]
    return result


async def thaw(frozen: LocalServer, resumed: Callable[[], bool]) -> None:
    """Wake a frozen server, with its old streams, `FREEZE_S` after its interviews have `resumed` elsewhere (a
    session the frozen server ends with `end` while its client has not resumed keeps its summary only for
    `finished_retention_s`: README, "Limits")."""
    while not resumed():
        await asyncio.sleep(0.1)
    await asyncio.sleep(FREEZE_S)
    frozen.process.send_signal(signal.SIGCONT)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("soak", help="interviews broken at random moments must match uninterrupted runs")
    parser.add_argument("--minutes", type=float, default=10.0, help="run rounds until this much time has passed")
    parser.add_argument("--media", type=Path, action="append", help="recordings, one interview each (default: sample)")
    parser.add_argument("--faults", type=int, default=4, help="faults per round (kill, cut, freeze, replay)")
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
        total.stale_writes_refused += done.stale_writes_refused
    print(
        f"soak: {len(rounds)} rounds, {total.sessions} sessions, {len(total.faults)} faults, "
        f"{total.sentences_compared} sentences compared, {len(total.mismatches)} mismatches, "
        f"{total.stale_writes_refused} stale writes refused (first seed {seed})"
    )
    return 1 if total.mismatches else 0


def _line(done: Round) -> str:
    return (
        f"seed {done.seed}: {done.sessions} sessions, {len(done.faults)} faults ({'; '.join(done.faults)}), "
        f"{done.sentences_compared} sentences compared, {len(done.mismatches)} mismatches, "
        f"{done.stale_writes_refused} stale writes refused" + "".join(f"\n  {problem}" for problem in done.mismatches)
    )
