"""The client's typed errors, checks and signals: statuses raised as the error class that says what to do (from
the async and the threaded client alike), the server's retry hint read without grpcio-status, a refused resume
as `ResumeLostError`, reconnections announced by a `Reconnecting` update, `start` parameters refused before
anything is sent, notices with stable codes, the server's versions, and one-line reprs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

import depscreen
from depscreen.clients import (
    Accepted,
    InvalidInputError,
    Notice,
    Reconnecting,
    RefusedError,
    ResumeLostError,
    ScreeningClient,
    ScreeningError,
    SentenceUpdate,
    ServerStalledError,
    SessionInputError,
    StatusError,
    Summary,
    SyncScreeningClient,
    UnauthenticatedError,
    UnavailableError,
)
from depscreen.clients.errors import retry_after_s
from depscreen.streamer.settings import ServerSettings
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

from .fakes import fake_parts
from .inprocess import ServerThread
from .test_client_api import CHUNK, FAST, ScriptedScreening, accepted, read_to_end, scripted_session, sentence


def status_details(code: grpc.StatusCode, retry_s: float) -> tuple[tuple[str, bytes], ...]:
    """The trailer a server sends with a `google.rpc.RetryInfo` (built with googleapis' own classes)."""
    status = status_pb2.Status(code=code.value[0], message="full")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_s))))
    return (("grpc-status-details-bin", status.SerializeToString()),)


def test_each_status_is_raised_as_the_class_that_says_what_to_do() -> None:
    expected = {
        grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
        grpc.StatusCode.PERMISSION_DENIED: UnauthenticatedError,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
        grpc.StatusCode.FAILED_PRECONDITION: InvalidInputError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: RefusedError,
        grpc.StatusCode.UNAVAILABLE: UnavailableError,
        grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
        grpc.StatusCode.INTERNAL: StatusError,
        grpc.StatusCode.CANCELLED: StatusError,
    }
    for code, kind in expected.items():
        raw = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "why")
        typed = StatusError.of(raw)
        assert type(typed) is kind and (typed.code(), typed.details()) == (code, "why"), code
        assert isinstance(typed, ScreeningError) and isinstance(typed, grpc.aio.AioRpcError)
        assert str(typed) == f"{code.name}: why" and "\n" not in repr(typed)
        assert typed.retry_after_s is None
    assert issubclass(SessionInputError, InvalidInputError) and issubclass(SessionInputError, ValueError)
    assert issubclass(ServerStalledError, UnavailableError) and issubclass(ServerStalledError, ConnectionError)


def test_the_retry_hint_is_read_from_the_status_details_trailer() -> None:
    trailer = grpc.aio.Metadata(*status_details(grpc.StatusCode.RESOURCE_EXHAUSTED, 10))
    assert retry_after_s(trailer) == 10.0
    assert retry_after_s(grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\xff not a status"))) is None
    assert retry_after_s(grpc.aio.Metadata(("other-bin", b""))) is None


async def refuse_with_a_hint(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "server is full: retry in 10 s",
        trailing_metadata=status_details(grpc.StatusCode.RESOURCE_EXHAUSTED, 10),
    )


def test_a_refusal_is_a_refused_error_with_its_wait_from_the_async_client() -> None:
    with pytest.raises(RefusedError) as refused:
        asyncio.run(scripted_session(refuse_with_a_hint))
    assert refused.value.retry_after_s == 10.0 and "server is full" in refused.value.details()


@pytest.fixture()
def scripted_server_thread() -> Iterator[str]:
    """The refusing scripted server on a loop of its own thread (for the threaded client); its target."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        screening_pb2_grpc.add_ScreeningServicer_to_server(ScriptedScreening(refuse_with_a_hint), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_the_threaded_client_raises_the_same_typed_refusal(scripted_server_thread: str) -> None:
    with SyncScreeningClient(scripted_server_thread) as client, pytest.raises(RefusedError) as refused:  # noqa: SIM117
        with client.session() as session:
            session.send_audio(CHUNK)
            session.end()
            list(session.updates())
    assert refused.value.retry_after_s == 10.0


def test_a_refused_resume_is_resume_lost_and_each_reconnection_is_announced() -> None:
    seen: list[object] = []

    async def script(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        if attempt == 1:
            await context.write(accepted())
            await context.write(sentence(0))
            await read_to_end(requests)  # a status racing a write would be reported as INTERNAL (grpc/grpc#36066)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down: resume the session")
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "start.resume_token leads to no resumable session")

    async def run() -> None:
        service = ScriptedScreening(script)
        server = grpc.aio.server()
        screening_pb2_grpc.add_ScreeningServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with ScreeningClient(f"127.0.0.1:{port}", settings=FAST) as client, client.session() as session:
                for _ in range(5):
                    await session.send_audio(CHUNK)
                await session.end()
                async for update in session.updates():
                    seen.append(update)
        finally:
            await server.stop(0)

    with pytest.raises(ResumeLostError, match="leads to no resumable session"):
        asyncio.run(run())
    assert [type(update) for update in seen] == [Accepted, SentenceUpdate, Reconnecting]
    reconnecting = seen[2]
    assert isinstance(reconnecting, Reconnecting) and reconnecting.attempt == 1
    assert isinstance(reconnecting.error, UnavailableError) and 0 <= reconnecting.wait_s <= FAST.max_backoff_s


def test_a_session_without_resume_raises_the_break_as_unavailable() -> None:
    async def drop(attempt: int, start: pb.SessionStart, requests: AsyncIterator, context: object) -> None:
        await context.write(accepted())
        await read_to_end(requests)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")

    with pytest.raises(UnavailableError, match="going away"):
        asyncio.run(scripted_session(drop, resume=False))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample_rate_hz": 44}, "sample_rate_hz=44 is not supported: use 8000-48000 Hz"),
        ({"sample_rate_hz": 96_000}, "sample_rate_hz=96000 is not supported"),
        ({"channels": 3}, "channels=3 is not supported: send mono"),
        ({"channels": 0}, "channels=0 is not supported"),
        ({"language": "english please"}, "is not a BCP-47 language tag"),
        ({"language": "e"}, "is not a BCP-47 language tag"),
        ({"session_id": "x" * 129}, "session_id has 129 characters; the limit is 128"),
        ({"session_id": "a\nb"}, "unprintable"),
    ],
)
def test_start_parameters_are_refused_before_anything_is_sent(options: dict, message: str) -> None:
    async def open_session() -> None:
        async with ScreeningClient("127.0.0.1:1") as client:
            client.session(**options)

    with pytest.raises(SessionInputError, match=message):
        asyncio.run(open_session())
    with SyncScreeningClient("127.0.0.1:1") as client, pytest.raises(SessionInputError, match=message):
        client.session(**options)


def test_accepted_says_the_versions_and_coded_notices_and_updates_print_on_one_line() -> None:
    """On an in-process server on fake parts whose recogniser knows English only."""

    async def interview(target: str) -> list[object]:
        async with (
            ScreeningClient(target) as client,
            client.session(language="tlh") as session,  # no recogniser knows it: a notice
        ):
            for _ in range(60):
                await session.send_audio(CHUNK)
            await session.end()
            return [update async for update in session.updates()]

    settings = ServerSettings(grpc_port=0, http_port=0, device="cpu")
    with ServerThread(settings, fake_parts(languages=frozenset({"en"}))) as server:
        opened = datetime.now(UTC)
        updates = asyncio.run(interview(server.grpc_target))
    first, last = updates[0], updates[-1]
    assert isinstance(first, Accepted) and isinstance(last, Summary)
    assert first.server_version == depscreen.__version__ != "0+unknown"
    assert first.protocol_version == depscreen.PROTOCOL_VERSION
    assert first.started_at is not None and abs((first.started_at - opened).total_seconds()) < 30
    assert [notice.code for notice in first.notices] == ["asr_no_language"]
    assert all(isinstance(notice, Notice) for notice in first.notices)
    assert [str(notice) for notice in first.notices] == list(first.message.notices), "the text is the old string"
    for update in updates:
        text = repr(update)
        assert "\n" not in text and "modalities" not in text and "model_id" not in text, text
        assert isinstance(update, Accepted) or len(text) < 300, text
    assert repr(last).startswith("Summary(sentences=") and "interval=Interval(" in repr(last)
