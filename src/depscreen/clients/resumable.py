"""Resumable sessions: keep the media the server has not committed, reconnect when the stream breaks, re-send it.

The server snapshots a resumable session after every sentence and says in `accepted` where to re-send from
(`replay_from_sample`, a little before `resume_from_ms`: the server takes that stretch again to go on exactly
where it stopped). The client keeps every message from the `replay_from_sample` of the last sentence it was
sent (`ReplayBuffer`); when the stream breaks with a status that leaves the snapshot behind (`resumable_status`:
the server crashed, restarts, shuts down or stalled, the connection was reset or went quiet, a proxy reset the
stream), it reconnects after a jittered backoff, sends `start` with the resume token and the number of sentence
updates it already holds (`received_sentences`, so the server re-sends the snapshotted ones it missed), re-sends
the kept messages from there, and goes on with the rest. Sentence updates are de-duplicated by
index: the caller sees each index exactly once, and nothing is lost or sent twice to the model.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

import grpc

from depscreen.v1 import screening_pb2 as pb

from .call import WRITE_AFTER_END, call_replies
from .errors import ResumeLostError, ServerStalledError, StatusError
from .settings import ClientSettings
from .updates import Reconnecting

RESET_BY_PROXY = ("RST_STREAM", "Stream removed")
"""In the details of an INTERNAL status that a proxy caused by resetting the stream when its upstream server
died (nginx `grpc_pass`: "Stream removed (RST_STREAM ... error code 2)"): a broken stream, not a server error."""
# INTERNAL with WRITE_AFTER_END on a live connection: the server ended the stream while media was going out (as
# a shutting-down server does) and grpcio hid its status; if that status was final, the resume answers it again.
RESUMABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
"""Statuses that leave the session's snapshot behind: the server or the link went away (UNAVAILABLE, also
what a shutting-down server ends its streams with) or a side stalled (DEADLINE_EXCEEDED)."""
DEFAULT_AUDIO = pb.AudioFormat(sample_rate_hz=16_000, channels=1)
REPLAY_CLOCK_SAMPLES_PER_MS = 16
"""`replay_from_sample` counts samples of the server's 16 kHz clock."""

log = logging.getLogger("depscreen.clients")


@dataclass(frozen=True)
class _Kept:
    start_ms: float
    end_ms: float
    message: pb.ClientMessage


class ReplayBuffer:
    """Client messages not yet covered by a committed sentence, on the audio clock of the session's s16le PCM."""

    def __init__(self, audio: pb.AudioFormat = DEFAULT_AUDIO) -> None:
        self._kept: list[_Kept] = []
        self._audio_ms = 0.0
        self._frame_bytes = 2 * max(1, audio.channels)
        self._bytes_per_ms = audio.sample_rate_hz * self._frame_bytes / 1000

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, message: pb.ClientMessage) -> None:
        """Keep a message that is about to be sent (`start` and `end` are not kept)."""
        kind = message.WhichOneof("kind")
        if kind == "audio":
            start = self._audio_ms
            self._audio_ms += len(message.audio.data) / self._bytes_per_ms
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
                offset = round((from_ms - kept.start_ms) * self._bytes_per_ms) // self._frame_bytes * self._frame_bytes
                data = kept.message.audio.data[offset:]
                replayed.append(pb.ClientMessage(audio=pb.AudioChunk(data=data)))
            elif kept.end_ms > from_ms or (kept.start_ms == kept.end_ms and kept.start_ms >= from_ms):
                replayed.append(kept.message)
        return replayed


class Backoff:
    """Waits before reconnecting: exponential caps from `first_s` up to `max_s`, each wait drawn uniformly
    between 0 and its cap ("full jitter"), so the clients of a replica that died do not reconnect in lockstep."""

    def __init__(self, first_s: float, max_s: float, draw: Callable[[], float] = random.random) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._draw = draw
        self._attempt = 0

    def next_s(self) -> float:
        """The wait before the next attempt (and one more failed attempt counted)."""
        cap = min(self._max_s, self._first_s * 2**self._attempt)
        self._attempt += 1
        return self._draw() * cap

    def reset(self) -> None:
        """A stream works again: the next break starts from the first cap."""
        self._attempt = 0


def resumable_status(error: BaseException) -> bool:
    """Whether an error ended the stream but left the session's snapshot behind, so that the client should
    reconnect and resume; any other status is the server's answer and is raised."""
    if isinstance(error, ServerStalledError):
        return True
    if not isinstance(error, grpc.aio.AioRpcError):
        return False
    code, details = error.code(), error.details() or ""
    return code in RESUMABLE_CODES or (
        code == grpc.StatusCode.INTERNAL and any(mark in details for mark in (*RESET_BY_PROXY, WRITE_AFTER_END))
    )


async def resumable_replies(
    channel: grpc.aio.Channel,
    metadata: Sequence[tuple[str, str]],
    start: pb.SessionStart,
    outgoing: asyncio.Queue[pb.ClientMessage | Exception | None],
    *,
    resume: bool,
    settings: ClientSettings,
) -> AsyncIterator[pb.ServerMessage | Reconnecting]:
    """Stream `start`, then what `outgoing` holds (audio, video, captions; None ends the session, an exception
    is raised after cancelling the call), then `end`; yield every server message, an `accepted` after each
    reconnection, each sentence index once, and a `Reconnecting` before each wait to reconnect.

    With `resume`, a break that leaves a snapshot behind (`resumable_status`) is survived by reconnecting,
    unless the server granted no resume token (no state store) or the stream stayed broken for
    `settings.reconnect_s`: then the last error is raised. A new session whose stream broke after the server
    answered it but before `accepted` (nothing but `start` was sent) is opened again afresh; a server that never
    answered (unreachable) is reported at once. A resume the server refuses (`FAILED_PRECONDITION`:
    it no longer knows the token, or lost updates the client lacks) raises `ResumeLostError`.
    """
    buffer = ReplayBuffer(start.audio if start.HasField("audio") else DEFAULT_AUDIO)
    backoff = Backoff(settings.first_backoff_s, settings.max_backoff_s)
    received: set[int] = set()
    token = ""
    end_taken = False
    broken_since: float | None = None
    attempt = 0
    while True:
        resuming = bool(token)
        refused_at_start = True
        answered = False  # the server answered this stream (its headers came: the first message is asked for)
        accepted: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def messages(
            token: str = token, accepted: asyncio.Future[float] = accepted
        ) -> AsyncIterator[pb.ClientMessage]:
            nonlocal end_taken, answered
            answered = True
            first = pb.SessionStart()
            first.CopyFrom(start)
            if token:
                first.resume_token = token
                first.received_sentences = len(received)
            yield pb.ClientMessage(start=first)
            if resume:
                for message in buffer.replay(await accepted):
                    yield message
            while not end_taken:
                message = await outgoing.get()
                if isinstance(message, Exception):
                    raise message
                if message is None:
                    end_taken = True
                    break
                if resume:
                    buffer.add(message)
                yield message
            yield pb.ClientMessage(end=pb.SessionEnd())

        try:
            async with (
                aclosing(messages()) as outgoing_messages,
                aclosing(
                    call_replies(channel, metadata, outgoing_messages, reply_timeout_s=settings.reply_timeout_s)
                ) as replies,
            ):
                async for reply in replies:
                    kind = reply.WhichOneof("kind")
                    if kind == "accepted":
                        if accepted.done():
                            continue  # a second `accepted` on one stream says nothing new
                        token = reply.accepted.resume_token
                        refused_at_start = False
                        accepted.set_result(replay_from_ms(reply.accepted))
                        broken_since = None
                        attempt = 0
                        backoff.reset()
                    elif kind == "sentence":
                        buffer.commit(replay_from_ms(reply.sentence))
                        if reply.sentence.index in received:
                            continue
                        received.add(reply.sentence.index)
                    yield reply
            return
        except StatusError as error:
            if resuming and refused_at_start and error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                raise ResumeLostError(
                    error.code(), error.details(), error.initial_metadata(), error.trailing_metadata()
                ) from None
            never_accepted = answered and refused_at_start  # only `start` went out: open the session afresh
            if not resume or not resumable_status(error) or not (token or never_accepted):
                raise  # the server's answer, an unreachable server, or no session to resume (no state store)
            broken_since = broken_since or time.monotonic()
            if time.monotonic() - broken_since > settings.reconnect_s:
                raise
            wait_s = backoff.next_s()
            attempt += 1
            log.warning("the stream broke (%s); reconnecting in %.1f s to resume the session", error, wait_s)
            reconnecting = Reconnecting(attempt=attempt, wait_s=wait_s, error=error)
        yield reconnecting
        await asyncio.sleep(reconnecting.wait_s)


def replay_from_ms(message: pb.SessionAccepted | pb.SentenceUpdate) -> float:
    """Where a resume re-sends from, in ms of the audio clock: the server's `replay_from_sample` (16 kHz), or
    for a server that does not send it, the end of the sentence (`accepted.resume_from_ms`, `sentence.end_ms`)."""
    if message.HasField("replay_from_sample"):
        return message.replay_from_sample / REPLAY_CLOCK_SAMPLES_PER_MS
    return float(message.resume_from_ms if isinstance(message, pb.SessionAccepted) else message.end_ms)
