"""Limits and lifecycle against a server with tight settings, over gRPC on loopback: stalls, capacity, disconnects,
quotas, and the video shedding policy (pacing and time limits on a virtual clock: `test_session_time.py`). The
server runs in-process on fake parts (`fakes.py`): these are the transport's and admission's rules, not the
models'."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from depscreen.clients.session import ScreeningClient
from depscreen.engine.media import decode_audio_file
from depscreen.localserver import read_counter
from depscreen.streamer.session import shed_video
from depscreen.streamer.settings import ServerSettings
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES
from .fakes import fake_parts
from .inprocess import ServerThread

START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
END = pb.ClientMessage(end=pb.SessionEnd())
CAPACITY_REFUSALS = 'depscreen_rejected_sessions_total{reason="capacity"}'
JFK = decode_audio_file(FIXTURES / "jfk.flac").tobytes()


def audio(data: bytes, chunk: int = 3200) -> list[pb.ClientMessage]:
    return [pb.ClientMessage(audio=pb.AudioChunk(data=data[i : i + chunk])) for i in range(0, len(data), chunk)]


@pytest.fixture(scope="module")
def tight() -> Iterator[ServerThread]:
    settings = ServerSettings(
        grpc_port=0, http_port=0, device="cpu", asr="none", stall_timeout_s=1.5, max_speed=4, burst_s=1, max_sessions=2
    )
    with ServerThread(settings, fake_parts()) as server:
        yield server


def wait_until_idle(server: ServerThread, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = server.metrics()
        if read_counter(metrics, "depscreen_sessions_active") == 0:
            return metrics
        time.sleep(0.1)
    raise AssertionError("sessions did not end")


def test_a_stalled_stream_is_finished_then_ended(tight: ServerThread) -> None:
    async def stall() -> AsyncIterator[pb.ClientMessage]:
        yield START
        for message in audio(JFK[: 32_000 * 4]):
            yield message
        await asyncio.sleep(30)

    async def run() -> tuple[list[pb.ServerMessage], grpc.aio.AioRpcError]:
        replies = []
        try:
            async for reply in ScreeningClient(tight.grpc_target).stream_messages(stall()):
                replies.append(reply)
        except grpc.aio.AioRpcError as error:
            return replies, error
        raise AssertionError("the stalled stream was not ended")

    replies, error = asyncio.run(run())
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "no message for 1.5 s" in error.details()
    assert replies[-1].WhichOneof("kind") == "summary", "the session was finished before the stream ended"
    assert replies[-1].summary.audio_seconds == pytest.approx(4.0)
    assert any(r.WhichOneof("kind") == "sentence" for r in replies), "the open sentence was closed and scored"
    metrics = wait_until_idle(tight)
    assert read_counter(metrics, "depscreen_state_pool_slots_used") == 0


async def _collect(stream: AsyncIterator[pb.ServerMessage]) -> list[pb.ServerMessage]:
    return [m async for m in stream]


def test_sessions_beyond_the_limit_are_refused_and_a_dropped_client_frees_its_slot(tight: ServerThread) -> None:
    async def hold(opened: asyncio.Event, release: asyncio.Event) -> AsyncIterator[pb.ClientMessage]:
        yield START
        for message in audio(JFK[: 32_000 * 3]):
            yield message
        opened.set()
        await release.wait()

    async def scenario() -> grpc.aio.AioRpcError:
        release = asyncio.Event()
        opened = [asyncio.Event(), asyncio.Event()]
        holders = [
            asyncio.ensure_future(_collect(ScreeningClient(tight.grpc_target).stream_messages(hold(o, release))))
            for o in opened
        ]
        await asyncio.gather(*(o.wait() for o in opened))
        await asyncio.sleep(0.3)
        try:
            await _collect(ScreeningClient(tight.grpc_target).stream_messages(_one(START)))
        except grpc.aio.AioRpcError as error:
            refused = error
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        return refused

    before = read_counter(tight.metrics(), CAPACITY_REFUSALS)
    refused = asyncio.run(scenario())
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 2 concurrent sessions" in refused.details()
    metrics = wait_until_idle(tight)
    assert read_counter(metrics, CAPACITY_REFUSALS) == before + 1
    assert read_counter(metrics, "depscreen_state_pool_slots_used") == 0


TENANT_A, TENANT_B = "tenant-a-token-0123456789", "tenant-b-token-0123456789"
AUDIO_GRACE_S = 8


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Two tenants' tokens, the default session share (half of the default 64 sessions) and a short audio grace."""
    tokens = tmp_path_factory.mktemp("shared") / "tokens"
    tokens.write_text(f"{TENANT_A}\n{TENANT_B}\n")
    settings = ServerSettings(
        grpc_port=0, http_port=0, device="cpu", asr="none", auth_tokens=str(tokens), audio_grace_s=AUDIO_GRACE_S
    )
    with ServerThread(settings, fake_parts()) as server:
        yield server


def test_one_token_cannot_take_every_slot_and_start_only_streams_lose_theirs(shared: ServerThread) -> None:
    """70 streams of one token that send `start` and nothing more: half the slots are theirs at most, another
    tenant's interview completes beside them, and each one admitted is ended once its audio is
    `audio_grace_s` behind `min_audio_speed`, as is a stream sending two bytes of audio every half second."""

    async def start_only() -> AsyncIterator[pb.ClientMessage]:
        yield START
        await asyncio.sleep(60)

    async def trickle() -> AsyncIterator[pb.ClientMessage]:
        yield START
        for _ in range(120):
            yield pb.ClientMessage(audio=pb.AudioChunk(data=b"\0\0"))
            await asyncio.sleep(0.5)

    async def outcome(token: str, messages: AsyncIterator[pb.ClientMessage], answered: asyncio.Event) -> tuple:
        kinds = []
        try:
            async for reply in ScreeningClient(shared.grpc_target, token=token).stream_messages(messages):
                kinds.append(reply.WhichOneof("kind"))
                answered.set()
        except grpc.aio.AioRpcError as error:
            answered.set()
            return kinds, error.code(), error.details()
        return kinds, grpc.StatusCode.OK, ""

    async def scenario() -> tuple[list[tuple], tuple, tuple, int]:
        answered = [asyncio.Event() for _ in range(70)]
        tenant_a = [asyncio.ensure_future(outcome(TENANT_A, start_only(), e)) for e in answered]
        slow = asyncio.ensure_future(outcome(TENANT_B, trickle(), asyncio.Event()))
        await asyncio.gather(*(e.wait() for e in answered))
        held = sum(1 for task in tenant_a if not task.done())
        other = await outcome(TENANT_B, _messages(START, *audio(JFK), END), asyncio.Event())
        return await asyncio.gather(*tenant_a), other, await slow, held

    before = shared.metrics()
    tenant_a, other, slow, held = asyncio.run(scenario())
    admitted = [o for o in tenant_a if o[0] == ["accepted", "summary"]]  # finished: the summary, then the error
    refused = [o for o in tenant_a if not o[0]]
    assert len(admitted) == 32 and len(refused) == 38 and held == 32
    for _, code, details in refused:
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 32 concurrent sessions" in details
        assert "max_sessions_per_token" in details
    assert other[0][0] == "accepted" and other[0][-1] == "summary" and other[1] == grpc.StatusCode.OK
    for _, code, details in [*admitted, slow]:
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "min_audio_speed" in details, details
    metrics = wait_until_idle(shared)
    quota = 'depscreen_rejected_sessions_total{reason="token_quota"}'
    assert read_counter(metrics, quota) - read_counter(before, quota) == 38
    starved = "depscreen_starved_sessions_total"
    assert read_counter(metrics, starved) - read_counter(before, starved) == 33


async def _messages(*messages: pb.ClientMessage) -> AsyncIterator[pb.ClientMessage]:
    for message in messages:
        yield message


async def _one(message: pb.ClientMessage) -> AsyncIterator[pb.ClientMessage]:
    yield message


@pytest.mark.parametrize(
    ("backlog", "since_last_ms", "shed"),
    [
        (0.0, 200, False),
        (0.5, 0, False),
        (1.5, 200, True),
        (1.5, 400, False),
        (2.5, 10_000, True),
    ],
)
def test_video_is_shed_in_steps(backlog: float, since_last_ms: float, shed: bool) -> None:
    assert shed_video(backlog, since_last_ms, ServerSettings()) is shed
