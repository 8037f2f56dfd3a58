"""Hostile input against a real server: random and mutated wire messages (hypothesis), a thousand streams
opened and dropped, and the limits on session duration and video rate.

While the fuzzing runs, a good interview streams again and again alongside and must come out exactly as it
does alone. Afterwards the server is still SERVING, has no session left, logged no traceback, and its
memory grew by a bounded amount.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depscreen.clients.session import ScreeningClient
from depscreen.engine.media import decode_audio_file
from depscreen.localserver import LocalServer, start_local_server
from depscreen.streamer.settings import ServerSettings
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES
from .fakes import fake_parts
from .inprocess import ServerThread
from .test_protocol import assert_unharmed, collect, comparable

METHOD = "/depscreen.v1.Screening/StreamSession"
START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
END = pb.ClientMessage(end=pb.SessionEnd())
ENDED_CLEANLY_OR_REFUSED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""What a hostile stream may get: a protocol verdict, never UNKNOWN (a crashed handler) or INTERNAL."""
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DROPPED_STREAMS = 1000
RSS_GROWTH_LIMIT_MB = 250
"""Memory the server may gain over the whole fuzzing: allocator caches and warmed-up buffers, not a leak of
a thousand sessions."""


def _jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((96, 128, 3), 128, np.uint8))
    assert ok
    return encoded.tobytes()


JPEG = _jpeg()
JFK_PCM = decode_audio_file(FIXTURES / "jfk.flac").tobytes()


# Hand-encoded protobuf, to send what the generated classes refuse to build (non-UTF-8 strings)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def raw_caption(start_ms: int, end_ms: int, text: bytes) -> bytes:
    """ClientMessage{caption: Caption{start_ms, end_ms, text}} with `text` as raw bytes (UTF-8 or not)."""
    caption = varint(1 << 3) + varint(start_ms) + varint(2 << 3) + varint(end_ms) + length_delimited(3, text)
    return length_delimited(4, caption)


# Strategies

int64 = st.integers(-(2**63), 2**63 - 1)
uint32 = st.integers(0, 2**32 - 1)


def message(**fields: object) -> bytes:
    return pb.ClientMessage(**fields).SerializeToString()


starts = st.builds(
    lambda rate, channels, session_id, language, resume: message(
        start=pb.SessionStart(
            audio=pb.AudioFormat(sample_rate_hz=rate, channels=channels),
            session_id=session_id,
            language=language,
            resume_token=resume,
        )
    ),
    st.one_of(st.sampled_from([8000, 16_000, 44_100, 48_000]), uint32),
    st.one_of(st.just(1), st.integers(0, 300)),
    st.one_of(st.just(""), st.text(max_size=200)),
    st.one_of(st.just("en"), st.text(max_size=40)),
    st.one_of(st.just(""), st.text(max_size=10)),
)
float_audio = st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=4000).map(
    lambda values: struct.pack(f"<{len(values)}f", *values)
)
audio = st.one_of(st.binary(max_size=16_000), float_audio).map(lambda data: message(audio=pb.AudioChunk(data=data)))
images = st.one_of(
    st.binary(max_size=2000),
    st.integers(0, len(JPEG)).map(lambda n: JPEG[:n]),
    st.integers(0, len(JPEG) - 1).map(lambda n: JPEG[:n] + bytes([JPEG[n] ^ 0xFF]) + JPEG[n + 1 :]),
    st.integers(1_000_000, MAX_MESSAGE_BYTES - 1024).map(lambda n: JPEG[:200] + bytes(n) + b"\xff\xd9"),
)
video = st.builds(
    lambda ts, image, fmt, width, height: message(
        video=pb.VideoFrame(timestamp_ms=ts, image=image, format=fmt, width=width, height=height)
    ),
    st.one_of(st.integers(0, 60_000), int64),
    images,
    st.integers(0, 8),
    st.one_of(st.integers(0, 200), uint32),
    st.one_of(st.integers(0, 200), uint32),
)
captions = st.one_of(
    st.builds(
        lambda start, end, text: message(caption=pb.Caption(start_ms=start, end_ms=end, text=text)),
        int64,
        int64,
        st.one_of(st.text(max_size=300), st.integers(0, 500_000).map(lambda n: "word " * n)),
    ),
    st.builds(raw_caption, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=500)),
)
valid_messages = st.one_of(starts, audio, video, captions, st.just(END.SerializeToString()), st.just(b""))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with bytes flipped, cut off or inserted."""
    data = bytearray(draw(valid_messages))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        else:
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


streams = st.tuples(
    st.one_of(st.just(START.SerializeToString()), starts, mutated()),
    st.lists(st.one_of(valid_messages, mutated()), max_size=10),
).map(lambda pair: [pair[0], *pair[1]])


# The server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, Path]]:
    log_path = tmp_path_factory.mktemp("fuzz") / "server.log"
    with log_path.open("w") as log:
        server = start_local_server(
            "--device", "cpu", "--asr", "none", "--max-sessions", "256", "--stall-timeout-s", "5",
            "--max-message-bytes", str(MAX_MESSAGE_BYTES), output=log,
        )  # fmt: skip
    yield server, log_path
    server.stop()


def send_raw(channel: grpc.Channel, payloads: list[bytes]) -> tuple[grpc.StatusCode, str]:
    """Stream already-encoded messages (anything at all); the status and details the server ended with.

    The synchronous API stops sending once the server has ended the call, so the status is the server's
    (an asyncio client's write racing the server's status would turn it into a local INTERNAL)."""
    call = channel.stream_stream(METHOD, request_serializer=lambda data: data, response_deserializer=lambda data: data)
    try:
        for _ in call(iter(payloads), timeout=120):
            pass
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


async def open_and_drop(target: str, variant: int) -> None:
    """A client that vanishes: before `start`, after it, or in the middle of its audio (unless refused)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(
            METHOD,
            request_serializer=pb.ClientMessage.SerializeToString,
            response_deserializer=pb.ServerMessage.FromString,
        )()
        await call.initial_metadata()
        if variant % 3:
            await call.write(START)
            try:
                await call.read()
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error  # at capacity: refused, fine
                return
        if variant % 3 == 2:
            for offset in range(0, 32_000, 3200):
                await call.write(pb.ClientMessage(audio=pb.AudioChunk(data=JFK_PCM[offset : offset + 3200])))
        call.cancel()


async def drop_many(target: str, count: int, concurrency: int = 50) -> None:
    for first in range(0, count, concurrency):
        await asyncio.gather(*(open_and_drop(target, i) for i in range(first, min(count, first + concurrency))))


def rss_mb(server: LocalServer) -> float:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def healthz(server: LocalServer) -> dict:
    return json.loads(server.get("/healthz"))


def good_interview(server: LocalServer) -> list[pb.ServerMessage]:
    client = ScreeningClient(server.grpc_target)
    return asyncio.run(collect(client.stream_file(FIXTURES / "jfk.flac", speed=4, disable_asr=True)))


class Alongside(threading.Thread):
    """Streams the good interview over and over until stopped, keeping every result."""

    def __init__(self, server: LocalServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.results: list[list[pb.ServerMessage]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.results.append(good_interview(self.server))


def test_hostile_streams_leave_the_server_and_other_sessions_unharmed(fuzz_server) -> None:
    server, log_path = fuzz_server
    reference = good_interview(server)
    assert reference[-1].WhichOneof("kind") == "summary" and comparable(reference)
    rss_before = rss_mb(server)
    alongside = Alongside(server)
    alongside.start()
    verdicts: dict[grpc.StatusCode, int] = {}

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(streams)
    def hostile_stream(payloads: list[bytes]) -> None:
        code, details = send_raw(channel, payloads)
        verdicts[code] = verdicts.get(code, 0) + 1
        assert code in ENDED_CLEANLY_OR_REFUSED, (code, details)
        assert code != grpc.StatusCode.DEADLINE_EXCEEDED or "no message for" in details, "the server hung"

    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            hostile_stream()
        asyncio.run(drop_many(server.grpc_target, DROPPED_STREAMS))
        while not alongside.results:
            time.sleep(0.2)
    finally:
        alongside.stopping.set()
        alongside.join(timeout=120)

    assert len(verdicts) >= 3, f"the fuzzing hit too few paths: {verdicts}"
    for result in alongside.results:
        assert_unharmed(result, reference)
        assert result[-1].WhichOneof("kind") == "summary"
    deadline = time.monotonic() + 60
    while healthz(server)["sessions_active"] != 0:
        assert time.monotonic() < deadline, "sessions were left behind"
        time.sleep(0.2)
    with grpc.insecure_channel(server.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert "Traceback" not in log_path.read_text(), "a hostile stream raised an unhandled exception"
    assert rss_mb(server) - rss_before < RSS_GROWTH_LIMIT_MB


# Limits


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with (tmp_path_factory.mktemp("limited") / "server.log").open("w") as log:
        server = start_local_server(
            "--device", "cpu", "--asr", "none", "--max-session-s", "3", output=log
        )  # fmt: skip
    yield server
    server.stop()


async def replies_and_error(
    server: LocalServer | ServerThread, messages: AsyncIterator[pb.ClientMessage]
) -> tuple[list[pb.ServerMessage], grpc.aio.AioRpcError | None]:
    replies: list[pb.ServerMessage] = []
    try:
        async for reply in ScreeningClient(server.grpc_target).stream_messages(messages):
            replies.append(reply)
    except grpc.aio.AioRpcError as error:
        return replies, error
    return replies, None


def test_a_session_past_its_duration_limit_is_finished_and_ended(limited: LocalServer) -> None:
    async def real_time() -> AsyncIterator[pb.ClientMessage]:
        yield START
        for offset in range(0, len(JFK_PCM), 3200):
            yield pb.ClientMessage(audio=pb.AudioChunk(data=JFK_PCM[offset : offset + 3200]))
            await asyncio.sleep(0.1)
        yield END

    replies, error = asyncio.run(replies_and_error(limited, real_time()))
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 3 s" in error.details()
    assert replies[-1].WhichOneof("kind") == "summary", "the session was finished before it was ended"
    assert 0 < replies[-1].summary.audio_seconds < 11.0


def test_a_silent_session_is_ended_at_its_duration_limit_too(limited: LocalServer) -> None:
    async def silent() -> AsyncIterator[pb.ClientMessage]:
        yield START
        await asyncio.sleep(30)

    replies, error = asyncio.run(replies_and_error(limited, silent()))
    assert (
        error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 3 s" in error.details()
    )
    assert replies[-1].WhichOneof("kind") == "summary"


@pytest.fixture(scope="module")
def video_limited() -> Iterator[ServerThread]:
    """A server allowing 10 video frames per second of audio, without `limited`'s 3 s session limit: that limit
    is wall-clock time, which a loaded machine can spend before the frames are counted."""
    settings = ServerSettings(grpc_port=0, http_port=0, device="cpu", asr="none", max_video_fps=10)
    with ServerThread(settings, fake_parts()) as server:
        yield server


def test_video_faster_than_the_limit_ends_the_stream(video_limited: ServerThread) -> None:
    def frames(count: int, spacing_ms: int) -> list[pb.ClientMessage]:
        return [
            pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=i * spacing_ms, image=JPEG, format=pb.JPEG))
            for i in range(count)
        ]

    one_second = [pb.ClientMessage(audio=pb.AudioChunk(data=JFK_PCM[i : i + 3200])) for i in range(0, 32_000, 3200)]

    async def within(count: int) -> AsyncIterator[pb.ClientMessage]:
        for item in [START, *one_second, *frames(count, 10), END]:
            yield item

    replies, error = asyncio.run(replies_and_error(video_limited, within(30)))
    assert error is None and replies[-1].WhichOneof("kind") == "summary", "10 fps x (1 s of audio + 2 s ahead)"
    replies, error = asyncio.run(replies_and_error(video_limited, within(31)))
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "faster than 10 frames per second" in error.details()
