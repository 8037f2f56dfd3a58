"""The `depscreen.v1.Screening` gRPC service: one StreamSession per interview, protocol checked message by message.

Protocol (each violation ends that stream only, with a status whose message says what was wrong):
`start` first and once (FAILED_PRECONDITION otherwise); a sane audio format and session id
(INVALID_ARGUMENT); audio chunks of whole samples, at most `max_chunk_ms` long (INVALID_ARGUMENT); nothing
after `end` (FAILED_PRECONDITION); at most `max_sessions` at once (RESOURCE_EXHAUSTED). A corrupt video frame
or caption is dropped and counted, and the interview goes on. CPU work runs in the worker pool, one call at
a time per session, in arrival order, so the event loop never stalls on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import TypeVar

import grpc

from depscreen.engine.media import MAX_CHANNELS, MAX_INPUT_RATE, MIN_INPUT_RATE
from depscreen.engine.pipeline import Extractors, PipelineSettings, SentenceResult, SessionPipeline
from depscreen.engine.runtime.screener import Screener
from depscreen.streamer.convert import estimate_message, sentence_message
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.settings import ServerSettings
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SESSION_ID_CHARS = 128
IMAGE_FORMATS = {pb.JPEG: "jpeg", pb.PNG: "png", pb.RGB24: "rgb24"}
"""Wire image formats to the names `decode_image` takes; others are rejected there, naming the format."""


class ProtocolError(Exception):
    """A client broke the protocol: the stream ends with `code` and this message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ScreeningService(screening_pb2_grpc.ScreeningServicer):
    """Runs each interview's SessionPipeline and streams its updates back."""

    def __init__(
        self,
        settings: ServerSettings,
        screener: Screener,
        extractors: Extractors,
        metrics: Metrics,
        executor: Executor,
    ) -> None:
        self.settings = settings
        self.screener = screener
        self.extractors = extractors
        self.metrics = metrics
        self.executor = executor
        self.active = 0

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

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

    async def StreamSession(
        self, request_iterator: AsyncIterator[pb.ClientMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerMessage]:
        admitted = False
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None:
                return
            start = self._check_start(first)
            if self.active >= self.settings.max_sessions:
                raise ProtocolError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"server is at its limit of {self.settings.max_sessions} concurrent sessions: retry later",
                )
            self.active += 1
            admitted = True
            self.metrics.sessions_active.inc()
            self.metrics.sessions_total.inc()
            session_id = start.session_id or uuid.uuid4().hex
            pipeline = await self._run(self._new_pipeline, start)
            yield pb.ServerMessage(accepted=pb.SessionAccepted(session_id=session_id, model=self.model_info()))
            async for message in self._interview(request_iterator, pipeline):
                yield message
        except ProtocolError as error:
            self.metrics.errors_total.labels(code=error.code.name).inc()
            log.info("stream ended by protocol error %s: %s", error.code.name, error)
            await context.abort(error.code, str(error))
        finally:
            if admitted:
                self.active -= 1
                self.metrics.sessions_active.dec()

    def _check_start(self, message: pb.ClientMessage) -> pb.SessionStart:
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
        if start.resume_token:
            raise ProtocolError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "start.resume_token was given, but this server keeps no resumable sessions: start a new one",
            )
        return start

    def _new_pipeline(self, start: pb.SessionStart) -> SessionPipeline:
        return SessionPipeline(
            self.screener,
            self.extractors,
            sample_rate_hz=start.audio.sample_rate_hz,
            channels=start.audio.channels,
            language=start.language,
            use_asr=self.settings.asr != "none" and not start.disable_asr,
            settings=PipelineSettings(video_fps=self.settings.video_fps),
            on_stage=self.metrics.observe_stage,
        )

    async def _interview(
        self, request_iterator: AsyncIterator[pb.ClientMessage], pipeline: SessionPipeline
    ) -> AsyncIterator[pb.ServerMessage]:
        ended = False
        bytes_per_second = pipeline.sample_rate_hz * pipeline.channels * 2
        async for message in request_iterator:
            kind = message.WhichOneof("kind")
            if ended:
                raise ProtocolError(
                    grpc.StatusCode.FAILED_PRECONDITION, f"`{kind}` arrived after `end`: the session is over"
                )
            if kind == "start":
                raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION, "a second `start` on the same stream")
            if kind == "audio":
                data = message.audio.data
                if len(data) % (2 * pipeline.channels):
                    raise ProtocolError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"audio chunk of {len(data)} bytes is not whole {pipeline.channels}-channel s16le samples",
                    )
                if len(data) * 1000 > self.settings.max_chunk_ms * bytes_per_second:
                    raise ProtocolError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"audio chunk of {len(data) * 1000 // bytes_per_second} ms exceeds the "
                        f"{self.settings.max_chunk_ms} ms limit: send smaller chunks",
                    )
                self.metrics.audio_seconds_total.inc(len(data) / bytes_per_second)
                for result in await self._run(pipeline.push_audio, data):
                    yield self._sentence(result)
            elif kind == "video":
                await self._video(pipeline, message.video)
            elif kind == "caption":
                self._caption(pipeline, message.caption)
            elif kind == "end":
                ended = True
                async for summary in self._finish(pipeline):
                    yield summary
            else:
                raise ProtocolError(grpc.StatusCode.INVALID_ARGUMENT, "empty ClientMessage (no field set)")
        if not ended:
            async for summary in self._finish(pipeline):
                yield summary

    async def _finish(self, pipeline: SessionPipeline) -> AsyncIterator[pb.ServerMessage]:
        for result in await self._run(pipeline.finish):
            yield self._sentence(result)
        summary = pb.SessionSummary(
            sentences=pipeline.sentences,
            audio_seconds=pipeline.audio_seconds,
            speech_seconds=pipeline.speech_ms / 1000.0,
            dropped_video_frames=pipeline.dropped_video_frames,
            dropped_captions=pipeline.dropped_captions,
        )
        if pipeline.last_estimate is not None:
            summary.estimate.CopyFrom(estimate_message(pipeline.last_estimate))
        yield pb.ServerMessage(summary=summary)

    def _sentence(self, result: SentenceResult) -> pb.ServerMessage:
        latency = time.perf_counter() - result.closed_at
        self.metrics.sentence_latency.observe(latency)
        self.metrics.sentences_total.inc()
        return sentence_message(result, latency)

    async def _video(self, pipeline: SessionPipeline, frame: pb.VideoFrame) -> None:
        fmt = IMAGE_FORMATS.get(frame.format)
        try:
            await self._run(
                pipeline.push_video, frame.timestamp_ms, frame.image, fmt or "unspecified", frame.width, frame.height
            )
        except ValueError as error:
            self.metrics.errors_total.labels(code="video_frame").inc()
            log.info("dropped a video frame: %s", error)

    def _caption(self, pipeline: SessionPipeline, caption: pb.Caption) -> None:
        try:
            pipeline.push_caption(caption.start_ms, caption.end_ms, caption.text)
        except ValueError as error:
            self.metrics.errors_total.labels(code="caption").inc()
            log.info("dropped a caption: %s", error)
