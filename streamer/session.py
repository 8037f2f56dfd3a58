"""LiveSession: one interview, transport-agnostic: wire messages in, wire messages out, protocol enforced.

The gRPC service (and any other transport) only moves messages: it opens a session through the SessionHub
with the client's `start`, hands it every later message, and closes it. The session checks the protocol,
runs the engine's SessionPipeline in the worker pool (one call at a time, in arrival order, off the event
loop), sends each closed sentence through the MicroBatcher (one model step for many sessions), and yields
the server messages to send. Violations raise ProtocolError with the status to end on.

Overload degrades in steps, by the CPU work waiting per worker (`backlog`): above `video_sparse_backlog`
video is sampled at half rate, above `video_drop_backlog` video frames are dropped, above `asr_skip_backlog`
sentences without captions get no ASR (their text modality is marked unavailable), above `reject_backlog`
new sessions are refused. An accepted session's audio is never dropped: a transport reads its next message
only when the session has taken the last one, so a slow server slows its clients instead of losing audio.

With a state store (`resume.py`), a session opened `resumable` gets a resume token in `accepted` and
checkpoints its model state after every sentence; a `start` carrying that token continues the session from
its last checkpoint: same model state and counters, a fresh segmenter at the media time it tells the client
to re-send from, sentence indices going on where they stopped, and the checkpointed updates the client says it
lacks (`start.received_sentences`) sent again first. An `end` forgets the checkpoint. A store that fails is a
counted checkpoint failure, never the end of an interview: a new session then runs without resume (its
`accepted` says so in `notices`), a live one is resumable again once a later checkpoint is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from depscreen.engine.features.asr import primary_language
from depscreen.engine.media import MAX_CHANNELS, MAX_INPUT_RATE, MIN_INPUT_RATE
from depscreen.engine.pipeline import Extractors, PipelineSettings, SentenceResult, SessionPipeline
from depscreen.engine.runtime.batcher import MicroBatcher
from depscreen.engine.runtime.screener import Estimate, Screener
from depscreen.engine.segment import SegmenterSettings
from depscreen.streamer.clock import Clock, SystemClock
from depscreen.streamer.convert import estimate_message, sentence_message
from depscreen.streamer.logs import bind_session
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.record import SessionRecorder
from depscreen.streamer.resume import KEPT_UPDATES, Checkpoint, ResumeError, Resumer, Ticket, kept_update
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.state_store import StoreError
from depscreen.v1 import screening_pb2 as pb

if TYPE_CHECKING:
    from depscreen.streamer.tracing import SessionTrace, Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SESSION_ID_CHARS = 128
IMAGE_FORMATS = {pb.JPEG: "jpeg", pb.PNG: "png", pb.RGB24: "rgb24"}
"""Wire image formats to the names `decode_image` takes; others are rejected there, naming the format."""
VIDEO_BURST_S = 2.0
"""Seconds of video (at `max_video_fps`) a client may send ahead of its audio."""
NOT_RESUMABLE_STORE_DOWN = "not resumable: the state store is unavailable"
"""The `accepted` notice of a session opened while its server's state store failed."""


RETRY_AFTER_S = 10.0
"""Suggested wait before a refused session is offered again (gRPC `RetryInfo`, WHIP `Retry-After`)."""


class ProtocolError(Exception):
    """A client broke the protocol: the stream ends with `code` and this message. `retry_after_s`: the
    refusal is temporary (the server is full) and the client may try again after about that long."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


@dataclass
class SessionHub:
    """What every session of a server shares: settings, model, extractors, batcher, metrics, workers."""

    settings: ServerSettings
    screener: Screener
    extractors: Extractors
    batcher: MicroBatcher
    metrics: Metrics
    executor: Executor
    active: int = 0
    in_flight: int = 0
    per_principal: dict[str, int] = field(default_factory=dict)
    """Open sessions of each authenticated principal (token or JWT subject) that has any."""
    resumer: Resumer | None = None
    """Checkpoints and resume tokens; None on a server without a state store (no session is resumable)."""
    on_admission: Callable[[bool], None] | None = None
    """Called with `admitting` each time it changes (the server's gRPC health follows it)."""
    tracing: Tracing | None = None
    """Session and stage spans (`tracing.py`); None when traces are off."""
    clock: Clock = field(default_factory=SystemClock)
    """What session time limits and pacing are measured on (`clock.py`)."""
    _admitted_last: bool = field(default=True, init=False, repr=False)
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server begins shutting down: new sessions are refused, live streams end (`service.py`)."""

    def model_info(self) -> pb.ModelInfo:
        facts = self.screener.facts
        return pb.ModelInfo(
            model_id=facts.model_id,
            trained_on=facts.trained_on,
            intended_use=facts.intended_use,
            model_card_url=facts.model_card_url,
            device=self.screener.device.type,
            kernels=self.screener.kernels,
        )

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

    async def open(self, first: pb.ClientMessage, principal: str | None = None, resumable: bool = False) -> LiveSession:
        """Admit a session from its first message (for `principal`, None on an open server), or raise
        ProtocolError. `resumable`: the transport can resume (the server needs a state store too): the session
        gets a resume token and checkpoints, and a `start.resume_token` continues an earlier session."""
        if self.shutdown.is_set():
            raise ProtocolError(
                grpc.StatusCode.UNAVAILABLE, "the server is shutting down: retry, another replica will take the session"
            )
        resumer = self.resumer if resumable else None
        start = check_start(first, resumable=resumer is not None)
        ticket, checkpoint = (
            await self._restore(resumer, start.resume_token, principal) if start.resume_token else (None, None)
        )
        if checkpoint is not None:
            check_resume_point(start, checkpoint)
        self._check_principal_quota(principal)
        if not self.admitting:
            self.metrics.rejected_sessions_total.inc()
            state = (
                f"at its limit of {self.settings.max_sessions} concurrent sessions"
                if self.active >= self.settings.max_sessions
                else "overloaded"
            )
            raise ProtocolError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server is {state}: retry in {RETRY_AFTER_S:g} s, or on another replica",
                retry_after_s=RETRY_AFTER_S,
            )
        self.active += 1
        self._report_admission()
        self.metrics.sessions_active.inc()
        self.metrics.sessions_total.inc()
        if principal is not None:
            self.per_principal[principal] = self.per_principal.get(principal, 0) + 1
        session_id = checkpoint.session_id if checkpoint else start.session_id or uuid.uuid4().hex
        trace = self.tracing.session(session_id, principal, checkpoint is not None) if self.tracing else None
        if checkpoint is None:
            pipeline = self._new_pipeline(start, trace=trace)
        else:
            pipeline = self._new_pipeline(start, checkpoint.resume_from_ms, checkpoint.next_index, trace)
        session = LiveSession(self, session_id, pipeline, principal, trace)
        if self.settings.record:
            session.start_recording(Path(self.settings.record), start)
        if resumer is not None:
            await session.make_resumable(resumer, ticket, checkpoint, start)
        return session

    async def _restore(self, resumer: Resumer | None, token: str, principal: str | None) -> tuple[Ticket, Checkpoint]:
        """The session a resume token presented by `principal` leads to and its last checkpoint, or ProtocolError."""
        assert resumer is not None
        try:
            return await self.run(resumer.restore, token, principal)
        except ResumeError as error:
            log.info("a resume was refused: the token is %s", error)
            raise ProtocolError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "start.resume_token leads to no resumable session here: it is wrong, it was issued to another "
                f"caller, its session ended with `end`, or it expired after {resumer.ttl_s:g} s without a sentence; "
                "start a new session (without the token)",
            ) from None
        except StoreError as error:
            raise store_unavailable(error) from None

    def _check_principal_quota(self, principal: str | None) -> None:
        limit = self.settings.max_sessions_per_token
        if principal is not None and limit and self.per_principal.get(principal, 0) >= limit:
            self.metrics.rejected_sessions_total.inc()
            raise ProtocolError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this token already holds its limit of {limit} concurrent sessions: end one, or retry later",
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
        self, start: pb.SessionStart, origin_ms: int = 0, first_index: int = 0, trace: SessionTrace | None = None
    ) -> SessionPipeline:
        """Cheap (no model loading: the face detector and predictor are shared), so it runs on the loop."""

        def on_stage(stage: str, seconds: float, cpu_seconds: float) -> None:
            self.metrics.observe_stage(stage, seconds, cpu_seconds)
            if trace is not None:
                trace.stage(stage, seconds)

        return SessionPipeline(
            self.extractors,
            sample_rate_hz=start.audio.sample_rate_hz,
            channels=start.audio.channels,
            language=start.language,
            use_asr=self.settings.asr != "none" and not start.disable_asr,
            settings=PipelineSettings(
                video_fps=self.settings.video_fps, segmenter=SegmenterSettings(vad=self.settings.vad)
            ),
            on_stage=on_stage,
            origin_ms=origin_ms,
            first_index=first_index,
        )


def check_start(message: pb.ClientMessage, resumable: bool = False) -> pb.SessionStart:
    """The `start` message, validated; ProtocolError says what is wrong with it. A resume token is refused
    unless the session is `resumable`."""
    kind = message.WhichOneof("kind")
    if kind != "start":
        raise ProtocolError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the first message must be `start` (SessionStart with the audio format), got `{kind}`",
        )
    start = message.start
    rate, channels = start.audio.sample_rate_hz, start.audio.channels
    if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"start.audio.sample_rate_hz={rate} is not supported: use {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"start.audio.channels={channels} is not supported: send mono (1) or stereo (2)",
        )
    if len(start.session_id) > MAX_SESSION_ID_CHARS:
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"start.session_id has {len(start.session_id)} characters; the limit is {MAX_SESSION_ID_CHARS}",
        )
    if any(not character.isprintable() for character in start.session_id):
        raise ProtocolError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "start.session_id contains control or other unprintable characters: use printable text",
        )
    try:
        primary_language(start.language)
    except ValueError as error:
        raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, f"start.{error}") from None
    if start.resume_token and not resumable:
        raise ProtocolError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "start.resume_token was given, but this server keeps no resumable sessions: start a new one",
        )
    return start


def check_resume_point(start: pb.SessionStart, checkpoint: Checkpoint) -> None:
    """Refuse (FAILED_PRECONDITION) a resume whose client holds more sentence updates than the checkpoint
    covers: the store failed to take the later checkpoints, and the client no longer keeps the media to re-send."""
    if start.HasField("received_sentences") and start.received_sentences > checkpoint.next_index:
        raise ProtocolError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"start.received_sentences={start.received_sentences}, but the session's last checkpoint is after "
            f"sentence {checkpoint.next_index} (the state store missed the later ones): the session cannot be "
            "resumed; start a new session (without the token)",
        )


def store_unavailable(error: StoreError) -> ProtocolError:
    """The error that refuses a resume when the state store cannot be reached."""
    log.warning("the state store failed: %s", error)
    return ProtocolError(
        grpc.StatusCode.UNAVAILABLE, "the server cannot reach its state store for resumable sessions: retry later"
    )


def session_time_exceeded(limit_s: float) -> ProtocolError:
    """The error that ends a session that reached `max_session_s` (after its summary was sent)."""
    return ProtocolError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the session reached its limit of {limit_s:g} s and was finished: start a new session to go on",
    )


def shed_video(backlog: float, since_last_ms: float, settings: ServerSettings) -> bool:
    """Whether to drop a video frame before it costs anything: under overload, half rate, then none."""
    if backlog > settings.video_drop_backlog:
        return True
    return backlog > settings.video_sparse_backlog and since_last_ms < 2000.0 / settings.video_fps


class LiveSession:
    """An admitted interview: `accepted()`, then `handle()` each message, then `close()` exactly once."""

    def __init__(
        self,
        hub: SessionHub,
        session_id: str,
        pipeline: SessionPipeline,
        principal: str | None = None,
        trace: SessionTrace | None = None,
    ) -> None:
        self.hub = hub
        self.trace = trace
        self.session_id = session_id
        self.principal = principal
        self.pipeline = pipeline
        self.handle_ = hub.batcher.attach()
        self.ended = False
        self.last_estimate: Estimate | None = None
        self.shed_video_frames = 0
        self.resumer: Resumer | None = None
        self.ticket: Ticket | None = None
        self.notices: list[str] = []
        """What `accepted` tells the client about this session (e.g. that it is not resumable, and why)."""
        self._resumed_from: Checkpoint | None = None
        self._kept_updates: deque[pb.SentenceUpdate] = deque(maxlen=KEPT_UPDATES)
        self._resend: list[pb.SentenceUpdate] = []
        self._committed_speech_ms = 0
        self._closed = False
        self._started = hub.clock.now()
        self._last_video_forwarded_ms = -1.0e9
        self._video_frames_received = 0
        self._bytes_per_second = pipeline.sample_rate_hz * pipeline.channels * 2
        self.recorder: SessionRecorder | None = None
        bind_session(session_id, principal)

    def start_recording(self, root: Path, start: pb.SessionStart) -> None:
        """Record this stream into `root` (`record.py`); a folder that cannot be made leaves it unrecorded."""
        try:
            self.recorder = SessionRecorder(
                root,
                self.session_id,
                self.pipeline.sample_rate_hz,
                self.pipeline.channels,
                language=start.language,
                disable_asr=start.disable_asr,
                model=self.hub.model_info(),
            )
        except OSError as error:
            self._recording_failed(error)

    async def make_resumable(
        self, resumer: Resumer, ticket: Ticket | None, checkpoint: Checkpoint | None, start: pb.SessionStart
    ) -> None:
        """Give the session a resume token (a new one, or `ticket` with the `checkpoint` it is resumed from, whose
        kept updates from `start.received_sentences` on are re-sent) and write its first checkpoint. A new
        session whose first checkpoint the store cannot take runs without resume, and its `accepted` says so."""
        if checkpoint is not None:
            self._resumed_from = checkpoint
            self.hub.batcher.restore(self.handle_, checkpoint.track)
            self.last_estimate = checkpoint.estimate
            self.pipeline.speech_ms = self._committed_speech_ms = checkpoint.speech_ms
            self.pipeline.dropped_captions = checkpoint.dropped_captions
            self.shed_video_frames = checkpoint.dropped_video_frames
            self._kept_updates.extend(checkpoint.updates)
            self._resend = self._updates_to_resend(checkpoint, start)
        ticket = ticket or resumer.new_ticket(self.session_id, self.principal)
        saved = await self._store(resumer.save, ticket, checkpoint or Checkpoint(self.session_id))
        if not saved and checkpoint is None:
            self.notices.append(NOT_RESUMABLE_STORE_DOWN)
            return
        self.resumer, self.ticket = resumer, ticket

    def _updates_to_resend(self, checkpoint: Checkpoint, start: pb.SessionStart) -> list[pb.SentenceUpdate]:
        """The kept updates a resuming client lacks (none when it does not say what it holds); a notice when some
        it lacks are no longer kept."""
        if not start.HasField("received_sentences"):
            return []
        first = start.received_sentences
        resend = [update for update in checkpoint.updates if update.index >= first]
        oldest = resend[0].index if resend else checkpoint.next_index
        if oldest > first:
            self.notices.append(
                f"sentence updates {first}-{oldest - 1} are no longer kept and cannot be sent again "
                f"(a checkpoint keeps the last {KEPT_UPDATES})"
            )
        return resend

    @property
    def resumable(self) -> bool:
        """Whether the client holds a resume token for this session (the server has a working state store)."""
        return self.ticket is not None

    def resent_updates(self) -> list[pb.ServerMessage]:
        """The checkpointed sentence updates a resuming client said it lacks, to send right after `accepted`
        (without transcripts: the store keeps no text)."""
        return [pb.ServerMessage(sentence=update) for update in self._resend]

    def accepted(self) -> pb.ServerMessage:
        accepted = pb.SessionAccepted(session_id=self.session_id, model=self.hub.model_info())
        if self.resumer is not None and self.ticket is not None:
            accepted.resume_token = self.resumer.token(self.ticket)
        if self._resumed_from is not None:
            accepted.resume_from_ms = self._resumed_from.resume_from_ms
            accepted.next_sentence_index = self._resumed_from.next_index
        accepted.asr_model = self.pipeline.asr_model
        accepted.notices.extend(self.notices)
        accepted.notices.extend(self.pipeline.notices())
        return pb.ServerMessage(accepted=accepted)

    async def handle(self, message: pb.ClientMessage) -> AsyncIterator[pb.ServerMessage]:
        """Apply one client message; yields the updates it produced (a closed sentence, the summary)."""
        kind = message.WhichOneof("kind")
        if self.ended:
            raise ProtocolError(
                grpc.StatusCode.FAILED_PRECONDITION, f"`{kind}` arrived after `end`: the session is over"
            )
        if kind == "start":
            raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION, "a second `start` on the same stream")
        left = self.time_left()
        if left is not None and left <= 0:
            async for reply in self.finish():
                yield reply
            raise session_time_exceeded(self.hub.settings.max_session_s)
        if kind == "audio":
            data = self._checked_audio(message.audio.data)
            self._record(SessionRecorder.audio, data)
            await self._pace()
            for result in await self.hub.run(self.pipeline.push_audio, data, self._transcribe()):
                yield await self._score(result)
        elif kind == "video":
            self._check_video_rate()
            self._record(SessionRecorder.video, message.video)
            await self._video(message.video)
        elif kind == "caption":
            self._record(SessionRecorder.caption, message.caption)
            self._caption(message.caption)
        elif kind == "end":
            async for reply in self.finish(forget=True):
                yield reply
        else:
            raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, "empty ClientMessage (no field set)")

    async def finish(self, forget: bool = False) -> AsyncIterator[pb.ServerMessage]:
        """End of the interview (an `end` message or a transport that closed cleanly): last sentence, summary.

        `forget` (on `end`) deletes a resumable session's checkpoint; otherwise (a stall, a stream closed
        without `end`) it stays until it expires, so the client can still resume."""
        self.ended = True
        for result in await self.hub.run(self.pipeline.finish, self._transcribe()):
            yield await self._score(result)
        if forget and self.resumer is not None and self.ticket is not None:
            await self._store(self.resumer.forget, self.ticket)
        p = self.pipeline
        summary = pb.SessionSummary(
            sentences=p.sentences,
            audio_seconds=p.media_seconds,
            speech_seconds=p.speech_ms / 1000.0,
            dropped_video_frames=p.dropped_video_frames + self.shed_video_frames,
            dropped_captions=p.dropped_captions,
        )
        if self.last_estimate is not None:
            summary.estimate.CopyFrom(estimate_message(self.last_estimate))
        yield pb.ServerMessage(summary=summary)

    def close(self, status: str = "OK") -> None:
        """Free the session's admission and state slots (idempotent); `status`: the gRPC status name that
        ended its stream, for its trace."""
        if not self._closed:
            self._closed = True
            if self.trace is not None:
                self.trace.end(status, self.pipeline.sentences, self.pipeline.media_seconds)
            if self.recorder is not None:
                self.recorder.close()
            self.hub.batcher.detach(self.handle_)
            self.hub.release(self.principal)

    def time_left(self) -> float | None:
        """Seconds until `max_session_s` ends this session; None when there is no limit."""
        limit = self.hub.settings.max_session_s
        return limit - (self.hub.clock.now() - self._started) if limit else None

    def _check_video_rate(self) -> None:
        """End a stream whose video outruns `max_video_fps` per second of its audio (plus a short burst)."""
        self._video_frames_received += 1
        settings = self.hub.settings
        if self._video_frames_received > settings.max_video_fps * (self.pipeline.audio_seconds + VIDEO_BURST_S):
            raise ProtocolError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"video arrives faster than {settings.max_video_fps:g} frames per second of audio: send at most "
                f"that many (the server analyses {settings.video_fps:g} per second)",
            )

    def _transcribe(self) -> bool:
        """ASR is the costliest stage: under heavy load, sentences without captions go without text."""
        if self.hub.backlog <= self.hub.settings.asr_skip_backlog:
            return True
        self.hub.metrics.shed_asr_total.inc()
        return False

    async def _pace(self) -> None:
        """Hold a client that sends faster than `max_speed` x real time (after a `burst_s` allowance)."""
        speed = self.hub.settings.max_speed
        if not speed:
            return
        clock = self.hub.clock
        ahead = self.pipeline.audio_seconds - self.hub.settings.burst_s - speed * (clock.now() - self._started)
        if ahead > 0:
            await clock.sleep(ahead / speed)

    async def _score(self, result: SentenceResult) -> pb.ServerMessage:
        stepped = time.perf_counter()
        estimate = await self.hub.batcher.step(self.handle_, result.features)
        if self.trace is not None:
            self.trace.stage("model", time.perf_counter() - stepped)
        self.hub.metrics.state_pool_slots_used.set(self.hub.batcher.pool.slots_used)
        self.last_estimate = estimate
        self._committed_speech_ms += result.features.speech_ms
        latency = time.perf_counter() - result.closed_at
        message = sentence_message(result, estimate, latency)
        if self.resumer is not None and self.ticket is not None:
            self._kept_updates.append(kept_update(message.sentence))
            checkpoint = Checkpoint(
                session_id=self.session_id,
                next_index=result.features.index + 1,
                resume_from_ms=result.features.end_ms,
                speech_ms=self._committed_speech_ms,
                dropped_video_frames=self.pipeline.dropped_video_frames + self.shed_video_frames,
                dropped_captions=self.pipeline.dropped_captions,
                track=self.handle_.track,
                estimate=estimate,
                updates=tuple(self._kept_updates),
            )
            await self._store(self.resumer.save, self.ticket, checkpoint)
        self.hub.metrics.sentence_latency.observe(latency)
        self.hub.metrics.sentences_total.inc()
        self._record(SessionRecorder.sentence, message.sentence)
        return message

    def _record(self, write: Callable[..., None], *args: object) -> None:
        """Hand something to the recorder, if recording; a disk that fails ends this session's recording."""
        if self.recorder is None:
            return
        try:
            write(self.recorder, *args)
        except OSError as error:
            self.recorder.close()
            self._recording_failed(error)

    def _recording_failed(self, error: OSError) -> None:
        self.recorder = None
        self.hub.metrics.errors_total.labels(code="record").inc()
        log.warning("session %s is no longer recorded: %s", self.session_id, error.strerror or type(error).__name__)

    async def _store(self, fn: Callable[..., None], *args: object) -> bool:
        """A checkpoint write or delete, and whether it worked; a store that fails is logged and counted, and the
        interview goes on (not resumable past its last good checkpoint until the next one is written)."""
        try:
            await self.hub.run(fn, *args)
        except StoreError as error:
            self.hub.metrics.errors_total.labels(code="checkpoint").inc()
            log.warning("session %s could not be checkpointed: %s", self.session_id, error)
            return False
        return True

    def _checked_audio(self, data: bytes) -> bytes:
        channels = self.pipeline.channels
        if len(data) % (2 * channels):
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"audio chunk of {len(data)} bytes is not whole {channels}-channel s16le samples",
            )
        limit_ms = self.hub.settings.max_chunk_ms
        if len(data) * 1000 > limit_ms * self._bytes_per_second:
            raise ProtocolError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"audio chunk of {len(data) * 1000 // self._bytes_per_second} ms exceeds the {limit_ms} ms limit: "
                "send smaller chunks",
            )
        self.hub.metrics.audio_seconds_total.inc(len(data) / self._bytes_per_second)
        return data

    async def _video(self, frame: pb.VideoFrame) -> None:
        since_last_ms = frame.timestamp_ms - self._last_video_forwarded_ms
        if shed_video(self.hub.backlog, since_last_ms, self.hub.settings):
            self.shed_video_frames += 1
            self.hub.metrics.shed_video_frames_total.inc()
            return
        self._last_video_forwarded_ms = frame.timestamp_ms
        fmt = IMAGE_FORMATS.get(frame.format, "unspecified")
        try:
            await self.hub.run(
                self.pipeline.push_video, frame.timestamp_ms, frame.image, fmt, frame.width, frame.height
            )
        except ValueError as error:
            self.hub.metrics.errors_total.labels(code="video_frame").inc()
            log.info("session %s dropped a video frame: %s", self.session_id, error)

    def _caption(self, caption: pb.Caption) -> None:
        try:
            self.pipeline.push_caption(caption.start_ms, caption.end_ms, caption.text)
        except ValueError as error:
            self.hub.metrics.errors_total.labels(code="caption").inc()
            log.info("session %s dropped a caption: %s", self.session_id, error)
