"""The `depscreen.v1.Screening` gRPC service: moves one interview's messages between a stream and its LiveSession.

The caller is authenticated first, from the `authorization: Bearer <token>` metadata (`auth.py`): no
message of an unauthenticated stream is read, and it ends with UNAUTHENTICATED. The protocol itself lives in
`session.py`; a ProtocolError raised there ends this stream (and only this stream) with its status code and
message. A stream silent for `stall_timeout_s` is finished (its last
sentence and summary are sent) and ended with DEADLINE_EXCEEDED; one that closes without `end` is finished
the same way, cleanly. A session that reaches `max_session_s` is finished too, then ended with
RESOURCE_EXHAUSTED. A session refused at admission ends with RESOURCE_EXHAUSTED carrying a `RetryInfo`
(`health.py`). One `stream ended` log line per stream carries the status name (`code`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from depscreen.streamer.auth import AuthError, Verifier, authenticate
from depscreen.streamer.health import retry_trailers
from depscreen.streamer.session import ProtocolError, SessionHub, session_time_exceeded
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

log = logging.getLogger(__name__)


class ScreeningService(screening_pb2_grpc.ScreeningServicer):
    """One StreamSession per interview."""

    def __init__(self, hub: SessionHub, verifier: Verifier | None = None) -> None:
        """`verifier`: checks every stream's bearer token; None serves anyone (an open server)."""
        self.hub = hub
        self.verifier = verifier

    async def StreamSession(
        self, request_iterator: AsyncIterator[pb.ClientMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerMessage]:
        session = None
        status = "CANCELLED"  # unless the stream ends otherwise: the client went away
        try:
            principal = await self._authenticate(context)
            await context.send_initial_metadata(())  # the go-ahead clients wait for before writing
            messages = _parsed(request_iterator)
            first = await anext(messages, None)
            if first is None:
                return
            session = await self.hub.open(first, principal, resumable=True)
            yield session.accepted()
            stall_timeout = self.hub.settings.stall_timeout_s or None
            while True:
                left = session.time_left()
                try:
                    message = await asyncio.wait_for(anext(messages, None), _earliest(stall_timeout, left))
                except TimeoutError:
                    if not session.ended:
                        async for reply in session.finish():
                            yield reply
                    if left is not None and (stall_timeout is None or left <= stall_timeout):
                        raise session_time_exceeded(self.hub.settings.max_session_s) from None
                    raise ProtocolError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no message for {stall_timeout:g} s: the session was finished (send audio continuously, "
                        "silence included, and `end` when the interview is over)",
                    ) from None
                if message is None:
                    break
                async for reply in session.handle(message):
                    yield reply
            if not session.ended:
                async for reply in session.finish():
                    yield reply
            status = "OK"
            log.info("stream ended", extra={"code": status})
        except ProtocolError as error:
            status = error.code.name
            self.hub.metrics.errors_total.labels(code=error.code.name).inc()
            log.info("stream ended by protocol error %s: %s", error.code.name, error, extra={"code": error.code.name})
            retry_after_s = error.retry_after_s
            trailers = () if retry_after_s is None else retry_trailers(error.code, str(error), retry_after_s)
            await context.abort(error.code, str(error), trailing_metadata=trailers)
        finally:
            if session is not None:
                session.close(status)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> str | None:
        """The stream's principal from its `authorization` metadata; ProtocolError(UNAUTHENTICATED) if refused.
        Checked in a thread: a JWKS URL may be fetched."""
        metadata = dict(context.invocation_metadata() or ())
        try:
            return await asyncio.to_thread(authenticate, self.verifier, metadata.get("authorization"))
        except AuthError as error:
            raise ProtocolError(grpc.StatusCode.UNAUTHENTICATED, str(error)) from None


async def _parsed(request_iterator: AsyncIterator[pb.ClientMessage]) -> AsyncIterator[pb.ClientMessage]:
    """The stream's messages; one that does not parse (corrupt, or a string that is not UTF-8) is a protocol
    error (INVALID_ARGUMENT), not a crash of the handler."""
    iterator = aiter(request_iterator)
    while True:
        try:
            message = await anext(iterator)
        except StopAsyncIteration:
            return
        except DecodeError as error:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a message is not a valid depscreen.v1.ClientMessage ({error}): send messages made from the "
                "published .proto, with UTF-8 strings",
            ) from None
        yield message


def _earliest(*timeouts: float | None) -> float | None:
    """The shortest of the timeouts that are set (never negative); None when none is."""
    given = [max(0.0, t) for t in timeouts if t is not None]
    return min(given) if given else None
