"""SnapshotWriter: what makes a live session resumable, beside its core: a snapshot after every sentence, the
token, the updates a resuming client lacks.

It follows the session as an observer (`session.py`): told each scored sentence, it writes the session's
snapshot (`resume.py`: model state, counts, last estimate, the last `KEPT_UPDATES` sentence updates without
their transcripts) to the state store in the worker pool. The updates are kept in their wire form because that
is what is stored and what is re-sent. A store that fails is a counted snapshot failure, never the end of an
interview: a new session then runs without resume (its `accepted` says so), a live one is resumable again once
a later snapshot is written. A write the store fences (the session was resumed on another stream since this
one began: `state_store.FencedError`) ends this stream with ABORTED before its sentence goes out: it is stale,
and writes nothing more.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from depscreen.engine.pipeline import Notice, SessionCounts
from depscreen.engine.runtime.batcher import PoolEntry
from depscreen.streamer.convert import sentence_update, server_message
from depscreen.streamer.interview import Input, InterviewSummary, Opening, ScoredSentence
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.protocol import ErrorKind, ProtocolError
from depscreen.streamer.resume import KEPT_UPDATES, Resumer, SessionSnapshot, Ticket, kept_update
from depscreen.streamer.state_store import FencedError, StoreError
from depscreen.v1 import screening_pb2 as pb

log = logging.getLogger(__name__)

NOT_RESUMABLE_STORE_DOWN = Notice("not_resumable_store_down", "not resumable: the state store is unavailable")
"""The `accepted` notice of a session opened while its server's state store failed."""

Run = Callable[..., Awaitable[object]]
"""Runs blocking work off the event loop (`SessionHub.run`)."""
T = TypeVar("T")


class SnapshotWriter:
    """A resumable session's snapshots: `save` after each sentence (as an observer), `finish` on `end`,
    `forget` once a resumed finished session's summary is sent."""

    def __init__(
        self,
        resumer: Resumer,
        ticket: Ticket,
        counts: SessionCounts,
        entry: PoolEntry,
        run: Run,
        metrics: Metrics,
        kept: tuple[pb.SentenceUpdate, ...] = (),
        resend: list[pb.SentenceUpdate] | None = None,
        summary: pb.SessionSummary | None = None,
    ) -> None:
        """`counts` and `entry`: the session's own counts and pool entry, read at each snapshot; `kept`:
        the updates of the snapshot it goes on from; `resend`: those a resuming client lacks; `summary`: that
        of a finished session it resumes."""
        self.resumer = resumer
        self.ticket = ticket
        self.resend = resend or []
        """The kept updates a resuming client said it lacks, to send right after `accepted`."""
        self.summary = summary
        """The summary of a finished session (it ended with `end`) being resumed: sent after `resend`, then the
        stream ends and the record is deleted (`forget`); None for a session that goes on."""
        self._counts = counts
        self._entry = entry
        self._run = run
        self._metrics = metrics
        self._kept: deque[pb.SentenceUpdate] = deque(kept, maxlen=KEPT_UPDATES)
        self._last: SessionSnapshot | None = None

    @property
    def token(self) -> str:
        return self.resumer.token(self.ticket)

    def took(self, item: Input) -> None:
        """Inputs are not snapshotted: a resuming client re-sends its media from the resume point's
        `first_sample` (`pipeline.ResumePoint`)."""

    async def scored(self, sentence: ScoredSentence) -> None:
        self._kept.append(kept_update(sentence_update(sentence)))
        features = sentence.features
        snapshot = SessionSnapshot(
            session_id=self.ticket.session_id,
            next_index=features.index + 1,
            resume_from_ms=features.end_ms,
            counts=replace(self._counts),
            track=replace(self._entry.track),  # a snapshot: the batcher moves the live track on
            estimate=sentence.estimate,
            updates=tuple(self._kept),
            resume=sentence.resume,
        )
        await self.save(snapshot)

    async def save(self, snapshot: SessionSnapshot) -> bool:
        """Write `snapshot`; whether it was written. ProtocolError(ABORTED) when this stream is fenced."""
        self._last = snapshot
        ticket = await self._store(self.resumer.save, self.ticket, snapshot)
        if ticket is None:
            return False
        self.ticket = ticket
        return True

    async def finish(self, summary: InterviewSummary) -> None:
        """The interview ended with `end`: its record becomes its last snapshot with `summary`, kept for
        `finished_retention_s` for a client whose stream breaks before the summary reaches it."""
        assert self._last is not None, "a resumable session saves a snapshot when it opens"
        finished = replace(self._last, summary=server_message(summary).summary)  # counts and estimate, no text
        await self._store(self.resumer.finish, self.ticket, finished)

    async def forget(self) -> None:
        """A resumed finished session's summary went out again: its record is deleted."""
        await self._store(self.resumer.forget, self.ticket)

    def close(self) -> None:
        """Nothing to release: the snapshot stays until it is forgotten or expires."""

    async def _store(self, fn: Callable[..., T], *args: object) -> T | None:
        """A snapshot write or delete, and its result (None when it failed); a store that fails is logged and
        counted, a fenced write ends the stream (ProtocolError ABORTED)."""
        try:
            return await self._run(fn, *args)
        except StoreError as error:
            self._metrics.errors_total.labels(code="checkpoint").inc()
            log.warning("session %s could not be snapshotted: %s", self.ticket.session_id, error)
            return None
        except FencedError as error:
            log.warning("session %s: a stale stream stops without writing: %s", self.ticket.session_id, error)
            raise ProtocolError(
                ErrorKind.ABORTED,
                f"this stream of the session is stale: {error}; it stops without writing (go on with the newest "
                "stream, or resume again with the token)",
            ) from None


def updates_to_resend(snapshot: SessionSnapshot, start: Opening) -> tuple[list[pb.SentenceUpdate], list[Notice]]:
    """The kept updates a resuming client lacks (none when it does not say what it holds), and a notice when
    some it lacks are no longer kept."""
    first = start.received_sentences
    if first is None:
        return [], []
    resend = [update for update in snapshot.updates if update.index >= first]
    oldest = resend[0].index if resend else snapshot.next_index
    if oldest > first:
        notice = Notice(
            "updates_not_kept",
            f"sentence updates {first}-{oldest - 1} are no longer kept and cannot be sent again "
            f"(a snapshot keeps the last {KEPT_UPDATES})",
        )
        return resend, [notice]
    return resend, []
