"""The live-source client API: sessions that send audio, frames and captions as they arrive and yield typed
updates (against a real server on loopback), bad input refused before sending, the threaded client, and the
resume protocol (statuses that resume, `received_sentences`, each index once, a stalled call) against a
scripted gRPC server on loopback that breaks streams exactly when a test says."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from depscreen.clients import (
    Accepted,
    ClientSettings,
    ScreeningClient,
    SentenceUpdate,
    ServerStalledError,
    SessionClosedError,
    SessionInputError,
    Summary,
    SyncScreeningClient,
)
from depscreen.clients.resumable import Backoff, resumable_status
from depscreen.localserver import LocalServer, start_local_server
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

from .conftest import FIXTURES
from .test_packaging import SERVER_FLAGS, pcm_48k

FAST = ClientSettings(first_backoff_s=0.01, max_backoff_s=0.05, reply_timeout_s=1.0, reconnect_s=20)
"""Settings of the scripted-server tests: quick reconnections, a short stall timeout."""
CHUNK = b"\x01\x00" * 1600
"""100 ms of 16 kHz mono audio."""


# ------------------------------------------------------------------------------------------------ units


def test_backoff_draws_each_wait_below_a_doubling_cap() -> None:
    top = Backoff(0.2, 5.0, draw=lambda: 1.0)
    assert [round(top.next_s(), 3) for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    top.reset()
    assert top.next_s() == pytest.approx(0.2)
    waits = [Backoff(0.2, 5.0).next_s() for _ in range(200)]
    assert all(0 <= wait <= 0.2 for wait in waits)
    assert len({round(wait, 4) for wait in waits}) > 150, "full jitter: clients do not reconnect in lockstep"


def status(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_statuses_that_leave_a_snapshot_resume() -> None:
    assert resumable_status(status(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert resumable_status(status(grpc.StatusCode.UNAVAILABLE, "the server is shutting down: resume"))
    assert resumable_status(status(grpc.StatusCode.DEADLINE_EXCEEDED, "stalled"))
    assert resumable_status(status(grpc.StatusCode.INTERNAL, "Stream removed (RST_STREAM error code 2)"))
    assert resumable_status(status(grpc.StatusCode.INTERNAL, "Internal error from Core")), "grpc/grpc#36066"
    assert resumable_status(ServerStalledError("quiet"))
    assert not resumable_status(status(grpc.StatusCode.INTERNAL, "a bug"))
    assert not resumable_status(status(grpc.StatusCode.INVALID_ARGUMENT, "bad audio"))
    assert not resumable_status(status(grpc.StatusCode.FAILED_PRECONDITION, "unknown resume token"))
    assert not resumable_status(ValueError("not a status"))


def test_client_settings_refuse_unusable_values_and_set_keepalive() -> None:
    options = dict(ClientSettings().channel_options())
    assert options["grpc.keepalive_time_ms"] == 15_000 and options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.http2.ping_timeout_ms"] == 10_000
    with pytest.raises(ValueError, match="reply_timeout_s must be positive"):
        ClientSettings(reply_timeout_s=0)
    with pytest.raises(ValueError, match="max_backoff_s"):
        ClientSettings(first_backoff_s=2, max_backoff_s=1)


# ------------------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real server with a SQLite store (so it grants resume tokens), no ASR, no pacing."""
    folder = tmp_path_factory.mktemp("client-api")
    with (folder / "server.log").open("w") as log:
        server = start_local_server(*SERVER_FLAGS, "--state-store", f"sqlite://{folder}/store.db", output=log)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def interview_48k() -> bytes:
    return pcm_48k(FIXTURES / "jfk.flac")


def test_a_live_session_sends_audio_frames_and_captions_and_yields_typed_updates(
    real_server: LocalServer, interview_48k: bytes
) -> None:
    async def interview() -> tuple[list[object], list[str]]:
        refusals = []
        async with (
            ScreeningClient(real_server.grpc_target) as client,
            client.session(sample_rate_hz=48_000, language="en") as session,
        ):
            bad_inputs: list[Callable[[], Awaitable[None]]] = [
                lambda: session.send_audio(np.zeros(480, dtype=np.float32)),
                lambda: session.send_audio(b"\x00" * 3),
                lambda: session.send_frame(b"\xff\xd8", format=pb.IMAGE_FORMAT_UNSPECIFIED),
                lambda: session.send_frame(b"\x00" * 10, format="rgb24", width=4, height=4),
                lambda: session.send_caption("hi", start_ms=500, end_ms=100),
            ]
            for bad in bad_inputs:
                with pytest.raises(SessionInputError) as refused:
                    await bad()
                refusals.append(str(refused.value))
            grey = bytes(8 * 6 * 3)
            for offset in range(0, len(interview_48k), 9_600):  # 100 ms chunks
                await session.send_audio(np.frombuffer(interview_48k[offset : offset + 9_600], dtype="<i2"))
                if offset % 96_000 == 0:
                    await session.send_frame(grey, format="rgb24", width=8, height=6)
            await session.send_caption("and so my fellow Americans", start_ms=0, end_ms=3_000)
            await session.end()
            updates = [update async for update in session.updates()]
            with pytest.raises(SessionClosedError, match="the session has ended"):
                await session.send_audio(b"\x00\x00")
        return updates, refusals

    updates, refusals = asyncio.run(interview())
    assert "16-bit PCM" in refusals[0] and "32-bit" in refusals[0]
    assert "3 bytes is not whole 16-bit frames" in refusals[1]
    assert "a frame needs its format" in refusals[2]
    assert "width*height*3" in refusals[3]
    assert "start_ms <= end_ms" in refusals[4]
    assert isinstance(updates[0], Accepted) and updates[0].resumable and not updates[0].resumed
    assert isinstance(updates[-1], Summary)
    sentences = [update for update in updates if isinstance(update, SentenceUpdate)]
    assert [s.index for s in sentences] == list(range(len(sentences))) and len(sentences) >= 2
    assert all(0 <= s.probability <= 1 and s.end_ms > s.start_ms for s in sentences)
    assert updates[-1].sentences == len(sentences)
    assert updates[-1].audio_seconds == pytest.approx(len(interview_48k) / 96_000, abs=0.05)
    for s in sentences:  # the interval crossed the wire with each estimate
        if s.interval.enough_speech:
            assert s.interval.low <= s.probability <= s.interval.high and s.interval.words() != "not enough speech yet"
        else:
            assert (s.interval.low, s.interval.high) == (0.0, 1.0) and s.interval.words() == "not enough speech yet"
    assert updates[-1].interval == sentences[-1].interval


def test_the_threaded_client_sends_from_one_thread_and_reads_in_another(
    real_server: LocalServer, interview_48k: bytes
) -> None:
    with SyncScreeningClient(real_server.grpc_target) as client, client.session(sample_rate_hz=48_000) as session:

        def capture() -> None:
            for offset in range(0, len(interview_48k), 9_600):
                session.send_audio(interview_48k[offset : offset + 9_600])
            session.end()

        sender = threading.Thread(target=capture)
        sender.start()
        kinds = [type(update).__name__ for update in session.updates()]
        sender.join()
    assert kinds[0] == "Accepted" and kinds[-1] == "Summary" and kinds.count("SentenceUpdate") >= 2


def test_a_session_needs_an_open_client(real_server: LocalServer) -> None:
    with pytest.raises(SessionClosedError, match="open the client first"):
        ScreeningClient(real_server.grpc_target).session()


# ------------------------------------------------------------------------------- a scripted server

Script = Callable[[int, pb.SessionStart, AsyncIterator[pb.ClientMessage], grpc.aio.ServicerContext], Awaitable[None]]


class ScriptedScreening(screening_pb2_grpc.ScreeningServicer):
    """A `Screening` service whose every stream runs `script(attempt, start, requests, context)`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.starts: list[pb.SessionStart] = []

    async def StreamSession(self, requests: AsyncIterator[pb.ClientMessage], context: grpc.aio.ServicerContext) -> None:
        await context.send_initial_metadata(())  # as the real server does once the stream is authenticated
        first = await anext(requests)
        self.starts.append(first.start)
        await self.script(len(self.starts), first.start, requests, context)


async def scripted_session(
    script: Script, settings: ClientSettings = FAST, chunks: int = 30, pace_s: float = 0.0, **options: object
) -> tuple[list, list]:
    """Run one client session (`chunks` of 100 ms audio, one each `pace_s`, then end) against a scripted
    server; (updates, starts)."""
    service = ScriptedScreening(script)
    server = grpc.aio.server()
    screening_pb2_grpc.add_ScreeningServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with (
            ScreeningClient(f"127.0.0.1:{port}", settings=settings) as client,
            client.session(**options) as session,
        ):

            async def capture() -> None:
                for _ in range(chunks):
                    await session.send_audio(CHUNK)
                    await asyncio.sleep(pace_s)
                await session.end()

            sender = asyncio.create_task(capture())
            try:
                updates = [update async for update in session.updates()]
            finally:
                sender.cancel()
        return updates, service.starts
    finally:
        await server.stop(0)


def accepted(resume_from_ms: int = 0) -> pb.ServerMessage:
    return pb.ServerMessage(
        accepted=pb.SessionAccepted(session_id="s", resume_token="t", resume_from_ms=resume_from_ms)
    )


def sentence(index: int) -> pb.ServerMessage:
    return pb.ServerMessage(sentence=pb.SentenceUpdate(index=index, start_ms=index * 100, end_ms=index * 100 + 90))


async def read_to_end(requests: AsyncIterator[pb.ClientMessage]) -> int:
    """Read the stream up to `end`; the audio bytes read."""
    audio = 0
    async for message in requests:
        if message.WhichOneof("kind") == "end":
            break
        audio += len(message.audio.data)
    return audio


def test_every_status_that_leaves_a_snapshot_is_resumed_and_each_index_is_seen_once() -> None:
    breaks = [
        (grpc.StatusCode.UNAVAILABLE, "the server is shutting down: resume the session"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "the stream stalled"),
        (grpc.StatusCode.INTERNAL, "Stream removed (RST_STREAM error code 2)"),
    ]
    audio_read = []

    async def script(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        await context.write(accepted(resume_from_ms=0 if attempt <= len(breaks) else 390))
        for index in range(max(0, attempt - 2), attempt + 1):  # re-sends one update the client already has
            await context.write(sentence(index))
        if attempt <= len(breaks):
            await read_to_end(requests)  # a status racing a write would be reported as INTERNAL (grpc/grpc#36066)
            await context.abort(*breaks[attempt - 1])
        audio_read.append(await read_to_end(requests))
        await context.write(pb.ServerMessage(summary=pb.SessionSummary(sentences=attempt + 1)))

    updates, starts = asyncio.run(scripted_session(script))
    assert [type(u).__name__ for u in updates].count("Accepted") == 4
    assert [u.resumed for u in updates if isinstance(u, Accepted)] == [False, True, True, True]
    assert [u.index for u in updates if isinstance(u, SentenceUpdate)] == [0, 1, 2, 3, 4]
    assert isinstance(updates[-1], Summary)
    assert not starts[0].HasField("received_sentences") and not starts[0].resume_token
    assert [s.received_sentences for s in starts[1:]] == [2, 3, 4], "the updates the client already holds"
    assert all(s.resume_token == "t" for s in starts[1:])
    assert audio_read == [30 * len(CHUNK) - 390 * 32], "re-sent from resume_from_ms (the end of sentence 3)"


def test_a_refusal_or_a_session_without_resume_ends_with_its_status() -> None:
    async def refuse(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        await context.write(accepted())
        await read_to_end(requests)  # a status racing a write would be reported as INTERNAL (grpc/grpc#36066)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audio chunk too large")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(scripted_session(refuse))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "audio chunk too large"

    async def drop(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        await context.write(accepted())
        await read_to_end(requests)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")

    with pytest.raises(grpc.aio.AioRpcError) as dropped:
        asyncio.run(scripted_session(drop, resume=False))
    assert dropped.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_server_quiet_while_the_client_sends_or_that_never_accepts_is_left_and_the_session_resumed() -> None:
    async def script(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        if attempt == 1:
            await context.write(accepted())
            await asyncio.sleep(60)  # hung: sends nothing more
        if attempt == 2:
            await asyncio.sleep(60)  # hung before it accepts the resume
        await context.write(accepted())
        chunks = 0
        async for message in requests:  # a working server: an update every 5 chunks (0.25 s)
            if message.WhichOneof("kind") == "end":
                break
            chunks += 1
            if chunks % 5 == 0:
                await context.write(sentence(chunks // 5 - 1))
        await context.write(pb.ServerMessage(summary=pb.SessionSummary()))

    settings = ClientSettings(first_backoff_s=0.01, max_backoff_s=0.05, reply_timeout_s=1.0, reconnect_s=20)

    async def timed() -> tuple[list, list, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        updates, starts = await scripted_session(script, settings, chunks=80, pace_s=0.05)  # a live source
        return updates, starts, loop.time() - started

    updates, starts, elapsed_s = asyncio.run(timed())
    assert len(starts) == 3 and isinstance(updates[-1], Summary)
    assert elapsed_s < 15, f"two stalls of 1 s each took {elapsed_s:.1f} s to get past"


def test_a_stall_without_resume_raises_server_stalled() -> None:
    async def hang(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        await asyncio.sleep(60)

    with pytest.raises(ServerStalledError, match="sent nothing for 1 s while the client was sending"):
        asyncio.run(scripted_session(hang, resume=False))


def test_stream_file_uses_the_same_session(real_server: LocalServer, tmp_path: Path) -> None:
    async def stream() -> list[str]:
        async with ScreeningClient(real_server.grpc_target) as client:
            kinds = []
            async for message in client.stream_file(FIXTURES / "jfk.flac", speed=0, video=False):
                kinds.append(message.WhichOneof("kind"))
            return kinds

    kinds = asyncio.run(stream())
    assert kinds[0] == "accepted" and kinds[-1] == "summary" and "sentence" in kinds


def test_a_new_session_broken_before_it_is_accepted_is_opened_again_afresh() -> None:
    """The server took `start` and the stream broke before `accepted` reached the client: nothing but `start`
    went out and no token came back, so the client opens the session again, without a token."""

    async def script(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        if attempt == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")
        await context.write(accepted())
        await read_to_end(requests)
        await context.write(sentence(0))
        await context.write(pb.ServerMessage(summary=pb.SessionSummary(sentences=1)))

    updates, starts = asyncio.run(scripted_session(script))
    assert [type(u).__name__ for u in updates] == ["Reconnecting", "Accepted", "SentenceUpdate", "Summary"]
    assert len(starts) == 2 and not starts[1].resume_token and not starts[1].HasField("received_sentences")
