"""Waiting for a stream's next message: the stall timeout counted in time the server was awake, the session's
time limit and the server's shutdown.

A stream is stalled when no message arrived for `stall_timeout_s` of the server's own running time. The wait
is cut into slices of at most `SLICE_S`; a slice that ends on time adds its length to the silence, but one
that ends more than `LATE_SLACK_S` late (the process was stopped with SIGSTOP, its VM frozen, its event loop
blocked) adds only the length it asked for, and is followed by a full slice that must end on time, without a
message, before the stream counts as stalled. So a server that wakes from a pause first reads what waited in
its sockets instead of blaming its clients for the messages it could not read.

An admitted session has an audio floor too (`min_audio_speed`): a second count of the time it waited for its
client, credited the same way, from which each audio chunk takes its length over `min_audio_speed`. A stream
whose count reaches `audio_grace_s` sends too little audio to hold a slot (only `start`, or a few bytes now and
then) and ends, as a stalled one does.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from depscreen.streamer.clock import Clock, SystemClock

if TYPE_CHECKING:
    from depscreen.streamer.settings import ServerSettings

T = TypeVar("T")

SLICE_S = 1.0
"""Longest single wait; the silence is re-checked after each."""
LATE_SLACK_S = 0.5
"""A wait that ends later than this after it was due counts as time the server was not running."""


class StreamEnd(enum.Enum):
    """Why a wait for the next message ended without one."""

    STALLED = "stalled"
    TIME_UP = "time up"
    SHUTDOWN = "shutdown"
    STARVED = "starved"


@dataclass
class Silence:
    """How long a stream has been silent, in seconds the server was running; `timeout_s` 0 = never stalls."""

    timeout_s: float
    silent_s: float = 0.0
    woke_late: bool = False
    """The last wait ended late: before the stream may be declared stalled, one more full slice re-checks
    whether a message was waiting."""

    @property
    def stalled(self) -> bool:
        return bool(self.timeout_s) and self.silent_s >= self.timeout_s and not self.woke_late

    def next_wait_s(self) -> float | None:
        """How long the next slice may wait; None when the stream can never stall."""
        if not self.timeout_s:
            return None
        return min(SLICE_S, max(SLICE_S if self.woke_late else 0.0, self.timeout_s - self.silent_s))

    def credit(self, asked_s: float | None, took_s: float) -> None:
        """Count a wait that asked for `asked_s` and took `took_s`: in full when it ended on time, else only
        what it asked for."""
        if asked_s is not None:
            self.woke_late = took_s > asked_s + LATE_SLACK_S
            self.silent_s += asked_s if self.woke_late else took_s

    def heard(self) -> None:
        """A message arrived."""
        self.silent_s, self.woke_late = 0.0, False

    def fed(self, credit_s: float) -> None:
        """Something worth `credit_s` of waiting arrived (audio, against the audio floor): the count goes down
        by that much, never below 0."""
        self.silent_s, self.woke_late = max(0.0, self.silent_s - credit_s), False


@dataclass
class AudioFloor(Silence):
    """The count that ends a session sending less than `min_speed` seconds of audio per second waited: a
    Silence that each chunk of audio brings down by its length over `min_speed`."""

    min_speed: float = 1.0

    def took_audio(self, seconds: float) -> None:
        """`seconds` of audio arrived."""
        self.fed(seconds / self.min_speed)


def audio_floor(settings: ServerSettings) -> AudioFloor | None:
    """The audio floor of an admitted session (`min_audio_speed`, `audio_grace_s`); None when there is none."""
    return AudioFloor(settings.audio_grace_s, min_speed=settings.min_audio_speed) if settings.min_audio_speed else None


@dataclass
class MessageWait:
    """The waits of one stream: `next(pending)` until a message arrives or the stream must end."""

    silence: Silence
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Clock = field(default_factory=SystemClock)
    starvation: AudioFloor | None = None
    """The audio floor of an admitted session: credited with every wait like `silence`, but brought down only
    by the audio that arrives (`took_audio`, by the caller); None before `start`."""
    wake_every_s: float = 0.0
    """A `pending` that completes sooner than this after its wait began is taken only at this mark, the time
    up to it credited as waiting: for a `pending` that only signals that media arrived (a WebRTC peer's
    frames), so a stream of frames wakes its watch a few times a second, not 50-80 times. 0 = at once (a gRPC
    stream's messages are the stream itself)."""

    async def next(self, pending: asyncio.Future[T], time_left_s: Callable[[], float | None]) -> T | StreamEnd:
        """The result of `pending` (the stream's next message), or why the stream ends first: it stalled, it
        fell behind its audio floor (`starvation`), `time_left_s()` (the session's time limit, None = none) ran
        out, or the server is shutting down. `pending` is left running when the wait ends without it."""
        stop = asyncio.ensure_future(self.shutdown.wait())
        try:
            while True:
                if self.shutdown.is_set():
                    return StreamEnd.SHUTDOWN
                left = time_left_s()
                if left is not None and left <= 0:
                    return StreamEnd.TIME_UP
                if self.silence.stalled:
                    return StreamEnd.STALLED
                starvation = self.starvation
                if starvation is not None and starvation.stalled:
                    return StreamEnd.STARVED
                asked = self.silence.next_wait_s()
                asked_floor = starvation.next_wait_s() if starvation is not None else None
                waits = [w for w in (asked, asked_floor, left) if w is not None]
                began = self.clock.now()
                await self.clock.wait((pending, stop), min(waits) if waits else None)
                settle_s = self.wake_every_s - (self.clock.now() - began)
                if pending.done() and settle_s > 0:
                    await self.clock.wait((stop,), settle_s)
                took = self.clock.now() - began
                if starvation is not None:
                    starvation.credit(min((w for w in (asked, asked_floor) if w is not None), default=None), took)
                if pending.done():
                    self.silence.heard()
                    return pending.result()
                self.silence.credit(asked, took)
        finally:
            stop.cancel()
