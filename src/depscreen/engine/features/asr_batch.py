"""Decodings of many sessions in one model call: requests ready together, of compatible shape, run as a batch.

Callers (session workers closing a sentence, piece workers) hand a request to `Batcher` and block for its
result. Runner threads, one per model replica, take the oldest request, wait at most `max_wait_ms` for more
with the same key (a model call needs equal shapes: window length, prompt length), and run up to `max_batch`
of them in one call. They wait only while a caller is still preparing a request (inside `preparing()` with
none queued or running): a sentence alone never waits for batch-mates that cannot come. A batch whose call
fails is run again one request at a time, so a failure reaches only the requests that fail alone, each in its
own caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Generic, TypeVar

from depscreen.engine.features.asr import AsrCapacity

Request = TypeVar("Request")
Result = TypeVar("Result")


class Batcher(Generic[Request, Result]):
    """Runs `run(requests) -> results` (one result per request, in order) on batches of requests with equal
    `key`, on `capacity.parallel` runner threads; `on_batch` hears each call's size."""

    def __init__(
        self,
        run: Callable[[list[Request]], list[Result]],
        key: Callable[[Request], Hashable],
        capacity: AsrCapacity,
        name: str,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if capacity.max_batch < 1 or capacity.parallel < 1 or capacity.max_wait_ms < 0:
            raise ValueError(f"{capacity} is not a capacity: parallel and max_batch >= 1, max_wait_ms >= 0")
        self._run = run
        self._key = key
        self._capacity = capacity
        self._name = name
        self._on_batch = on_batch
        self._ready = threading.Condition()
        self._queue: list[tuple[Request, Hashable, float, Future[Result]]] = []
        self._runners: list[threading.Thread] = []
        self._preparing = 0
        """Callers inside `preparing()`."""
        self._running = 0
        """Requests in the runners' hands."""

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Marks a caller that is about to hand over requests (computing one, or between two): runners wait
        for batch-mates only while some such caller has nothing queued or running."""
        with self._ready:
            self._preparing += 1
        try:
            yield
        finally:
            with self._ready:
                self._preparing -= 1
                self._ready.notify_all()

    def __call__(self, request: Request) -> Result:
        """The result of `request`, run in a batch with others ready within the wait (raises its error)."""
        future: Future[Result] = Future()
        with self._ready:
            self._queue.append((request, self._key(request), time.monotonic(), future))
            if len(self._runners) < self._capacity.parallel:
                runner = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._runners)}", daemon=True)
                self._runners.append(runner)
                runner.start()
            self._ready.notify_all()
        return future.result()

    def _take(self) -> list[tuple[Request, Future[Result]]]:
        """The next batch: the oldest request and those of its key behind it, once `max_batch` of them are
        ready, the oldest has waited `max_wait_ms`, or no caller is preparing another."""
        wait_s = self._capacity.max_wait_ms / 1000
        with self._ready:
            while True:
                if not self._queue:
                    self._ready.wait()
                    continue
                _, key, arrived, _ = self._queue[0]
                same = [entry for entry in self._queue if entry[1] == key][: self._capacity.max_batch]
                left = arrived + wait_s - time.monotonic()
                coming = self._preparing > len(self._queue) + self._running
                if len(same) < self._capacity.max_batch and left > 0 and coming:
                    self._ready.wait(left)
                    continue
                self._queue = [entry for entry in self._queue if not any(entry is s for s in same)]
                self._running += len(same)
                return [(request, future) for request, _, _, future in same]

    def _serve(self) -> None:
        while True:
            batch = self._take()
            self._serve_batch(batch)
            with self._ready:
                self._running -= len(batch)
                self._ready.notify_all()

    def _serve_batch(self, batch: list[tuple[Request, Future[Result]]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            results = self._run([request for request, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name} returned {len(results)} results for {len(batch)} requests")
        except BaseException as error:  # handed to the callers, never lost in the runner
            if len(batch) == 1:
                batch[0][1].set_exception(error)
                return
            for request, future in batch:  # the batch failed: each request alone fails only itself
                self._run_alone(request, future)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _run_alone(self, request: Request, future: Future[Result]) -> None:
        if self._on_batch is not None:
            self._on_batch(1)
        try:
            future.set_result(self._run([request])[0])
        except BaseException as error:  # handed to the caller
            future.set_exception(error)
