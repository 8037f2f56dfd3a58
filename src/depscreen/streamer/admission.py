"""SessionHub: what the sessions of one server share (settings, model, extractors, batcher, metrics,
workers) and the door they come in by: admission against `max_sessions`, per-token quotas (by default half of
`max_sessions` each, so no one token can hold every slot) and the CPU backlog, and opening a new or resumed
`LiveSession`."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from depscreen.engine.features.asr import primary_language
from depscreen.engine.pipeline import Notice, PipelineSettings, ResumePoint, SessionPipeline
from depscreen.engine.questions import QuestionTrack
from depscreen.engine.runtime.batcher import MicroBatcher
from depscreen.engine.runtime.checkpoint import TextRoute, text_route
from depscreen.engine.segment import SegmenterSettings
from depscreen.streamer.auth import principal_fingerprint
from depscreen.streamer.clock import Clock, SystemClock
from depscreen.streamer.convert import model_info_message
from depscreen.streamer.interview import Input, Opening, ScoredSentence
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.parts import ServerParts
from depscreen.streamer.protocol import (
    RETRY_AFTER_S,
    ErrorKind,
    ProtocolError,
    check_opening,
    check_resume_point,
    store_unavailable,
)
from depscreen.streamer.record import RecordBudget, SessionRecorder, record_failed
from depscreen.streamer.resume import ResumeError, Resumer, SessionSnapshot, Ticket
from depscreen.streamer.roles import CLINICIAN, Voices, check_roles, pipeline_channels
from depscreen.streamer.session import LiveSession
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.snapshot_writer import NOT_RESUMABLE_STORE_DOWN, SnapshotWriter, updates_to_resend
from depscreen.streamer.state_store import FencedError, StoreError

if TYPE_CHECKING:
    from depscreen.streamer.tracing import SessionTrace, Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class SessionHub:
    """What every session of a server shares: settings, model, extractors, batcher, metrics, workers."""

    settings: ServerSettings
    parts: ServerParts
    """The model, feature extractors, recogniser and language heads the sessions run on (`parts.py`)."""
    batcher: MicroBatcher
    metrics: Metrics
    executor: Executor
    active: int = 0
    in_flight: int = 0
    per_principal: dict[str, int] = field(default_factory=dict)
    """Open sessions of each authenticated principal (token or JWT subject) that has any."""
    resumer: Resumer | None = None
    """Snapshots and resume tokens; None on a server without a state store (no session is resumable)."""
    on_admission: Callable[[bool], None] | None = None
    """Called with `admitting` each time it changes (the server's gRPC health follows it)."""
    tracing: Tracing | None = None
    """Session and stage spans (`tracing.py`); None when traces are off."""
    clock: Clock = field(default_factory=SystemClock)
    """What session time limits and pacing are measured on (`clock.py`)."""
    record_budget: RecordBudget | None = None
    """Bytes the recordings may take (`record`'s folder, `record.py`); None when nothing is recorded."""
    live_records: set[str] = field(default_factory=set)
    """Record ids of the resumable sessions streaming now: one resume token opens one live stream at a time."""
    _admitted_last: bool = field(default=True, init=False, repr=False)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server begins shutting down: new sessions are refused, live streams end (`service.py`)."""

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run CPU-bound work in the worker pool (counted for the backlog)."""
        self.in_flight += 1
        self._report_queue()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.in_flight -= 1
            self._report_queue()

    @property
    def backlog(self) -> float:
        """Work waiting beyond what the workers are doing, per worker."""
        workers = self.settings.worker_count
        return max(0, self.in_flight - workers + self.batcher.queue_depth) / workers

    @property
    def admitting(self) -> bool:
        """Whether a new session would be admitted now: not shutting down, below `max_sessions` and not over
        `reject_backlog`."""
        if self.shutdown.is_set():
            return False
        return self.active < self.settings.max_sessions and self.backlog <= self.settings.reject_backlog

    def _report_queue(self) -> None:
        self.metrics.queue_depth.set(max(0, self.in_flight - self.settings.worker_count) + self.batcher.queue_depth)
        self._report_admission()

    def _report_admission(self) -> None:
        admitting = self.admitting
        if admitting != self._admitted_last:
            self._admitted_last = admitting
            if self.on_admission is not None:
                self.on_admission(admitting)

    async def open(self, start: Opening, principal: str | None = None, resumable: bool = False) -> LiveSession:
        """Admit a session (for `principal`, None on an open server), or raise ProtocolError. `resumable`: the
        transport can resume (the server needs a state store too): the session gets a resume token and
        snapshots, and a `start.resume_token` continues an earlier session."""
        if self.shutdown.is_set():
            raise ProtocolError(
                ErrorKind.UNAVAILABLE, "the server is shutting down: retry, another replica will take the session"
            )
        resumer = self.resumer if resumable else None
        check_opening(start, resumable=resumer is not None)
        check_roles(start)
        ticket, snapshot = (
            await self._restore(resumer, start.resume_token, principal) if start.resume_token else (None, None)
        )
        if snapshot is not None:
            check_resume_point(start, snapshot)
        self._check_principal_quota(principal)
        if not self.admitting:
            full = self.active >= self.settings.max_sessions
            self.metrics.rejected_sessions_total.labels(reason="capacity" if full else "overloaded").inc()
            state = f"at its limit of {self.settings.max_sessions} concurrent sessions" if full else "overloaded"
            raise ProtocolError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"server is {state}: retry in {RETRY_AFTER_S:g} s, or on another replica",
                retry_after_s=RETRY_AFTER_S,
            )
        if ticket is not None:
            self._claim(ticket)
        self.active += 1
        self._report_admission()
        self.metrics.sessions_active.inc()
        self.metrics.sessions_total.inc()
        if principal is not None:
            self.per_principal[principal] = self.per_principal.get(principal, 0) + 1
        session_id = snapshot.session_id if snapshot else start.session_id or uuid.uuid4().hex
        trace = self.tracing.session(session_id, principal, snapshot is not None) if self.tracing else None
        route = text_route(self.parts.screener.facts, primary_language(start.language))
        pipeline = self._new_pipeline(start, snapshot, trace, route)
        voices = self._voices(start, pipeline, snapshot) if start.channel_roles else None
        session = LiveSession(self, session_id, pipeline, principal, trace, voices)
        if voices is not None:
            session.tell(*voices.notices())
        if ticket is not None:
            session.observe(LiveRecord(self.live_records, ticket.record_id))
        if route.notice:
            code = "text_cross_lingual" if route.reads_text else "text_not_read"
            session.tell(Notice(code, route.notice))
        if route.own_head:
            session.tell(
                Notice(
                    "text_own_head",
                    f"the text modality's probability comes from the {route.own_head} text head: beside the "
                    "estimate, not part of it (its fusion weight is the model's own text pathway's)",
                )
            )
        if snapshot is not None:
            session.tell(*cold_resume_notices(snapshot))
            session.restore(snapshot)
        if self.settings.record:
            self._record(session, start)
        if resumer is not None:
            await self._make_resumable(session, resumer, ticket, snapshot, start)
        return session

    def _record(self, session: LiveSession, start: Opening) -> None:
        """Record the session into the `record` folder (`record.py`); one that cannot be made leaves it unrecorded."""

        def failed(error: OSError) -> None:
            record_failed(self.metrics, session.session_id, error)

        try:
            recorder = SessionRecorder(
                Path(self.settings.record),
                session.session_id,
                start.sample_rate_hz,
                start.channels,
                language=start.language,
                disable_asr=start.disable_asr,
                channel_roles=start.channel_roles,
                model=model_info_message(self.parts.screener),
                on_failure=failed,
                budget=self.record_budget,
                principal=principal_fingerprint(session.principal),
            )
        except OSError as error:
            failed(error)
            return
        session.observe(recorder)

    async def _make_resumable(
        self,
        session: LiveSession,
        resumer: Resumer,
        ticket: Ticket | None,
        snapshot: SessionSnapshot | None,
        start: Opening,
    ) -> None:
        """Give the session a resume token (a new one, or `ticket` with the `snapshot` it is resumed from,
        whose kept updates from `start.received_sentences` on are re-sent) and write its first snapshot. A new
        session whose first snapshot the store cannot take runs without resume, and its welcome says so."""
        if ticket is None:
            ticket = resumer.new_ticket(session.session_id, session.principal)
            self._claim(ticket)
            session.observe(LiveRecord(self.live_records, ticket.record_id))
        kept, resend = (), []
        if snapshot is not None:
            kept = snapshot.updates
            resend, notices = updates_to_resend(snapshot, start)
            session.tell(*notices)
        summary = snapshot.summary if snapshot is not None else None
        snapshot_writer = SnapshotWriter(
            resumer, ticket, session.counts, session.pool_entry, self.run, self.metrics, kept, resend, summary
        )
        if summary is not None:  # a finished session: its summary is sent again, nothing more is written
            session.make_resumable(snapshot_writer)
            return
        try:
            saved = await snapshot_writer.save(snapshot or SessionSnapshot(session.session_id))
        except ProtocolError:  # another stream resumed the session since this one restored it
            session.close(ErrorKind.ABORTED.name)
            raise
        if not saved and snapshot is None:
            session.tell(NOT_RESUMABLE_STORE_DOWN)
            return
        session.make_resumable(snapshot_writer)

    async def _restore(
        self, resumer: Resumer | None, token: str, principal: str | None
    ) -> tuple[Ticket, SessionSnapshot]:
        """The session a resume token presented by `principal` leads to and its last snapshot, or ProtocolError."""
        assert resumer is not None
        try:
            return await self.run(resumer.restore, token, principal)
        except ResumeError as error:
            log.info("a resume was refused: the token is %s", error)
            raise ProtocolError(
                ErrorKind.FAILED_PRECONDITION,
                "start.resume_token leads to no resumable session here: it is wrong, it was issued to another "
                "caller, its session ended with `end` and its summary was taken again (or kept longer than "
                f"{resumer.finished_retention_s:g} s), or it expired after {resumer.ttl_s:g} s without a sentence; "
                "start a new session (without the token)",
            ) from None
        except StoreError as error:
            raise store_unavailable(error) from None
        except FencedError:
            raise ProtocolError(
                ErrorKind.UNAVAILABLE,
                f"this session is being resumed on another stream now: retry in {RETRY_AFTER_S:g} s",
                retry_after_s=RETRY_AFTER_S,
            ) from None

    def _claim(self, ticket: Ticket) -> None:
        """Mark the ticket's session live, or refuse (UNAVAILABLE) a second stream of a session that streams now:
        two at once would fork it. The first stream's end frees it (a broken one once the server notices it:
        keepalive or stall), so a client resuming after a broken link gets in on a retry."""
        if ticket.record_id in self.live_records:
            raise ProtocolError(
                ErrorKind.UNAVAILABLE,
                "this session is streaming on another stream now (one resume token opens one stream at a time): "
                f"end that stream, or retry in {RETRY_AFTER_S:g} s once the server has noticed that it broke",
                retry_after_s=RETRY_AFTER_S,
            )
        self.live_records.add(ticket.record_id)

    def _check_principal_quota(self, principal: str | None) -> None:
        limit = self.settings.token_session_limit
        if principal is not None and limit and self.per_principal.get(principal, 0) >= limit:
            self.metrics.rejected_sessions_total.labels(reason="token_quota").inc()
            raise ProtocolError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"this token already holds its limit of {limit} concurrent sessions (max_sessions_per_token): end "
                "one, or retry later",
                retry_after_s=RETRY_AFTER_S,
            )

    def release(self, principal: str | None = None) -> None:
        if principal is not None:
            left = self.per_principal.pop(principal, 1) - 1
            if left > 0:
                self.per_principal[principal] = left
        self.active -= 1
        self.metrics.sessions_active.dec()
        self._report_admission()
        self.metrics.state_pool_slots_used.set(self.batcher.pool.slots_used)

    def _new_pipeline(
        self, start: Opening, snapshot: SessionSnapshot | None, trace: SessionTrace | None, route: TextRoute
    ) -> SessionPipeline:
        """The session's pipeline, going on from `snapshot` (media time, sentence index, counts) when it
        resumes one. Cheap (no model loading: the face detector and predictor are shared, the language heads are
        loaded at server start): it runs on the loop."""

        def on_stage(stage: str, seconds: float, cpu_seconds: float) -> None:
            self.metrics.observe_stage(stage, seconds, cpu_seconds)
            if trace is not None:
                trace.stage(stage, seconds)

        segmenter = SegmenterSettings(vad=self.settings.vad)
        resume = None
        if snapshot is not None:
            resume = snapshot.resume
            if resume is None:
                resume = ResumePoint.cold(snapshot.resume_from_ms * 16, snapshot.next_index, segmenter)
        return SessionPipeline(
            self.parts.extractors,
            sample_rate_hz=start.sample_rate_hz,
            channels=pipeline_channels(start),
            language=start.language,
            use_asr=self.settings.asr != "none" and not start.disable_asr,
            reads_text=route.reads_text,
            language_head=self.parts.language_head(route.own_head) if route.own_head else None,
            settings=PipelineSettings(video_fps=self.settings.video_fps, segmenter=segmenter),
            on_stage=on_stage,
            resume=resume,
            counts=replace(snapshot.counts) if snapshot else None,
        )

    def _voices(self, start: Opening, pipeline: SessionPipeline, snapshot: SessionSnapshot | None) -> Voices:
        """The session's channels mapped to roles, with a question track for the clinician's channel (its
        words kept only when the operator turned on `clinician_text`; a resumed session's track starts afresh
        at the resume point)."""
        questions = None
        if CLINICIAN in start.channel_roles:
            questions = QuestionTrack(
                sample_rate_hz=start.sample_rate_hz,
                settings=pipeline.settings.segmenter,
                transcriber=self.parts.extractors.transcriber if pipeline.use_asr else None,
                language=pipeline.language,
                keep_text=self.settings.clinician_text == "on",
                origin_ms=pipeline.first_sample // 16 if snapshot else 0,  # the replay's start, 16 kHz clock
            )
        return Voices(start.channel_roles, pipeline, questions)


@dataclass
class LiveRecord:
    """Follows a resumable session to free its record id from `live_records` when the session closes."""

    live: set[str]
    record_id: str

    def took(self, item: Input) -> None:
        """Inputs do not matter here."""

    async def scored(self, sentence: ScoredSentence) -> None:
        """Sentences do not matter here."""

    def close(self) -> None:
        self.live.discard(self.record_id)


COLD_RESUME = (
    "the session goes on from its snapshot, but its segmenter restarts cold at {ms} ms ({why}): sentences "
    "around that point may be cut differently than in an uninterrupted run"
)
"""The `accepted` notice of a resume that cannot go on exactly where the stream stopped."""


def cold_resume_notices(snapshot: SessionSnapshot) -> list[Notice]:
    """What a resumed session's `accepted` says when its media handling does not go on exactly."""
    if snapshot.resume is None:
        if snapshot.next_index == 0:
            return []  # nothing was cut yet: a fresh segmenter at the start is exact
        why = "the snapshot was written by an earlier release, without the segmenter's state"
    elif not snapshot.resume.segmenter.warm:
        why = "this webrtcvad build's state could not be read"
    else:
        return []
    return [Notice("resume_cold", COLD_RESUME.format(ms=snapshot.resume_from_ms, why=why))]
