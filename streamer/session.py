"""LiveSession: one interview, transport-agnostic: wire messages in, wire messages out, protocol enforced.

The gRPC service (and any other transport) only moves messages: it opens a session through the SessionHub
(`admission.py`) with the client's `start`, hands it every later message, and closes it. The session checks
the protocol, runs the engine's SessionPipeline in the worker pool (one call at a time, in arrival order, off the event
loop), sends each closed sentence through the MicroBatcher (one model step for many sessions), and yields
the server messages to send. Violations raise ProtocolError (`protocol.py`) with the status to end on.

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

import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from depscreen.engine.pipeline import SentenceResult, SessionPipeline
from depscreen.engine.runtime.screener import Estimate
from depscreen.streamer.convert import estimate_message, sentence_message
from depscreen.streamer.logs import bind_session
from depscreen.streamer.protocol import ProtocolError, session_time_exceeded
from depscreen.streamer.record import SessionRecorder
from depscreen.streamer.resume import KEPT_UPDATES, Checkpoint, Resumer, Ticket, kept_update
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.state_store import StoreError
from depscreen.v1 import screening_pb2 as pb

if TYPE_CHECKING:
    from depscreen.streamer.admission import SessionHub
    from depscreen.streamer.tracing import SessionTrace

log = logging.getLogger(__name__)


IMAGE_FORMATS = {pb.JPEG: "jpeg", pb.PNG: "png", pb.RGB24: "rgb24"}
"""Wire image formats to the names `decode_image` takes; others are rejected there, naming the format."""
VIDEO_BURST_S = 2.0
"""Seconds of video (at `max_video_fps`) a client may send ahead of its audio."""
NOT_RESUMABLE_STORE_DOWN = "not resumable: the state store is unavailable"
"""The `accepted` notice of a session opened while its server's state store failed."""


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
        self.counts = pipeline.counts
        """The session's counts (the pipeline's own object: one set, shared)."""
        self.resumer: Resumer | None = None
        self.ticket: Ticket | None = None
        self.notices: list[str] = []
        """What `accepted` tells the client about this session (e.g. that it is not resumable, and why)."""
        self._resumed_from: Checkpoint | None = None
        self._kept_updates: deque[pb.SentenceUpdate] = deque(maxlen=KEPT_UPDATES)
        self._resend: list[pb.SentenceUpdate] = []
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
            for result in await self._closing(self.pipeline.push_audio, data):
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
        for result in await self._closing(self.pipeline.finish):
            yield await self._score(result)
        if forget and self.resumer is not None and self.ticket is not None:
            await self._store(self.resumer.forget, self.ticket)
        p = self.pipeline
        summary = pb.SessionSummary(
            sentences=p.sentences,
            audio_seconds=p.media_seconds,
            speech_seconds=self.counts.speech_ms / 1000.0,
            dropped_video_frames=self.counts.dropped_video_frames,
            dropped_captions=self.counts.dropped_captions,
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

    async def _closing(self, work: Callable[..., list[SentenceResult]], *args: object) -> list[SentenceResult]:
        """Run a pipeline call that may close sentences (`push_audio`, `finish`) in the worker pool. ASR is the
        costliest stage: under heavy load (`asr_skip_backlog`) the sentences it closes without captions go
        without text, and each one is counted as shed."""
        transcribe = self.hub.backlog <= self.hub.settings.asr_skip_backlog
        results = await self.hub.run(work, *args, transcribe)
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

    async def _score(self, result: SentenceResult) -> pb.ServerMessage:
        stepped = time.perf_counter()
        estimate = await self.hub.batcher.step(self.handle_, result.features)
        if self.trace is not None:
            self.trace.stage("model", time.perf_counter() - stepped)
        self.hub.metrics.state_pool_slots_used.set(self.hub.batcher.pool.slots_used)
        self.last_estimate = estimate
        self.counts.scored(result.features)
        latency = time.perf_counter() - result.closed_at
        message = sentence_message(result, estimate, latency)
        if self.resumer is not None and self.ticket is not None:
            self._kept_updates.append(kept_update(message.sentence))
            checkpoint = Checkpoint(
                session_id=self.session_id,
                next_index=result.features.index + 1,
                resume_from_ms=result.features.end_ms,
                counts=replace(self.counts),
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

    def shed_video_frame(self) -> None:
        """Count a video frame a transport or the session dropped under overload before it cost anything."""
        self.counts.dropped_video_frames += 1
        self.hub.metrics.shed_video_frames_total.inc()

    async def _video(self, frame: pb.VideoFrame) -> None:
        since_last_ms = frame.timestamp_ms - self._last_video_forwarded_ms
        if shed_video(self.hub.backlog, since_last_ms, self.hub.settings):
            self.shed_video_frame()
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
