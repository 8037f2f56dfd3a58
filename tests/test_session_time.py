"""The protocol's timing on a virtual clock, in-process: stall timeout, session time limit and pacing.

A real `Server` (pipeline, batcher, worker threads) on fake parts (`fakes.py`) runs with a `VirtualClock`; the
waits of a stream and a session move that clock on instead of sleeping, so a 30 s stall or a one-hour limit takes
milliseconds. The sessions here are driven through their typed core (`interview.py`), with no transport; the
gRPC and WHIP transports are tested end to end elsewhere (`test_limits.py`, `test_faults.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from depscreen.engine.media import decode_audio_file
from depscreen.streamer.interview import Audio, Input, InterviewSummary, Opening, ScoredSentence, Update
from depscreen.streamer.parts import ServerParts
from depscreen.streamer.protocol import ErrorKind, ProtocolError
from depscreen.streamer.server import Server
from depscreen.streamer.session import LiveSession
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.stall import AudioFloor, MessageWait, Silence, StreamEnd

from .conftest import FIXTURES
from .fakes import fake_parts
from .virtual_clock import VirtualClock

START = Opening(sample_rate_hz=16_000, channels=1)
JFK = decode_audio_file(FIXTURES / "jfk.flac").tobytes()
CHUNK_S = 0.1


def audio(data: bytes) -> list[Audio]:
    step = round(16_000 * 2 * CHUNK_S)
    return [Audio(data[i : i + step]) for i in range(0, len(data), step)]


def on_server(
    clock: VirtualClock,
    scenario: Callable[[Server], Awaitable[object]],
    parts: ServerParts | None = None,
    **settings: float | str,
) -> object:
    """Run `scenario(server)` against a started in-process server on `parts` (None: the real ones `settings`
    ask for, with no ASR unless they say otherwise) whose sessions read `clock`."""

    async def run() -> object:
        chosen = {"grpc_port": 0, "http_port": 0, "device": "cpu", "asr": "none", **settings}
        server = Server(ServerSettings(**chosen), clock=clock, parts=parts)
        await server.start()
        try:
            return await scenario(server)
        finally:
            await server.stop()

    return asyncio.run(run())


async def replies_to(session: LiveSession, inputs: list[Input]) -> AsyncIterator[Update]:
    for item in inputs:
        async for reply in session.handle(item):
            yield reply


def never() -> asyncio.Future[str]:
    return asyncio.get_running_loop().create_future()


def test_a_silent_stream_stalls_after_its_timeout_in_virtual_time() -> None:
    clock = VirtualClock()

    async def scenario() -> list[object]:
        wait = MessageWait(Silence(timeout_s=30), clock=clock)
        arriving = never()
        clock.call_at(29.5, lambda: arriving.set_result("audio"))
        heard = await wait.next(arriving, lambda: None)
        heard_at = clock.now()
        return [heard, heard_at, await wait.next(never(), lambda: None), clock.now()]

    heard, heard_at, end, ended_at = asyncio.run(scenario())
    assert (heard, heard_at) == ("audio", 29.5), "a message just inside the timeout is read, not a stall"
    assert end is StreamEnd.STALLED and ended_at == pytest.approx(29.5 + 30), "the silence restarts at the message"


def test_a_media_signal_wakes_the_watch_at_most_once_per_mark_and_the_wait_counts_for_the_floor() -> None:
    """A WebRTC peer's frames only signal that media arrived: with `wake_every_s`, one that comes 20 ms into
    the wait is taken at the 0.5 s mark, and the audio floor is credited with the whole half second."""
    clock = VirtualClock()

    async def scenario() -> list[object]:
        floor = AudioFloor(10.0, min_speed=0.5)
        wait = MessageWait(Silence(timeout_s=30), clock=clock, starvation=floor, wake_every_s=0.5)
        arriving = never()
        clock.call_at(0.02, lambda: arriving.set_result("frame"))
        heard = await wait.next(arriving, lambda: None)
        at_once = MessageWait(Silence(timeout_s=30), clock=clock)
        prompt = never()
        clock.call_at(clock.now() + 0.02, lambda: prompt.set_result("message"))
        began = clock.now()
        return [heard, clock.now(), floor.silent_s, await at_once.next(prompt, lambda: None), clock.now() - began]

    heard, heard_at, floor_waited, message, message_after = asyncio.run(scenario())
    assert (heard, heard_at) == ("frame", 0.5)
    assert floor_waited == pytest.approx(0.5), "the settle time is waiting the floor counts"
    assert (message, message_after) == ("message", pytest.approx(0.02)), "a gRPC stream's messages come at once"


def test_a_wait_ends_on_the_time_limit_or_the_shutdown_whichever_comes_first() -> None:
    clock = VirtualClock()

    async def scenario() -> list[object]:
        time_up = await MessageWait(Silence(timeout_s=0), clock=clock).next(never(), lambda: 3600 - clock.now())
        time_up_at = clock.now()
        shutdown = asyncio.Event()
        clock.call_at(time_up_at + 5, shutdown.set)
        stopped = await MessageWait(Silence(timeout_s=30), shutdown, clock).next(never(), lambda: None)
        return [time_up, time_up_at, stopped, clock.now() - time_up_at]

    assert asyncio.run(scenario()) == [StreamEnd.TIME_UP, 3600, StreamEnd.SHUTDOWN, 5]


def test_a_client_faster_than_real_time_is_held_to_max_speed_after_its_burst() -> None:
    clock = VirtualClock()

    async def scenario(server: Server) -> tuple[list[Update], float]:
        session = await server.hub.open(START)
        try:
            replies = [reply async for reply in replies_to(session, audio(JFK))]
            paced_to = clock.now()
            replies += [reply async for reply in session.finish()]
            return replies, paced_to
        finally:
            session.close()

    replies, paced_to = on_server(clock, scenario, fake_parts(), max_speed=4.0, burst_s=1.0)
    seconds = len(JFK) / 32_000
    assert isinstance(replies[-1], InterviewSummary) and replies[-1].audio_seconds == pytest.approx(seconds, abs=0.01)
    # Each chunk waits until the audio before it is at most 1 s ahead of 4x the session's clock.
    assert (seconds - CHUNK_S - 1.0) / 4 - 1e-6 <= paced_to <= (seconds - 1.0) / 4
    assert any(isinstance(r, ScoredSentence) for r in replies)


def test_a_session_that_reaches_its_time_limit_is_finished_then_ended() -> None:
    clock = VirtualClock()

    async def scenario(server: Server) -> tuple[list[Update], ProtocolError, float | None]:
        session = await server.hub.open(START)
        replies: list[Update] = []
        try:
            async for reply in replies_to(session, audio(JFK)):
                replies.append(reply)
        except ProtocolError as error:
            return replies, error, session.time_left()
        finally:
            session.close()
        raise AssertionError("the session outlived its limit")

    replies, error, left = on_server(clock, scenario, fake_parts(), max_session_s=5.0, max_speed=1.0, burst_s=0.0)
    assert error.kind is ErrorKind.RESOURCE_EXHAUSTED and "limit of 5 s" in str(error)
    assert isinstance(replies[-1], InterviewSummary), "the summary goes out before the stream ends"
    # At real-time pace the limit is met when the chunk after 5 s of audio arrives: that chunk is refused.
    assert replies[-1].audio_seconds == pytest.approx(5.0 + CHUNK_S, abs=1e-6)
    assert left is not None and left <= 0


def test_a_quiet_session_ends_at_its_time_limit_while_waiting() -> None:
    clock = VirtualClock()

    async def scenario(server: Server) -> tuple[StreamEnd, float]:
        session = await server.hub.open(START)
        try:
            wait = MessageWait(Silence(server.settings.stall_timeout_s), server.hub.shutdown, clock)
            return await wait.next(never(), session.time_left), clock.now()
        finally:
            session.close()

    end, at = on_server(clock, scenario, fake_parts(), max_session_s=3600.0, stall_timeout_s=0.0)
    assert end is StreamEnd.TIME_UP and at == pytest.approx(3600)


def test_the_audio_floor_ends_streams_that_send_too_little_audio_and_spares_real_time_ones() -> None:
    """`min_audio_speed` 0.5 with `audio_grace_s` 15: nothing after `start`, or two bytes every half second, ends
    the stream 15 s in (though messages keep arriving: the stall timeout never fires); audio at real time or at
    exactly half of it goes on."""

    async def starved_at(chunk_s: float | None, every_s: float) -> float | None:
        clock = VirtualClock()
        floor = AudioFloor(15.0, min_speed=0.5)
        wait = MessageWait(Silence(30.0), asyncio.Event(), clock, starvation=floor)
        while clock.now() < 40:
            pending = never()
            if chunk_s is not None:
                clock.call_at(clock.now() + every_s, lambda p=pending: p.done() or p.set_result("audio"))
            got = await wait.next(pending, lambda: None)
            if got is StreamEnd.STARVED:
                return clock.now()
            assert got == "audio"
            floor.took_audio(chunk_s)
        return None

    assert asyncio.run(starved_at(None, 0.0)) == pytest.approx(15.0)
    assert asyncio.run(starved_at(2 / 32_000, 0.5)) == pytest.approx(15.0, abs=0.6)
    assert asyncio.run(starved_at(0.1, 0.1)) is None
    assert asyncio.run(starved_at(0.1, 0.2)) is None
