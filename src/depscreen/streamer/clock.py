"""The sessions' clock: one seam for reading the time and waiting, so tests run an interview in virtual time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and waits measured in them. The server uses `SystemClock`; a test passes a virtual
    clock whose waits move its time on at once, so pacing, stall timeouts and session time limits are checked
    in milliseconds of wall time."""

    def now(self) -> float:
        """Seconds since an arbitrary start; never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...

    async def wait(self, pending: Iterable[asyncio.Future], timeout_s: float | None) -> None:
        """Return once one of `pending` is done or `timeout_s` have passed on this clock (None: no limit);
        `pending` are left running."""
        ...


class SystemClock:
    """`time.monotonic`, `asyncio.sleep` and `asyncio.wait`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, pending: Iterable[asyncio.Future], timeout_s: float | None) -> None:
        await asyncio.wait(set(pending), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
