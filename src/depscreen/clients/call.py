"""One `StreamSession` call: a task writes the messages, replies are read as they come, and a call whose
server goes quiet while the client is sending is cancelled as stalled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import grpc

from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

from .errors import ServerStalledError, StatusError, UnavailableError

WRITE_AFTER_END = "Internal error from Core"
"""The details of the INTERNAL status grpcio's asyncio client reports instead of the real one when a write raced
the end of the stream (grpc/grpc#36066); when the connection is gone too, the real one was UNAVAILABLE."""
CONNECTION_CHECK_S = 1.0
"""How long to wait for a connection that ended a stream under a hidden status to show that it is gone."""
GUARD_CHECKS_PER_TIMEOUT = 4
"""How often the stall guard looks, per `reply_timeout_s` (it notices a stall at most a quarter late)."""


async def call_replies(
    channel: grpc.aio.Channel,
    metadata: Sequence[tuple[str, str]],
    messages: AsyncIterable[pb.ClientMessage],
    *,
    reply_timeout_s: float | None = None,
) -> AsyncIterator[pb.ServerMessage]:
    """Open `StreamSession` on `channel`, send `messages` as given (nothing is added or checked) and yield the
    replies while sending goes on.

    After the first message (the start), nothing more is written until the server has answered it (its
    `accepted`) or ended the stream, so a refused start is raised with its own status. When the server ends the
    stream early, the remaining messages are not sent and its status is raised, typed (`StatusError.of`); an
    exception of `messages` itself cancels the call and is raised. With
    `reply_timeout_s`, a call whose server sent nothing for that long while the client was sending (or waiting
    for the first reply) is cancelled and `ServerStalledError` raised.
    """
    call = screening_pb2_grpc.ScreeningStub(channel).StreamSession(metadata=tuple(metadata))
    watch = _Watch()
    sender = asyncio.create_task(_send_all(call, messages, watch))
    guard = None if reply_timeout_s is None else asyncio.create_task(watch.guard(call, reply_timeout_s))
    try:
        while True:
            try:
                response = await call.read()
            except (asyncio.CancelledError, grpc.aio.AioRpcError) as error:
                if isinstance(error, grpc.aio.AioRpcError) and await _hid_a_broken_connection(channel, error):
                    raise UnavailableError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the connection to the server broke while sending (grpcio said INTERNAL: {WRITE_AFTER_END})",
                        error.initial_metadata(),
                        error.trailing_metadata(),
                    ) from None
                if watch.stalled:
                    raise ServerStalledError(
                        f"the server sent nothing for {reply_timeout_s:g} s while the client was sending "
                        "(hung server or broken link)"
                    ) from None
                failure = _failure(sender)
                if failure is not None:
                    raise failure from None
                if isinstance(error, grpc.aio.AioRpcError):
                    raise StatusError.of(error) from None
                raise
            if response is grpc.aio.EOF:
                break
            watch.replied()
            yield response
    finally:
        for task in (sender, guard):
            if task is not None:
                task.cancel()
        await asyncio.wait([task for task in (sender, guard) if task is not None])
        _failure(sender)  # retrieves an exception the stream's own status superseded
        call.cancel()


class _Watch:
    """Whether the server has gone quiet while the client sends: nothing from it for the timeout while a write
    is in flight or was made within the timeout, or before its first reply."""

    def __init__(self) -> None:
        self.last_reply = time.monotonic()
        self.last_write: float | None = None
        self.writing = False
        self.answered = asyncio.Event()
        self.stalled = False

    def begin_write(self) -> None:
        self.writing = True

    def wrote(self) -> None:
        self.writing = False
        self.last_write = time.monotonic()

    def replied(self) -> None:
        self.answered.set()
        self.last_reply = time.monotonic()

    def quiet_while_sending(self, timeout_s: float) -> bool:
        now = time.monotonic()
        sending = (
            self.writing
            or not self.answered.is_set()
            or (self.last_write is not None and now - self.last_write < timeout_s)
        )
        return sending and now - self.last_reply > timeout_s

    async def guard(self, call: grpc.aio.StreamStreamCall, timeout_s: float) -> None:
        """Cancel `call` once the server has sent nothing for `timeout_s` while the client was sending."""
        while not call.done():
            await asyncio.sleep(timeout_s / GUARD_CHECKS_PER_TIMEOUT)
            if self.quiet_while_sending(timeout_s):
                self.stalled = True
                call.cancel()
                return


async def _send_all(call: grpc.aio.StreamStreamCall, messages: AsyncIterable[pb.ClientMessage], watch: _Watch) -> None:
    """Write every message then half-close; a call that already ended stops the writing quietly, because
    the reading side raises its status.

    A write racing the server's status makes grpcio report INTERNAL instead of that status (WRITE_AFTER_END),
    so the writing waits where the server may refuse: nothing is written before the server's initial metadata,
    which it sends once it has authenticated the stream (a refused token, UNAUTHENTICATED), and nothing after
    the first message (not even the half-close) until the server has answered it (a refused start: quota,
    capacity, a bad field). If the server ends the stream instead, the reading side cancels this task."""
    try:
        watch.begin_write()
        await call.initial_metadata()
        watch.wrote()
        if call.done():
            return
        started = False
        async for message in messages:
            watch.begin_write()
            if started:
                await watch.answered.wait()
            await call.write(message)
            watch.wrote()
            started = True
        if started:
            await watch.answered.wait()
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return
    except Exception:
        call.cancel()
        raise


async def _hid_a_broken_connection(channel: grpc.aio.Channel, error: grpc.aio.AioRpcError) -> bool:
    """Whether `error` is grpcio's INTERNAL for a write that raced the end of the stream, and the channel's
    connection went down with it (a server killed or a link reset mid-write)."""
    if error.code() != grpc.StatusCode.INTERNAL or error.details() != WRITE_AFTER_END:
        return False
    state = channel.get_state()
    if state == grpc.ChannelConnectivity.READY:
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), CONNECTION_CHECK_S)
        except TimeoutError:
            return False
    return channel.get_state() != grpc.ChannelConnectivity.READY


def _failure(sender: asyncio.Task[None]) -> BaseException | None:
    """The exception the sending task ended with, if it has ended with one (this also marks it retrieved)."""
    if sender.done() and not sender.cancelled():
        return sender.exception()
    return None
