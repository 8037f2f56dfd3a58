"""The client against a real server that breaks mid-interview (a subprocess on loopback, one SQLite store):
killed with SIGKILL and restarted, or hung with SIGSTOP and continued. The session resumes by default and the
caller sees every sentence index exactly once; a hung server is noticed within the client's reply timeout
(shortened here; README, "Client API", for the defaults and the figures measured with them)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from depscreen.clients import Accepted, ClientSettings, ScreeningClient, SentenceUpdate, Summary
from depscreen.localserver import LocalServer, free_port, start_local_server

from .conftest import FIXTURES
from .test_packaging import SERVER_FLAGS

BREAK_AFTER = 3
"""Sentences received before the server is broken."""
QUICK = ClientSettings(reply_timeout_s=3.0, first_backoff_s=0.1, max_backoff_s=1.0)
"""The reply timeout shortened so that the test is quick; everything else as shipped."""
DETECTION_LIMIT_S = 30.0
"""A hung server must be noticed within this (issue: liveness), here with the shortened timeout."""


class Breaks(logging.Handler):
    """When the client logged each break it noticed (monotonic seconds) and what it said."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.noticed: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.noticed.append((time.monotonic(), record.getMessage()))


@pytest.fixture
def breaks() -> Iterator[Breaks]:
    handler = Breaks()
    logger = logging.getLogger("depscreen.clients")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, Path]:
    return f"sqlite://{tmp_path}/store.db", tmp_path / "server.log"


def start_server(store_url: str, log_path: Path, grpc_port: int, http_port: int) -> LocalServer:
    with log_path.open("a") as log:
        return start_local_server(
            *SERVER_FLAGS, "--state-store", store_url, grpc_port=grpc_port, http_port=http_port, output=log
        )


async def interview(target: str, on_sentence: Callable[[int], object]) -> list[object]:
    """Stream the jfk recording twice over (audio only, 4x real time) with the default resume; the updates."""
    updates: list[object] = []
    async with ScreeningClient(target, settings=QUICK) as client, client.session() as session:
        pcm = await asyncio.to_thread(_pcm_16k, FIXTURES / "jfk.flac")

        async def capture() -> None:
            for _ in range(2):
                for offset in range(0, len(pcm), 3_200):  # 100 ms chunks every 25 ms
                    await session.send_audio(pcm[offset : offset + 3_200])
                    await asyncio.sleep(0.025)
            await session.end()

        sender = asyncio.create_task(capture())
        try:
            async for update in session.updates():
                updates.append(update)
                if isinstance(update, SentenceUpdate):
                    await on_sentence(sum(isinstance(u, SentenceUpdate) for u in updates))
        finally:
            sender.cancel()
    return updates


def _pcm_16k(path: Path) -> bytes:
    import av
    from av.audio.resampler import AudioResampler

    resampler = AudioResampler(format="s16", layout="mono", rate=16_000)
    with av.open(str(path)) as container:
        return b"".join(out.to_ndarray().tobytes() for f in container.decode(audio=0) for out in resampler.resample(f))


def assert_every_index_once(updates: list[object]) -> list[int]:
    indices = [u.index for u in updates if isinstance(u, SentenceUpdate)]
    assert indices == list(range(len(indices))), f"each index exactly once, none missing: {indices}"
    assert isinstance(updates[-1], Summary) and updates[-1].sentences == len(indices)
    return indices


def test_a_killed_and_restarted_server_loses_no_sentence(store: tuple[str, Path], breaks: Breaks) -> None:
    grpc_port, http_port = free_port(), free_port()
    servers = [start_server(*store, grpc_port, http_port)]
    restarted: list[asyncio.Future] = []

    async def kill(count: int) -> None:
        if count == BREAK_AFTER:
            servers[0].process.kill()  # SIGKILL: nothing is flushed or closed
            servers[0].process.wait()
            restarted.append(asyncio.ensure_future(asyncio.to_thread(start_server, *store, grpc_port, http_port)))

    async def run() -> list[object]:
        updates = await interview(servers[0].grpc_target, kill)
        servers.append(await restarted[0])
        return updates

    try:
        updates = asyncio.run(run())
        indices = assert_every_index_once(updates)
        accepted = [u for u in updates if isinstance(u, Accepted)]
        assert accepted[0].resumable and accepted[-1].resumed and len(indices) > BREAK_AFTER
        assert breaks.noticed, "the break was noticed and resumed"
    finally:
        for server in servers:
            server.stop()


def test_a_hung_server_is_noticed_and_the_session_resumed_once_it_continues(
    store: tuple[str, Path], breaks: Breaks
) -> None:
    server = start_server(*store, free_port(), free_port())
    stopped_at: list[float] = []

    async def hang(count: int) -> None:
        if count == BREAK_AFTER:
            os.kill(server.process.pid, signal.SIGSTOP)
            stopped_at.append(time.monotonic())
            asyncio.get_running_loop().call_later(
                QUICK.reply_timeout_s + 3, os.kill, server.process.pid, signal.SIGCONT
            )

    try:
        updates = asyncio.run(interview(server.grpc_target, hang))
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
    assert_every_index_once(updates)
    noticed_s = breaks.noticed[0][0] - stopped_at[0]
    assert "sent nothing for 3 s" in breaks.noticed[0][1]
    assert noticed_s < DETECTION_LIMIT_S and noticed_s < QUICK.reply_timeout_s + 2, f"noticed after {noticed_s:.1f} s"
