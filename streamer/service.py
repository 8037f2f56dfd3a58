"""The `depscreen.v1.Screening` gRPC service: moves one interview's messages between a stream and its LiveSession.

The protocol itself lives in `session.py`; a ProtocolError raised there ends this stream (and only this
stream) with its status code and message.
"""

from __future__ import annotations

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
            async for message in request_iterator:
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
