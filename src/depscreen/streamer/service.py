"""The `depscreen.v1.Screening` gRPC service: moves one interview's messages between a stream and its LiveSession.

The caller is authenticated first, from the `authorization: Bearer <token>` metadata (`auth.py`): no message of an
unauthenticated stream is read, and it ends with UNAUTHENTICATED. The service is the session's gRPC adapter (a
`Transport`): it converts each `ClientMessage` to the session's input and each update back (`convert.py`) around the
loop all transports share (`transport.py`); the protocol itself lives in `session.py`, and a ProtocolError raised
there ends this stream (and only this stream) with the status named like its kind, and its message. A stream that
sends no `start`, or no message at all, for `stall_timeout_s` of the server's running time (`stall.py`), or an
admitted one that falls `audio_grace_s` behind `min_audio_speed` of audio, ends with DEADLINE_EXCEEDED: a resumable
session keeps its snapshot (the message says to resume), any other is finished first (last sentence and summary
sent). One that closes without `end` is finished, cleanly. A session that reaches `max_session_s` is finished, then
ended with RESOURCE_EXHAUSTED. While the server shuts down, new streams get UNAVAILABLE and live ones end with
UNAVAILABLE after the message they are handling: a resumable session is kept ("resume it"), any other is finished
first. Every stream that ends with an error, or broken by its client (CANCELLED), is counted in
`depscreen_errors_total`. A session refused at admission ends with RESOURCE_EXHAUSTED carrying a `RetryInfo`
(`health.py`). One `stream ended` log line per stream carries the status name (`code`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError

from depscreen.streamer.admission import SessionHub
from depscreen.streamer.auth import AuthError, Verifier, authenticate, certificate_principal
from depscreen.streamer.convert import accepted_message, client_input, model_info_message, opening
from depscreen.streamer.health import retry_trailers
from depscreen.streamer.interview import End, Input
from depscreen.streamer.protocol import ErrorKind, ProtocolError, before_start
from depscreen.streamer.stall import StreamEnd, audio_floor
from depscreen.streamer.transport import Transport, session_updates
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

log = logging.getLogger(__name__)


class ScreeningService(Transport, screening_pb2_grpc.ScreeningServicer):
    """One StreamSession per interview."""

    def __init__(self, hub: SessionHub, verifier: Verifier | None = None) -> None:
        """`verifier`: checks every stream's bearer token; None serves anyone (an open server)."""
        super().__init__(hub)
        self.verifier = verifier

    async def StreamSession(
        self, request_iterator: AsyncIterator[pb.ClientMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerMessage]:
        session = None
        incoming: asyncio.Future | None = None
        status = "CANCELLED"  # unless the stream ends otherwise: the client (or its link) broke it
        try:
            principal = await self._authenticate(context)
            await context.send_initial_metadata(())  # the go-ahead clients wait for before writing
            messages = _parsed(request_iterator)
            wait = self.message_wait()
            incoming = asyncio.ensure_future(anext(messages, None))
            first = await wait.next(incoming, lambda: None)
            if isinstance(first, StreamEnd):
                raise before_start(first, self.hub.settings.stall_timeout_s)
            if first is None:
                status = "OK"
                return
            session = await self.hub.open(opening(first), principal, resumable=True)
            wait.starvation = audio_floor(self.hub.settings)
            audio_bytes_per_s = session.pipeline.sample_rate_hz * session.pipeline.channels * 2
            yield accepted_message(session.welcome(), model_info_message(self.hub.parts.screener))
            if session.snapshot_writer is not None:
                for update in session.snapshot_writer.resend:
                    yield pb.ServerMessage(sentence=update)

            async def next_input() -> Input | StreamEnd | None:
                nonlocal incoming
                incoming = asyncio.ensure_future(anext(messages, None))
                message = await wait.next(incoming, session.time_left)
                if message is None or isinstance(message, StreamEnd):
                    return message
                if wait.starvation is not None and message.WhichOneof("kind") == "audio":
                    wait.starvation.took_audio(len(message.audio.data) / audio_bytes_per_s)
                return client_input(message)

            if session.snapshot_writer is not None and session.snapshot_writer.summary is not None:
                # it had ended with `end`, its stream broke before the summary: the summary again, and the record
                # goes; what the client re-sends up to its `end` is read and dropped, so its writes do not fail
                yield pb.ServerMessage(summary=session.snapshot_writer.summary)
                await session.snapshot_writer.forget()
                while not isinstance(await next_input(), End | StreamEnd | None):
                    pass
            else:
                async for reply in session_updates(session, next_input):
                    yield reply
            status = "OK"
            log.info("stream ended", extra={"code": status})
        except ProtocolError as error:
            status = error.kind.name
            code = grpc.StatusCode[error.kind.name]
            self.hub.metrics.errors_total.labels(code=status).inc()
            log.info("stream ended by protocol error %s: %s", status, error, extra={"code": status})
            retry_after_s = error.retry_after_s
            trailers = () if retry_after_s is None else retry_trailers(code, str(error), retry_after_s)
            await context.abort(code, str(error), trailing_metadata=trailers)
        except Exception:
            status = grpc.StatusCode.UNKNOWN.name
            log.exception("stream ended by an internal error", extra={"code": status})
            raise
        finally:
            if incoming is not None:
                incoming.cancel()
            if status in ("CANCELLED", "UNKNOWN"):
                self.hub.metrics.errors_total.labels(code=status).inc()
                if status == "CANCELLED":
                    log.info("stream ended: broken or cancelled by the client", extra={"code": status})
            if session is not None:
                session.close(status)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> str | None:
        """The stream's principal from its `authorization` metadata (under mTLS without tokens: its client
        certificate's common name); ProtocolError(UNAUTHENTICATED) if refused. Checked in a thread: a JWKS URL may
        be fetched."""
        metadata = dict(context.invocation_metadata() or ())
        try:
            principal = await asyncio.to_thread(authenticate, self.verifier, metadata.get("authorization"))
        except AuthError as error:
            raise ProtocolError(ErrorKind.UNAUTHENTICATED, str(error)) from None
        if principal is None and self.hub.settings.tls_client_ca:
            names = (context.auth_context() or {}).get("x509_common_name") or [b""]
            principal = certificate_principal(names[0].decode(errors="replace"))
        return principal


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
                ErrorKind.INVALID_ARGUMENT,
                f"a message is not a valid depscreen.v1.ClientMessage ({error}): send messages made from the "
                "published .proto, with UTF-8 strings",
            ) from None
        yield message
