"""`ScreeningClient`: stream an interview to the screening server and receive its updates as they come."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import grpc

from depscreen.v1 import screening_pb2, screening_pb2_grpc

from .captions import read_captions
from .media import BYTES_PER_MS, SAMPLE_RATE_HZ, MediaSource, Pacer
from .resumable import stream_resumable
from .tls import channel_credentials


class AudioSendLog:
    """When each audio chunk left the client, to measure the round trip of a sentence update.

    The round trip of a sentence is the time from sending the audio chunk that holds the sentence's last
    sample (`end_ms`) to receiving its update; it includes the server's wait for the pause that closes
    the sentence, which `SentenceUpdate.latency_ms` does not.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sent_ms: list[float] = []
        self._sent_at: list[float] = []
        self._audio_bytes = 0

    def record(self, message: screening_pb2.ClientMessage) -> None:
        """Note the send time of an audio chunk; other messages are ignored."""
        if message.WhichOneof("kind") == "audio":
            self._audio_bytes += len(message.audio.data)
            self._sent_ms.append(self._audio_bytes / BYTES_PER_MS)
            self._sent_at.append(self._clock())

    def round_trip_ms(self, media_ms: float) -> float | None:
        """Milliseconds since the audio reaching `media_ms` was sent, or None when it has not been sent."""
        index = bisect.bisect_left(self._sent_ms, media_ms)
        if index == len(self._sent_ms):
            return None
        return (self._clock() - self._sent_at[index]) * 1000


class ScreeningClient:
    """Client of the `depscreen.v1.Screening` service at `target` ("HOST:PORT").

    The channel is plaintext unless a TLS file is given: `tls_ca` (PEM CA bundle the server's certificate must
    chain to; the system's roots when omitted) turns TLS on, and `tls_cert` with `tls_key` present a client
    certificate (for servers that require mTLS). With a `token`, every call carries the metadata
    `authorization: Bearer <token>`. Errors reported by the
    server (or by the channel, such as UNAVAILABLE) are raised as `grpc.aio.AioRpcError`, whose `code()` and
    `details()` are the status the server sent. Media and caption problems found before the stream opens
    raise `MediaError` and `CaptionError`; a media file failing to decode mid-stream cancels the call and
    raises its `MediaError`.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)

    async def stream_file(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        chunk_ms: int = 100,
        captions: str | Path | None = None,
        video: bool = True,
        video_fps: float = 5.0,
        session_id: str = "",
        language: str = "en",
        disable_asr: bool = False,
        send_log: AudioSendLog | None = None,
        resume: bool = False,
        reconnect_s: float = 120.0,
    ) -> AsyncIterator[screening_pb2.ServerMessage]:
        """Stream one media file as an interview, paced at `speed` (1 = real time, 0 = as fast as possible).

        Sends `start` (16 kHz mono PCM), the file's audio chunks with sampled JPEG frames and the
        `captions` file's cues in media order, then `end`; yields every server message as it arrives while
        sending goes on. `send_log`, when given, records when each audio chunk was sent.

        With `resume` (the server needs a state store), a stream that breaks (UNAVAILABLE) is reconnected with
        backoff and the session resumed where the server's last checkpoint left it, re-sending the media from
        there (`resumable.stream_resumable`); the server sends a new `accepted` each time. It gives up after
        `reconnect_s` seconds without a working stream.
        """
        cues = read_captions(captions) if captions is not None else []
        pacer = Pacer(speed)
        start = screening_pb2.SessionStart(
            session_id=session_id,
            audio=screening_pb2.AudioFormat(sample_rate_hz=SAMPLE_RATE_HZ, channels=1),
            language=language,
            disable_asr=disable_asr,
        )
        with MediaSource(path, video=video, video_fps=video_fps) as source:

            async def media() -> AsyncIterator[screening_pb2.ClientMessage]:
                async for message in pacer.pace(source.messages(chunk_ms=chunk_ms, captions=cues)):
                    if send_log is not None:
                        send_log.record(message)
                    yield message

            if resume:
                async with aclosing(media()) as messages:
                    async for response in stream_resumable(self, start, messages, reconnect_s=reconnect_s):
                        yield response
                return

            async def outgoing() -> AsyncIterator[screening_pb2.ClientMessage]:
                yield screening_pb2.ClientMessage(start=start)
                async for message in media():
                    yield message
                yield screening_pb2.ClientMessage(end=screening_pb2.SessionEnd())

            async with aclosing(outgoing()) as messages, aclosing(self.stream_messages(messages)) as responses:
                async for response in responses:
                    yield response

    async def stream_messages(
        self, messages: AsyncIterable[screening_pb2.ClientMessage]
    ) -> AsyncIterator[screening_pb2.ServerMessage]:
        """Open `StreamSession`, send `messages` as given (nothing is added or checked) and yield the replies.

        Sending runs in its own task, so replies are yielded while messages are still going out. When the
        server ends the stream early, the remaining messages are not sent (and an error status is raised).
        """
        if self._credentials is None:
            channel = grpc.aio.insecure_channel(self.target)
        else:
            channel = grpc.aio.secure_channel(self.target, self._credentials)
        async with channel:
            call = screening_pb2_grpc.ScreeningStub(channel).StreamSession(metadata=self._metadata)
            sender = asyncio.create_task(_send_all(call, messages))
            try:
                while True:
                    try:
                        response = await call.read()
                    except asyncio.CancelledError:
                        failure = _failure(sender)
                        if failure is not None:
                            raise failure from None
                        raise
                    if response is grpc.aio.EOF:
                        break
                    yield response
            finally:
                sender.cancel()
                await asyncio.wait([sender])
                _failure(sender)  # retrieves an exception the stream's own status superseded
                call.cancel()


async def _send_all(call: grpc.aio.StreamStreamCall, messages: AsyncIterable[screening_pb2.ClientMessage]) -> None:
    """Write every message then half-close; a call that already ended stops the writing quietly, because
    the reading side raises its status.

    Nothing is written before the server's initial metadata, which it sends once it has authenticated the
    stream: a refused stream (UNAUTHENTICATED) is never written to, since a write racing the server's status
    would make grpc report INTERNAL instead."""
    try:
        await call.initial_metadata()
        if call.done():
            return
        async for message in messages:
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return
    except Exception:
        call.cancel()
        raise


def _failure(sender: asyncio.Task[None]) -> BaseException | None:
    """The exception the sending task ended with, if it has ended with one (this also marks it retrieved)."""
    if sender.done() and not sender.cancelled():
        return sender.exception()
    return None
