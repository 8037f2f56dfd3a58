"""LiveSession: one interview, transport-neutral: typed inputs in, typed updates out, the protocol enforced.

A transport (the gRPC service, WebRTC) converts its wire types to the session's (`interview.py`), opens a
session through the SessionHub (`admission.py`), hands it every later input, and closes it. The session checks
the protocol, runs the engine's SessionPipeline in the worker pool (one call at a time, in arrival order, off the
event loop), sends each closed sentence through the MicroBatcher (one model step for many sessions), and yields
the updates to send. Violations raise ProtocolError (`protocol.py`) with a neutral `ErrorKind`. Time (session
limit, pacing) is read from the hub's clock.

Overload degrades in steps, by the CPU work waiting per worker (`backlog`): above `video_sparse_backlog`
video is sampled at half rate, above `video_drop_backlog` video frames are dropped, above `asr_skip_backlog`
sentences without captions get no ASR (their text modality is marked unavailable), above `reject_backlog`
new sessions are refused. An accepted session's audio is never dropped: a transport reads its next message
only when the session has taken the last one, so a slow server slows its clients instead of losing audio.

What follows a session beside its core plugs in as a `SessionObserver`: the recorder (`record.py`) and, for a
resumable session, the snapshot writer (`snapshot_writer.py`). A session resumed from a snapshot is `restore`d
from it before its first input: same model state and last estimate (its pipeline was made with the
snapshot's counts, media time and sentence index).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from depscreen.engine.pipeline import Notice, SentenceResult, SessionPipeline
from depscreen.engine.runtime.screener import RunningEstimate
from depscreen.engine.segment import ReplayMismatchError
from depscreen.streamer.interview import (
    Audio,
    Caption,
    ClinicianCaption,
    End,
    Input,
    InterviewSummary,
    ScoredSentence,
    Update,
    Video,
    Welcome,
)
from depscreen.streamer.logs import bind_session
from depscreen.streamer.protocol import ErrorKind, ProtocolError, session_time_exceeded
from depscreen.streamer.resume import SessionSnapshot
from depscreen.streamer.roles import Voices
from depscreen.streamer.settings import ServerSettings

if TYPE_CHECKING:
    from depscreen.streamer.admission import SessionHub
    from depscreen.streamer.snapshot_writer import SnapshotWriter
    from depscreen.streamer.tracing import SessionTrace

log = logging.getLogger(__name__)


VIDEO_BURST_S = 2.0
"""Seconds of video (at `max_video_fps`) a client may send ahead of its audio."""


class SessionObserver(Protocol):
    """Follows a session beside its core: told every input the session accepted (audio once checked, a video
    frame or caption once the pipeline took it: a shed or dropped one is never seen) and every sentence it scored.
    An observer handles its own failures: none ends the interview."""

    def took(self, item: Input) -> None: ...

    async def scored(self, sentence: ScoredSentence) -> None: ...

    def close(self) -> None: ...


def shed_video(backlog: float, since_last_ms: float, settings: ServerSettings) -> bool:
    """Whether to drop a video frame before it costs anything: under overload, half rate, then none."""
    if backlog > settings.video_drop_backlog:
        return True
    return backlog > settings.video_sparse_backlog and since_last_ms < 2000.0 / settings.video_fps


class LiveSession:
    """An admitted interview: `welcome()`, then `handle()` each input, then `close()` exactly once."""

    def __init__(
        self,
        hub: SessionHub,
        session_id: str,
        pipeline: SessionPipeline,
        principal: str | None = None,
        trace: SessionTrace | None = None,
        voices: Voices | None = None,
    ) -> None:
        """`voices`: the session's channels mapped to roles (`roles.py`); None: every channel is the patient's."""
        self.hub = hub
        self.trace = trace
        self.session_id = session_id
        self.principal = principal
        self.pipeline = pipeline
        self.voices = voices
        self.channels = voices.channels if voices is not None else pipeline.channels
        """Interleaved channels of the session's audio as sent."""
        self._push_audio = voices.push_audio if voices is not None else pipeline.push_audio
        self._finish_audio = voices.finish if voices is not None else pipeline.finish
        self.pool_entry = hub.batcher.attach()
        self.ended = False
        self.last_estimate: RunningEstimate | None = None
        self.counts = pipeline.counts
        """The session's counts (the pipeline's own object: one set, shared; changed only by its methods)."""
        self.notices: list[Notice] = []
        """What the welcome tells the client about this session (e.g. that it is not resumable, and why)."""
        self.snapshot_writer: SnapshotWriter | None = None
        self._observers: list[SessionObserver] = []
        self._resumed_from: SessionSnapshot | None = None
        self.started = datetime.now(UTC)
        """When the session opened on this server (wall clock, UTC): `accepted.started_at`."""
        self._closed = False
        self._started = hub.clock.now()
        self._last_video_forwarded_ms = -1.0e9
        self._video_frames_received = 0
        self._captions_received = 0
        self._bytes_per_second = pipeline.sample_rate_hz * self.channels * 2
        bind_session(session_id, principal)

    def tell(self, *notices: Notice) -> None:
        """Add `notices` to what the welcome tells the client about this session."""
        self.notices.extend(notices)

    def observe(self, observer: SessionObserver) -> None:
        """Tell `observer` every later input and scored sentence, and close it with the session."""
        self._observers.append(observer)

    def restore(self, snapshot: SessionSnapshot) -> None:
        """Go on from `snapshot` (before the first input): its model state, evidence and last estimate."""
        self._resumed_from = snapshot
        self.hub.batcher.restore(self.pool_entry, snapshot.track)
        self.last_estimate = snapshot.estimate

    def make_resumable(self, snapshot_writer: SnapshotWriter) -> None:
        """The session snapshots after every sentence and its welcome carries the resume token."""
        self.snapshot_writer = snapshot_writer
        self.observe(snapshot_writer)

    @property
    def resumable(self) -> bool:
        """Whether the client holds a resume token for this session (the server has a working state store)."""
        return self.snapshot_writer is not None

    def welcome(self) -> Welcome:
        resumed = self._resumed_from
        return Welcome(
            session_id=self.session_id,
            asr_model=self.pipeline.asr_model,
            notices=(*self.notices, *self.pipeline.notices()),
            resume_token=self.snapshot_writer.token if self.snapshot_writer is not None else "",
            resume_from_ms=resumed.resume_from_ms if resumed is not None else 0,
            next_sentence_index=resumed.next_index if resumed is not None else 0,
            started=self.started if resumed is None else None,
            replay_from_sample=self.pipeline.first_sample if resumed is not None else None,
        )

    async def handle(self, item: Input) -> AsyncIterator[Update]:
        """Apply one input; yields the updates it produced (a scored sentence, the summary)."""
        if self.ended:
            raise ProtocolError(
                ErrorKind.FAILED_PRECONDITION,
                f"`{type(item).__name__.lower()}` arrived after `end`: the session is over",
            )
        left = self.time_left()
        if left is not None and left <= 0:
            async for update in self.finish():
                yield update
            raise session_time_exceeded(self.hub.settings.max_session_s)
        if isinstance(item, Audio):
            self._check_audio(item.pcm)
            self._tell(item)
            await self._pace()
            for result in await self._closing(self._push_audio, item.pcm):
                yield await self._score(result)
        elif isinstance(item, Video):
            self._check_video_rate()
            if await self._video(item):
                self._tell(item)
        elif isinstance(item, Caption):
            self._check_caption_rate()
            if self._caption(item):
                self._tell(item)
        elif isinstance(item, ClinicianCaption):
            self._check_caption_rate()
            if self._clinician_caption(item.caption):
                self._tell(item)
        else:
            assert isinstance(item, End)
            async for update in self.finish(on_end=True):
                yield update

    async def finish(self, on_end: bool = False) -> AsyncIterator[Update]:
        """End of the interview (`end`, or a transport that closed cleanly): the last sentence, the summary.

        `on_end` (on `end`) turns a resumable session's snapshot into its finished record (with the summary,
        kept `finished_retention_s`); otherwise (a stall, a stream closed without `end`) it stays until it
        expires, so the client can still resume."""
        self.ended = True
        for result in await self._closing(self._finish_audio):
            yield await self._score(result)
        summary = InterviewSummary(
            sentences=self.pipeline.sentences,
            audio_seconds=self.pipeline.media_seconds,
            speech_seconds=self.counts.speech_ms / 1000.0,
            dropped_video_frames=self.counts.dropped_video_frames,
            dropped_captions=self.counts.dropped_captions,
            estimate=self.last_estimate,
            clinician_sentences=self.voices.clinician_sentences if self.voices is not None else 0,
        )
        if on_end and self.snapshot_writer is not None:
            await self.snapshot_writer.finish(summary)
        yield summary

    def close(self, status: str = "OK") -> None:
        """Free the session's admission and state slots (idempotent); `status`: the name of the error kind (or
        gRPC status) that ended its stream, for its trace."""
        if not self._closed:
            self._closed = True
            if self.trace is not None:
                self.trace.end(status, self.pipeline.sentences, self.pipeline.media_seconds)
            for observer in self._observers:
                observer.close()
            self.hub.batcher.detach(self.pool_entry)
            self.hub.release(self.principal)

    def time_left(self) -> float | None:
        """Seconds until `max_session_s` ends this session; None when there is no limit."""
        limit = self.hub.settings.max_session_s
        return limit - (self.hub.clock.now() - self._started) if limit else None

    def shed_video_frame(self) -> None:
        """Count a video frame a transport or the session dropped under overload before it cost anything."""
        self.counts.dropped_frame()
        self.hub.metrics.shed_video_frames_total.inc()

    def _tell(self, item: Input) -> None:
        for observer in self._observers:
            observer.took(item)

    def _check_video_rate(self) -> None:
        """End a stream whose video outruns `max_video_fps` per second of its audio (plus a short burst)."""
        self._video_frames_received += 1
        settings = self.hub.settings
        if self._video_frames_received > settings.max_video_fps * (self.pipeline.audio_seconds + VIDEO_BURST_S):
            raise ProtocolError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"video arrives faster than {settings.max_video_fps:g} frames per second of audio: send at most "
                f"that many (the server analyses {settings.video_fps:g} per second)",
            )

    def _check_caption_rate(self) -> None:
        """End a stream whose captions outrun `max_captions_per_s` per second of its audio (plus a short burst)."""
        self._captions_received += 1
        limit = self.hub.settings.max_captions_per_s
        if self._captions_received > limit * (self.pipeline.audio_seconds + VIDEO_BURST_S):
            raise ProtocolError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"captions arrive faster than {limit:g} per second of audio (max_captions_per_s): send one per "
                "phrase, as it is spoken",
            )

    async def _closing(self, work: Callable[..., list[SentenceResult]], *args: object) -> list[SentenceResult]:
        """Run a pipeline call that may close sentences (`push_audio`, `finish`) in the worker pool. ASR is the
        costliest stage: under heavy load (`asr_skip_backlog`) the sentences it closes without captions go
        without text, and each one is counted as shed. A resumed session whose client re-sends other audio than
        it sent before the break is ended (FAILED_PRECONDITION), never merged."""
        transcribe = self.hub.backlog <= self.hub.settings.asr_skip_backlog
        try:
            results = await self.hub.run(work, *args, transcribe)
        except ReplayMismatchError as error:
            self.hub.metrics.errors_total.labels(code="replay_mismatch").inc()
            raise ProtocolError(ErrorKind.FAILED_PRECONDITION, str(error)) from None
        if not transcribe and self.pipeline.use_asr:
            shed = sum(1 for result in results if not result.features.transcript_source)
            self.hub.metrics.shed_asr_total.inc(shed)
        return results

    async def _pace(self) -> None:
        """Hold a client that sends faster than `max_speed` x real time (after a `burst_s` allowance)."""
        speed = self.hub.settings.max_speed
        if not speed:
            return
        clock = self.hub.clock
        ahead = self.pipeline.audio_seconds - self.hub.settings.burst_s - speed * (clock.now() - self._started)
        if ahead > 0:
            await clock.sleep(ahead / speed)

    async def _score(self, result: SentenceResult) -> ScoredSentence:
        stepped = time.perf_counter()
        estimate = await self.hub.batcher.step(self.pool_entry, result.features)
        if self.trace is not None:
            self.trace.stage("model", time.perf_counter() - stepped)
        self.hub.metrics.state_pool_slots_used.set(self.hub.batcher.pool.slots_used)
        self.last_estimate = estimate
        self.counts.scored(result.features)
        question = self.voices.question_for(result.features.start_ms) if self.voices is not None else None
        resume = result.resume if self.resumable else None  # only a resumable session's client keeps media
        sentence = ScoredSentence(
            result.features, estimate, time.perf_counter() - result.closed_at, question=question, resume=resume
        )
        for observer in self._observers:
            await observer.scored(sentence)
        self.hub.metrics.sentence_latency.observe(sentence.latency_s)
        self.hub.metrics.sentences_total.inc()
        return sentence

    def _check_audio(self, data: bytes) -> None:
        channels = self.channels
        if len(data) % (2 * channels):
            raise ProtocolError(
                ErrorKind.INVALID_ARGUMENT,
                f"audio chunk of {len(data)} bytes is not whole {channels}-channel s16le samples",
            )
        limit_ms = self.hub.settings.max_chunk_ms
        if len(data) * 1000 > limit_ms * self._bytes_per_second:
            raise ProtocolError(
                ErrorKind.INVALID_ARGUMENT,
                f"audio chunk of {len(data) * 1000 // self._bytes_per_second} ms exceeds the {limit_ms} ms limit: "
                "send smaller chunks",
            )
        self.hub.metrics.audio_seconds_total.inc(len(data) / self._bytes_per_second)

    async def _video(self, frame: Video) -> bool:
        """Analyse a frame; False when it was shed or dropped (then no observer sees it)."""
        since_last_ms = frame.timestamp_ms - self._last_video_forwarded_ms
        if shed_video(self.hub.backlog, since_last_ms, self.hub.settings):
            self.shed_video_frame()
            return False
        self._last_video_forwarded_ms = frame.timestamp_ms
        try:
            await self.hub.run(self.pipeline.push_video, frame.timestamp_ms, frame.image)
        except ValueError as error:
            self.hub.metrics.errors_total.labels(code="video_frame").inc()
            log.info("session %s dropped a video frame: %s", self.session_id, error)
            return False
        return True

    def _caption(self, caption: Caption) -> bool:
        """Hold a caption for its sentence; False when it was dropped (then no observer sees it)."""
        try:
            self.pipeline.push_caption(caption.start_ms, caption.end_ms, caption.text)
        except ValueError as error:
            self.hub.metrics.errors_total.labels(code="caption").inc()
            log.info("session %s dropped a caption: %s", self.session_id, error)
            return False
        return True

    def _clinician_caption(self, caption: Caption) -> bool:
        """The clinician's words for its questions: True when taken; counted as dropped when the session has no
        clinician channel or does not report the clinician's words, or when invalid."""
        try:
            used = self.voices is not None and self.voices.push_caption(caption)
        except ValueError as error:
            self.hub.metrics.errors_total.labels(code="caption").inc()
            log.info("session %s dropped a clinician caption: %s", self.session_id, error)
            used = False
        if not used:
            self.counts.dropped_caption()
        return used
