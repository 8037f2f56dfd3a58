"""Transport: what every way into the server shares, written once: the loop that feeds a LiveSession its inputs
and sends its updates, the ending of a stream that stalled, ran out of time or meets a shutdown, and the
server's view of a transport (a list of them, ended and closed alike on shutdown).

A transport supplies only its framing (how the next input is read: `next_input`; how an update is sent: it
iterates `session_updates`) and its error mapping (a ProtocolError's `ErrorKind` to a gRPC status, an HTTP
status, or a closed data channel). The stall watch itself is `stall.MessageWait`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from depscreen.streamer.admission import SessionHub
from depscreen.streamer.convert import server_message
from depscreen.streamer.interview import Input
from depscreen.streamer.protocol import session_time_exceeded, shutting_down, stalled, starved
from depscreen.streamer.session import LiveSession
from depscreen.streamer.stall import MessageWait, Silence, StreamEnd
from depscreen.v1 import screening_pb2 as pb


class Transport:
    """One way into the server (the gRPC service, the WHIP endpoint): what the server asks of each on shutdown.

    Streams that watch `hub.shutdown` themselves (a `MessageWait`) need neither `end_all` nor `close_all`: the
    defaults do nothing."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub

    @property
    def lingering(self) -> int:
        """Connections this transport holds open beyond the hub's sessions (a finished WebRTC session's peer
        that has not hung up yet); the shutdown waits for them as for sessions."""
        return 0

    async def end_all(self, reason: str) -> None:
        """Finish every session this transport holds that does not watch `hub.shutdown` itself."""

    async def close_all(self) -> None:
        """Close every connection still open, without a summary (the server stops)."""

    def message_wait(self) -> MessageWait:
        """The stall watch of one stream: `stall_timeout_s` without a message, the server's shutdown, its clock."""
        return MessageWait(Silence(self.hub.settings.stall_timeout_s), self.hub.shutdown, self.hub.clock)


async def session_updates(
    session: LiveSession, next_input: Callable[[], Awaitable[Input | StreamEnd | None]]
) -> AsyncIterator[pb.ServerMessage]:
    """The session loop: each input `next_input()` reads goes to the session and its updates come out, in order;
    None (the client is done) finishes the session (last sentence and summary), and a StreamEnd ends it early
    (`end_early`, which raises the ProtocolError that ends the stream)."""
    while (item := await next_input()) is not None:
        if isinstance(item, StreamEnd):
            async for reply in end_early(session, item):
                yield reply
        async for update in session.handle(item):
            yield server_message(update)
    if not session.ended:
        async for update in session.finish():
            yield server_message(update)


async def end_early(session: LiveSession, why: StreamEnd) -> AsyncIterator[pb.ServerMessage]:
    """End a stream that stalled, ran out of time or meets a shutdown: a resumable session keeps its snapshot
    (its open sentence is dropped: the client re-sends its audio on resuming); any other is finished (last
    sentence and summary sent). Always raises the ProtocolError that ends the stream."""
    hub = session.hub
    settings = hub.settings
    if (why is StreamEnd.TIME_UP or not session.resumable) and not session.ended:
        async for update in session.finish():
            yield server_message(update)
    if why is StreamEnd.TIME_UP:
        raise session_time_exceeded(settings.max_session_s)
    if why is StreamEnd.SHUTDOWN:
        raise shutting_down(session.resumable)
    if why is StreamEnd.STARVED:
        hub.metrics.starved_sessions_total.inc()
        raise starved(settings, session.resumable)
    raise stalled(settings.stall_timeout_s, session.resumable)
