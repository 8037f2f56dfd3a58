"""MicroBatcher: sentences of many sessions become one batched encode + model step over the StatePool.

A batch closes when it holds `max_batch` sentences or `max_wait_ms` after its first one arrived. A session
waits for its sentence's estimate before it can submit the next, so a batch never holds two sentences of
one session and each session's order is kept. The batch runs in the worker pool; one batch at a time owns
the pool. Sessions idle for `park_after_s` give their slot back (their state is kept as a CPU copy) and get
one again, transparently, with their next sentence; when the pool is full, the least recently stepped
session outside the batch is parked to make room, so a pool smaller than the session count still works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.model.state import RecurrentState
from depscreen.engine.runtime.screener import EvidenceAccount, RunningEstimate, Screener, SessionTrack
from depscreen.engine.runtime.state_pool import PoolExhausted, StatePool

Runner = Callable[..., Awaitable[Any]]
"""Runs a blocking function off the event loop: `await run(fn, *args)` (e.g. in a thread pool)."""


@dataclass(frozen=True)
class BatcherSettings:
    """Micro-batching knobs, with their defaults."""

    max_batch: int = 32
    """Most sentences in one batched step."""
    max_wait_ms: float = 5.0
    """Longest a sentence waits for others to join its batch; short because each step costs ~0.3 ms."""
    park_after_s: float = 300.0
    """A session with no sentence for this long gives its state slot back until its next sentence."""
    snapshots: bool = False
    """Keep a CPU copy of each session's state after each of its steps (in `PoolEntry.track`), for
    snapshots of resumable sessions; off, a step copies nothing."""


@dataclass(eq=False)
class PoolEntry:
    """A session's place in the pool: a slot while active, its track (state and evidence) always."""

    track: SessionTrack = field(default_factory=SessionTrack)
    """The session's evidence account, and a CPU copy of its model state: while it holds no slot (parked,
    or restored from a snapshot: None is the initial state), and after each step when the batcher keeps
    snapshots. While the session holds a slot and snapshots are off, the slot is the only current copy."""
    slot: int | None = None
    last_step: float = field(default_factory=time.monotonic)
    busy: bool = False


@dataclass
class _Pending:
    entry: PoolEntry
    features: SentenceFeatures
    future: asyncio.Future


class MicroBatcher:
    """Queue of sentences from all sessions; one worker loop forms and runs the batches."""

    def __init__(
        self,
        screener: Screener,
        pool: StatePool,
        run: Runner,
        settings: BatcherSettings = BatcherSettings(),
        on_batch: Callable[[int, float, float], None] | None = None,
    ) -> None:
        if settings.max_batch > pool.capacity:
            raise ValueError(f"max_batch={settings.max_batch} exceeds the state pool's {pool.capacity} slots")
        self.screener = screener
        self.pool = pool
        self.settings = settings
        self._run = run
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._entries: set[PoolEntry] = set()
        self._task: asyncio.Task | None = None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="depscreen-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def attach(self) -> PoolEntry:
        """A new session: no slot until its first sentence."""
        entry = PoolEntry()
        self._entries.add(entry)
        return entry

    def restore(self, entry: PoolEntry, track: SessionTrack) -> None:
        """Continue a session from a snapshot's track (before its first sentence here)."""
        if entry.slot is not None or entry.busy:
            raise RuntimeError("a session can be restored only before its first sentence")
        entry.track = track

    def detach(self, entry: PoolEntry) -> None:
        """The session ended: its slot (if any) is free again."""
        self._entries.discard(entry)
        if entry.slot is not None:
            self.pool.release(entry.slot)
            entry.slot = None

    async def step(self, entry: PoolEntry, features: SentenceFeatures) -> RunningEstimate:
        """Score one sentence of a session; resolves when its batch has run."""
        if entry.busy:
            raise RuntimeError("a session submitted a sentence before its previous one was scored")
        entry.busy = True
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(entry, features, future))
        try:
            return await future
        finally:
            entry.busy = False
            entry.last_step = time.monotonic()

    def park_idle(self, now: float | None = None) -> int:
        """Give back the slots of sessions idle longer than `park_after_s`; returns how many were parked.

        The batch loop calls it after every batch, when no batch touches the pool.
        """
        now = time.monotonic() if now is None else now
        idle = [
            h
            for h in self._entries
            if h.slot is not None and not h.busy and now - h.last_step > self.settings.park_after_s
        ]
        for entry in idle:
            self._park(entry)
        return len(idle)

    def _park(self, entry: PoolEntry) -> None:
        assert entry.slot is not None
        entry.track.state = self.pool.export(entry.slot)
        self.pool.release(entry.slot)
        entry.slot = None

    def _place(self, entry: PoolEntry, batch: set[PoolEntry]) -> None:
        """Give a session a slot: a fresh one, or its parked state back. When the pool is full, the session
        that stepped least recently and is not in this batch is parked to make room."""
        try:
            entry.slot = self.pool.acquire()
        except PoolExhausted:
            candidates = [h for h in self._entries if h.slot is not None and h not in batch]
            self._park(min(candidates, key=lambda h: h.last_step))
            entry.slot = self.pool.acquire()
        if entry.track.state is not None:
            self.pool.load(entry.slot, entry.track.state)

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000.0
        while len(batch) < self.settings.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            try:
                in_batch = {p.entry for p in live}
                for pending in live:
                    if pending.entry.slot is None:
                        self._place(pending.entry, in_batch)
                estimates, tracks, wall_s, cpu_s = await self._run(self._step, live)
            except Exception as error:  # a failed batch fails its sentences, never the loop
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending, estimate, (state, account) in zip(live, estimates, tracks, strict=True):
                pending.entry.track.advance(state, account)  # on the loop: the entries are the batcher's
                if not pending.future.done():
                    pending.future.set_result(estimate)
            if self._on_batch is not None:
                self._on_batch(len(live), wall_s, cpu_s)
            self.park_idle()

    def _step(
        self, batch: list[_Pending]
    ) -> tuple[list[RunningEstimate], list[tuple[RecurrentState | None, EvidenceAccount]], float, float]:
        """Encode and step one batch (on a worker thread); returns the estimates, each session's state snapshot
        (None without `snapshots`) and account after it, and the batch's wall and CPU seconds."""
        start, cpu_start = time.perf_counter(), time.thread_time()
        slots = torch.tensor([p.entry.slot for p in batch], device=self.screener.device)
        state = self.pool.gather(slots)
        estimates, new_state, accounts = self.screener.step_batch(
            [p.features for p in batch], [p.entry.track.account for p in batch], state
        )
        self.pool.scatter(slots, new_state)
        snapshots = [new_state.cpu_row(row) if self.settings.snapshots else None for row in range(len(batch))]
        tracks = list(zip(snapshots, accounts, strict=True))
        return estimates, tracks, time.perf_counter() - start, time.thread_time() - cpu_start
