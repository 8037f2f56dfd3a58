"""The `depscreen.v1.Screening` gRPC service: moves one interview's messages between a stream and its LiveSession.

The protocol itself lives in `session.py`; a ProtocolError raised there ends this stream (and only this
stream) with its status code and message. A stream silent for `stall_timeout_s` is finished (its last
sentence and summary are sent) and ended with DEADLINE_EXCEEDED; one that closes without `end` is finished
the same way, cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from depscreen.streamer.session import ProtocolError, SessionHub
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

log = logging.getLogger(__name__)


class ScreeningService(screening_pb2_grpc.ScreeningServicer):
    """One StreamSession per interview."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub

    async def StreamSession(
        self, request_iterator: AsyncIterator[pb.ClientMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerMessage]:
        session = None
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None:
                return
            session = await self.hub.open(first)
            yield session.accepted()
            stall_timeout = self.hub.settings.stall_timeout_s or None
            messages = aiter(request_iterator)
            while True:
                try:
                    message = await asyncio.wait_for(anext(messages, None), stall_timeout)
                except TimeoutError:
                    async for reply in session.finish():
                        yield reply
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
        except ProtocolError as error:
            self.hub.metrics.errors_total.labels(code=error.code.name).inc()
            log.info("stream ended by protocol error %s: %s", error.code.name, error)
            await context.abort(error.code, str(error))
        finally:
            if session is not None:
                session.close()
