"""Resumable streams: keep the media the server has not committed, reconnect when the stream breaks, re-send it.

The server checkpoints a resumable session after every sentence and says in `accepted` where to re-send from
(`resume_from_ms`). The client keeps every message since the end of the last sentence it was sent
(`ReplayBuffer`); when the stream breaks (UNAVAILABLE: the server crashed or restarts, the connection was
reset; or a proxy reset the stream because its upstream died), it reconnects with exponential backoff, sends
`start` with the resume token, re-sends the kept messages from `resume_from_ms`, and goes on with the rest of
the media. Nothing is lost or sent twice to the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from depscreen.v1 import screening_pb2 as pb

from .media import BYTES_PER_MS

if TYPE_CHECKING:
    from .session import ScreeningClient

RESET_BY_PROXY = "RST_STREAM"
"""In the details of an INTERNAL status that a proxy caused by resetting the stream when its upstream server
died (nginx `grpc_pass`: "Stream removed (RST_STREAM ... error code 2)"): a broken stream, not a server error."""
FIRST_BACKOFF_S = 0.2
"""Wait before the first reconnection; it doubles with each failed one, up to `MAX_BACKOFF_S`."""
MAX_BACKOFF_S = 5.0
QUEUE_MESSAGES = 64
"""Media messages read ahead of the stream (the media source waits while the stream is down)."""


@dataclass(frozen=True)
class _Kept:
    start_ms: float
    end_ms: float
    message: pb.ClientMessage


class ReplayBuffer:
    """Client messages not yet covered by a committed sentence, on the audio clock of a 16 kHz mono stream."""

    def __init__(self) -> None:
        self._kept: list[_Kept] = []
        self._audio_ms = 0.0

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, message: pb.ClientMessage) -> None:
        """Keep a message that is about to be sent (`start` and `end` are not kept)."""
        kind = message.WhichOneof("kind")
        if kind == "audio":
            start = self._audio_ms
            self._audio_ms += len(message.audio.data) / BYTES_PER_MS
            self._kept.append(_Kept(start, self._audio_ms, message))
        elif kind == "video":
            self._kept.append(_Kept(message.video.timestamp_ms, message.video.timestamp_ms, message))
        elif kind == "caption":
            self._kept.append(_Kept(message.caption.start_ms, message.caption.end_ms, message))

    def commit(self, end_ms: float) -> None:
        """The server committed everything up to `end_ms`: drop what lies wholly before it."""
        self._kept = [k for k in self._kept if k.end_ms > end_ms or (k.start_ms == k.end_ms and k.start_ms >= end_ms)]

    def replay(self, from_ms: float) -> list[pb.ClientMessage]:
        """The kept messages from `from_ms` on, the audio chunk that spans it cut at that sample."""
        replayed = []
        for kept in self._kept:
            if kept.message.WhichOneof("kind") == "audio" and kept.start_ms < from_ms < kept.end_ms:
                offset = round((from_ms - kept.start_ms) * BYTES_PER_MS) // 2 * 2
                data = kept.message.audio.data[offset:]
                replayed.append(pb.ClientMessage(audio=pb.AudioChunk(data=data)))
            elif kept.end_ms > from_ms or (kept.start_ms == kept.end_ms and kept.start_ms >= from_ms):
                replayed.append(kept.message)
        return replayed


async def stream_resumable(
    client: ScreeningClient,
    start: pb.SessionStart,
    media: AsyncIterator[pb.ClientMessage],
    *,
    reconnect_s: float = 120.0,
) -> AsyncIterator[pb.ServerMessage]:
    """Stream `start`, then `media` (audio, video, captions), then `end`, resuming after breaks; yields every
    server message (an `accepted` after each reconnection). Gives up, raising the last error, when the stream
    stays broken for `reconnect_s` seconds, or at once when the server gave no resume token (no state store)."""
    queue: asyncio.Queue[pb.ClientMessage | Exception | None] = asyncio.Queue(QUEUE_MESSAGES)

    async def produce() -> None:
        """Media messages into the queue, then None; the media source's own error (a file that fails to
        decode) goes into the queue too, to be raised by the stream."""
        try:
            async for message in media:
                await queue.put(message)
        except Exception as error:
            await queue.put(error)
            return
        await queue.put(None)

    producer = asyncio.create_task(produce())
    buffer = ReplayBuffer()
    token = ""
    end_taken = False
    broken_since: float | None = None
    backoff = FIRST_BACKOFF_S
    try:
        while True:
            accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            async def outgoing(
                token: str = token, accepted: asyncio.Future[int] = accepted
            ) -> AsyncIterator[pb.ClientMessage]:
                nonlocal end_taken
                resumed = pb.SessionStart()
                resumed.CopyFrom(start)
                resumed.resume_token = token
                yield pb.ClientMessage(start=resumed)
                for message in buffer.replay(await accepted):
                    yield message
                while not end_taken:
                    message = await queue.get()
                    if isinstance(message, Exception):
                        raise message
                    if message is None:
                        end_taken = True
                        break
                    buffer.add(message)
                    yield message
                yield pb.ClientMessage(end=pb.SessionEnd())

            try:
                async with (
                    aclosing(outgoing()) as messages,
                    aclosing(client.stream_messages(messages)) as responses,
                ):
                    async for response in responses:
                        kind = response.WhichOneof("kind")
                        if kind == "accepted":
                            token = response.accepted.resume_token
                            accepted.set_result(response.accepted.resume_from_ms)
                            broken_since, backoff = None, FIRST_BACKOFF_S
                        elif kind == "sentence":
                            buffer.commit(response.sentence.end_ms)
                        yield response
                return
            except grpc.aio.AioRpcError as error:
                if not broken_stream(error) or (accepted.done() and not token):
                    raise  # the server's answer, or a session the server cannot resume (it has no state store)
                broken_since = broken_since or time.monotonic()
                if time.monotonic() - broken_since > reconnect_s:
                    raise
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_S)
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


def broken_stream(error: grpc.aio.AioRpcError) -> bool:
    """Whether a status means the stream broke (server gone, connection reset, reset by a proxy), so the client
    should reconnect and resume; any other status is the server's answer and is raised."""
    code = error.code()
    return code == grpc.StatusCode.UNAVAILABLE or (
        code == grpc.StatusCode.INTERNAL and RESET_BY_PROXY in (error.details() or "")
    )
