"""A virtual clock for in-process server tests: waits move its time on at once, timers fire on the way."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable


class VirtualClock:
    """The server's `Clock` in virtual time: `sleep` and `wait` return as soon as the event loop has run what
    was ready, with the clock moved on by the time they asked for (or to the timer that completed a waited-on
    future), so a stall timeout of 30 s or a session limit of an hour is checked in milliseconds."""

    def __init__(self) -> None:
        self.time = 0.0
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run `callback` when the clock reaches `when` (a message arriving, a client going quiet)."""
        heapq.heappush(self._timers, (when, next(self._order), callback))

    async def sleep(self, seconds: float) -> None:
        await self._advance_to(self.time + seconds, set())

    async def wait(self, pending: Iterable[asyncio.Future], timeout_s: float | None) -> None:
        futures = set(pending)
        await asyncio.sleep(0)
        if any(f.done() for f in futures):
            return
        if timeout_s is not None:
            await self._advance_to(self.time + timeout_s, futures)
        elif self._timers:
            await self._advance_to(max(when for when, _, _ in self._timers), futures)
        else:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)

    async def _advance_to(self, target: float, futures: set[asyncio.Future]) -> None:
        while self._timers and self._timers[0][0] <= target:
            when, _, callback = heapq.heappop(self._timers)
            self.time = max(self.time, when)
            callback()
            await asyncio.sleep(0)
            if any(f.done() for f in futures):
                return
        self.time = max(self.time, target)
        await asyncio.sleep(0)
