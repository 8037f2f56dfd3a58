"""Traces: a real server session as one span with a child per pipeline stage, the allow-list that keeps
transcripts, captions and media out of every span, and tracing configured by the standard OTEL_* variables."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import cv2
import grpc
import numpy as np
import pytest
import torch
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from depscreen.engine.media import decode_audio_file
from depscreen.localserver import start_local_server
from depscreen.streamer.metrics import STAGES
from depscreen.streamer.server import Server, open_tracing
from depscreen.streamer.settings import ServerSettings, SettingsError
from depscreen.streamer.tracing import ALLOWED_ATTRIBUTES, SESSION_SPAN, Tracing
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

from .conftest import FIXTURES
from .fakes import fake_parts
from .otlp import OtlpReceiver

CAPTION = "my purple giraffe whispers quietly to the violin"
JFK = decode_audio_file(FIXTURES / "jfk.flac").tobytes()


def frame_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


async def interview() -> AsyncIterator[pb.ClientMessage]:
    yield pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
    yield pb.ClientMessage(caption=pb.Caption(start_ms=0, end_ms=11_000, text=CAPTION))
    for index, offset in enumerate(range(0, len(JFK), 3200)):
        if index % 20 == 0:
            yield pb.ClientMessage(
                video=pb.VideoFrame(timestamp_ms=index * 100, image=frame_jpeg(index), format=pb.JPEG)
            )
        yield pb.ClientMessage(audio=pb.AudioChunk(data=JFK[offset : offset + 3200]))
    yield pb.ClientMessage(end=pb.SessionEnd())


async def stream(target: str) -> list[pb.ServerMessage]:
    async with grpc.aio.insecure_channel(target) as channel:
        return [reply async for reply in screening_pb2_grpc.ScreeningStub(channel).StreamSession(interview())]


def test_a_session_is_one_span_with_a_child_span_per_stage() -> None:
    exporter = InMemorySpanExporter()
    settings = ServerSettings(grpc_port=0, http_port=0, device="cpu", asr="none")
    torch_threads = torch.get_num_threads()

    async def run() -> list[pb.ServerMessage]:
        server = Server(settings, tracing=Tracing(exporter, "test"), parts=fake_parts())  # spans, not models
        await server.start()
        try:
            return await stream(f"127.0.0.1:{server.grpc_port}")
        finally:
            await server.stop()

    try:
        replies = asyncio.run(run())
    finally:
        torch.set_num_threads(torch_threads)
    sentences = [r for r in replies if r.WhichOneof("kind") == "sentence"]
    assert sentences and "giraffe" in sentences[0].sentence.transcript, "the caption reached the session"
    spans = exporter.get_finished_spans()
    [session] = [span for span in spans if span.name == SESSION_SPAN]
    assert session.kind == SpanKind.SERVER
    assert dict(session.attributes) == {
        "depscreen.session.id": replies[0].accepted.session_id,
        "depscreen.resumed": False,
        "depscreen.status": "OK",
        "depscreen.sentences": len(sentences),
        "depscreen.audio_seconds": pytest.approx(len(JFK) / 32_000),
    }
    stages = [span for span in spans if span is not session]
    for stage in stages:
        assert stage.parent is not None and stage.parent.span_id == session.context.span_id, stage.name
        assert stage.context.trace_id == session.context.trace_id
        assert session.start_time <= stage.start_time <= stage.end_time <= session.end_time, stage.name
        assert set(stage.attributes) == {"depscreen.stage", "depscreen.runs", "depscreen.busy_seconds"}
        assert stage.attributes["depscreen.stage"] == stage.name
        busy_ns = stage.attributes["depscreen.busy_seconds"] * 1e9
        assert 0 < busy_ns <= stage.end_time - stage.start_time + 1000, "busy time fits in the span"
    names = {stage.name for stage in stages}
    assert names <= set(STAGES) and "asr" not in names, "named like depscreen_stage_seconds; no ASR (captioned)"
    assert {"decode", "vad", "features_audio", "features_video", "text_embed", "model"} <= names
    per_sentence = {"model", "features_audio", "text_embed"}
    for name in per_sentence:
        assert sum(stage.name == name for stage in stages) == len(sentences), f"one {name} per sentence"
        assert all(stage.attributes["depscreen.runs"] == 1 for stage in stages if stage.name in per_sentence)
    chunks = (len(JFK) + 3199) // 3200
    vad = [stage for stage in stages if stage.name == "vad"]
    assert len(vad) <= len(sentences) + 1, "per-chunk stages are one span per sentence, not one per chunk"
    assert sum(stage.attributes["depscreen.runs"] for stage in vad) == chunks + 1, "each chunk's VAD and the end's"
    exported = " ".join(span.to_json() for span in spans)
    assert not any(word in exported for word in CAPTION.split()[1:]), "no caption word in any span"


def test_the_allow_list_drops_every_other_attribute_event_detail_and_status_description() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter, "test")
    span = tracing.tracer.start_span(
        SESSION_SPAN,
        attributes={
            "depscreen.session.id": "s-1",
            "depscreen.resumed": True,
            "depscreen.transcript": CAPTION,
            "depscreen.sentences": "3",
            "depscreen.audio_seconds": True,
            "http.user_agent": CAPTION,
        },
    )
    span.add_event("caption", {"text": CAPTION, "depscreen.sentences": 2})
    span.record_exception(ValueError(CAPTION))
    span.set_status(Status(StatusCode.ERROR, CAPTION))
    span.end()
    tracing.shutdown()
    [exported] = exporter.get_finished_spans()
    assert dict(exported.attributes) == {"depscreen.session.id": "s-1", "depscreen.resumed": True}
    assert [dict(event.attributes) for event in exported.events] == [{"depscreen.sentences": 2}, {}]
    assert exported.status.status_code == StatusCode.ERROR and not exported.status.description
    assert "giraffe" not in exported.to_json()
    assert set(ALLOWED_ATTRIBUTES) == {
        "depscreen.session.id",
        "depscreen.token_fingerprint",
        "depscreen.resumed",
        "depscreen.status",
        "depscreen.sentences",
        "depscreen.audio_seconds",
        "depscreen.stage",
        "depscreen.runs",
        "depscreen.busy_seconds",
    }, "a new attribute is allowed only after a privacy review: ids, counts and names, never content"


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "depscreen"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_traces_are_off_unless_an_exporter_is_configured(environ: dict[str, str]) -> None:
    assert open_tracing(environ) is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTLP only"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "grpc"),
    ],
)
def test_an_exporter_depscreen_does_not_ship_stops_the_start(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        open_tracing(environ)


def test_a_server_exports_its_session_spans_where_the_otel_variables_say(tmp_path: os.PathLike) -> None:
    with OtlpReceiver() as receiver, open(os.path.join(tmp_path, "server.log"), "w") as log:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        }
        server = start_local_server("--device", "cpu", "--asr", "none", output=log, env=env)
        try:
            replies = asyncio.run(stream(server.grpc_target))
            spans = receiver.wait_for(SESSION_SPAN)
        finally:
            server.stop()
    [session] = [span for span in spans if span.name == SESSION_SPAN]
    attributes = {a.key: a.value for a in session.attributes}
    assert attributes["depscreen.session.id"].string_value == replies[0].accepted.session_id
    assert {span.name for span in spans if span.parent_span_id == session.span_id} >= {"decode", "vad", "model"}
    resource = receiver.resources()
    assert resource["service.name"] == "depscreen" and resource["deployment.environment"] == "test"
