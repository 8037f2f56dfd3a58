"""Chaos: live interviews broken at random moments leave no trace in what their clients receive.

Several interviews stream real recordings at once, each through its own loopback relay, to one server with a
state store (SQLite, or a real redis-server). A seeded random schedule breaks them at random offsets: the
server is killed with SIGKILL and restarted on the same port and store (every live stream breaks, wherever it
was: inside a sentence, in a pause, during the first sentence, during a resume), or one interview's connection
is cut (its stream is cancelled under it). The resumable client reconnects each time. Every interview must then
be the uninterrupted one: the same sentence indices, each once, the same spans and the same estimates within
1e-5. The seed is printed on failure (rerun with DEPSCREEN_CHAOS_SEED=<seed>); a longer soak is
`depscreen bench soak`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from depscreen.clients.session import ScreeningClient
from depscreen.clients.settings import ClientSettings
from depscreen.localserver import LocalServer, free_port, start_local_server
from depscreen.sample import sample_path

from .conftest import FIXTURES, SHARED_DATA
from .test_resume import FLAGS, Update, assert_same_interview, redis_url, store_dir  # noqa: F401 (fixtures)

RECORDINGS = (sample_path(), SHARED_DATA / "speech" / "ami_train" / "trn03.wav", FIXTURES / "jfk.flac")
"""The interviews: the GRID sample (audio and video), far-field meeting speech, and read speech."""
SPEED = 3.0
"""Times real time the interviews are streamed at (enough for every fault to land mid-interview)."""
FAULTS = 4
"""Faults per run, at random offsets, each a server kill or one interview's connection cut."""
FAULT_WINDOW_S = 6.0
"""Faults fall in the first this many seconds of the interrupted run (the shortest interview lasts ~4 s at
`SPEED`, the others ~11 s, and each restart holds them all a few seconds)."""
QUICK = ClientSettings(reply_timeout_s=10.0, first_backoff_s=0.05, max_backoff_s=0.5, reconnect_s=120.0)


class CuttableRelay:
    """A TCP relay on loopback for one client; `cut()` aborts its connections both ways (the client sees the
    stream broken, the server a cancelled stream). A side that closes closes the other."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._transports: list[asyncio.BaseTransport] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    def close(self) -> None:
        self.cut()
        self._server.close()


async def interview(target: str, path: Path, settings: ClientSettings | None = None) -> list[Update]:
    """Stream a recording as one resumable interview; its sentence updates as the caller sees them."""
    updates = []
    client = ScreeningClient(target, settings=settings) if settings else ScreeningClient(target)
    async for message in client.stream_file(path, speed=SPEED):
        if message.WhichOneof("kind") == "sentence":
            updates.append(Update.of(message.sentence))
    return updates


def chaos_run(flags: tuple[str, ...], log_path: Path, seed: int) -> tuple[int, int]:
    """The interviews, uninterrupted and then under `FAULTS` seeded faults; (sentences compared, faults)."""
    rng = random.Random(seed)
    grpc_port, http_port = free_port(), free_port()
    log = log_path.open("a")

    def start() -> LocalServer:
        return start_local_server(*flags, grpc_port=grpc_port, http_port=http_port, output=log)

    servers = [start()]

    async def run() -> tuple[list[list[Update]], list[list[Update]], list[str]]:
        target = servers[0].grpc_target
        expected = await asyncio.gather(*(interview(target, path) for path in RECORDINGS))
        relays = [CuttableRelay(grpc_port) for _ in RECORDINGS]
        ports = [await relay.start() for relay in relays]
        tasks = [
            asyncio.create_task(interview(f"127.0.0.1:{port}", path, QUICK))
            for port, path in zip(ports, RECORDINGS, strict=True)
        ]
        offsets = sorted(rng.uniform(0.2, FAULT_WINDOW_S) for _ in range(FAULTS))
        done: list[str] = []
        began = time.monotonic()
        for offset in offsets:
            await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
            if all(task.done() for task in tasks):
                break
            if rng.random() < 0.5:
                servers[-1].process.kill()  # SIGKILL: nothing is flushed or closed
                await asyncio.to_thread(servers[-1].process.wait)
                servers.append(await asyncio.to_thread(start))
                done.append(f"kill at {offset:.2f} s")
            else:
                which = rng.randrange(len(relays))
                relays[which].cut()
                done.append(f"cut interview {which} at {offset:.2f} s")
        resumed = await asyncio.gather(*tasks)
        for relay in relays:
            relay.close()
        return expected, resumed, done

    try:
        expected, resumed, done = asyncio.run(run())
    finally:
        for server in servers:
            server.stop()
        log.close()
    for which, (reference, got) in enumerate(zip(expected, resumed, strict=True)):
        try:
            assert_same_interview(reference, got)
        except AssertionError as error:
            raise AssertionError(
                f"chaos seed {seed} (rerun with DEPSCREEN_CHAOS_SEED={seed}); faults: {done}; interview {which} "
                f"({RECORDINGS[which].name}) differs from its uninterrupted run: {error}"
            ) from error
    return sum(len(u) for u in expected), len(done)


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("DEPSCREEN_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))


@pytest.fixture
def recordings() -> Iterator[None]:
    for path in RECORDINGS:
        if not path.exists():
            pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    yield


def test_chaos_over_sqlite(store_dir: Path, seed: int, recordings: None) -> None:  # noqa: F811
    flags = (*FLAGS, "--state-store", f"sqlite://{store_dir}/chaos-{seed}.db")
    compared, faults = chaos_run(flags, store_dir / f"chaos-sqlite-{seed}.log", seed)
    assert compared >= 15 and faults >= 1


def test_chaos_over_redis(store_dir: Path, redis_url: str, seed: int, recordings: None) -> None:  # noqa: F811
    compared, faults = chaos_run((*FLAGS, "--state-store", redis_url), store_dir / f"chaos-redis-{seed}.log", seed)
    assert compared >= 15 and faults >= 1
