"""The wire protocol against a server on loopback: happy paths on real speech with the real models (`server`,
a `depscreen serve` process; marked e2e), and every violation, each with a good interview streaming alongside
that must come out unchanged, on an in-process server on fake parts (`seam`: the protocol's rules are the
transport's and the session's, not the models')."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from depscreen.clients.session import ScreeningClient
from depscreen.engine.transcript_error import transcript_error
from depscreen.localserver import read_counter
from depscreen.streamer.settings import ServerSettings
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES, SAMPLE, SHARED_DATA, RunningServer
from .fakes import fake_parts
from .inprocess import ServerThread

START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
SILENCE_100MS = pb.ClientMessage(audio=pb.AudioChunk(data=bytes(3200)))
END = pb.ClientMessage(end=pb.SessionEnd())


async def collect(stream: AsyncIterator[pb.ServerMessage]) -> list[pb.ServerMessage]:
    return [message async for message in stream]


async def messages(*items: pb.ClientMessage) -> AsyncIterator[pb.ClientMessage]:
    for item in items:
        yield item


def sentences(replies: list[pb.ServerMessage]) -> list[pb.SentenceUpdate]:
    return [m.sentence for m in replies if m.WhichOneof("kind") == "sentence"]


ESTIMATE_TOLERANCE = 1e-5
"""How far a good session's estimates may move when one of its sentences shares a batched model step with
another session's sentence: other batch shapes round float32 differently (a few ULPs), and nothing else may."""


def comparable(replies: list[pb.ServerMessage]) -> list[tuple]:
    """What must not change when other streams misbehave (latency naturally does): each sentence's span and
    transcript, and its estimate's fields as (name, value) pairs."""
    return [(s.index, s.start_ms, s.end_ms, s.transcript, tuple(_fields(s.estimate))) for s in sentences(replies)]


def _fields(message: object, prefix: str = "") -> list[tuple[str, object]]:
    """Every scalar of a message, depth first, named by its path."""
    found: list[tuple[str, object]] = []
    for descriptor in message.DESCRIPTOR.fields:
        value, name = getattr(message, descriptor.name), f"{prefix}{descriptor.name}"
        items = list(value) if descriptor.is_repeated else [value]
        for position, item in enumerate(items):
            path = f"{name}[{position}]" if descriptor.is_repeated else name
            found += _fields(item, f"{path}.") if descriptor.message_type is not None else [(path, item)]
    return found


def assert_unharmed(result: list[pb.ServerMessage], reference: list[pb.ServerMessage]) -> None:
    """`result` has the reference's sentences exactly and its estimates within `ESTIMATE_TOLERANCE`."""
    got, want = comparable(result), comparable(reference)
    assert [row[:4] for row in got] == [row[:4] for row in want], "the sentences changed"
    for got_row, want_row in zip(got, want, strict=True):
        assert [name for name, _ in got_row[4]] == [name for name, _ in want_row[4]], "the estimate's fields changed"
        for (name, value), (_, expected) in zip(got_row[4], want_row[4], strict=True):
            if isinstance(value, float):
                assert value == pytest.approx(expected, abs=ESTIMATE_TOLERANCE), (got_row[0], name)
            else:
                assert value == expected, (got_row[0], name)


@pytest.fixture(scope="module")
def seam() -> Iterator[ServerThread]:
    """An in-process server on fake parts, default settings (its recogniser says nothing)."""
    with ServerThread(ServerSettings(grpc_port=0, http_port=0, device="cpu"), fake_parts()) as server:
        yield server


@pytest.mark.e2e
def test_happy_path_real_speech_with_asr(server: RunningServer) -> None:
    client = ScreeningClient(server.grpc_target)
    replies = asyncio.run(collect(client.stream_file(FIXTURES / "jfk.flac", speed=0, session_id="jfk-1")))
    kinds = [m.WhichOneof("kind") for m in replies]
    assert kinds[0] == "accepted" and kinds[-1] == "summary"
    accepted = replies[0].accepted
    assert accepted.session_id == "jfk-1"
    assert "synthetic" in accepted.model.model_id and "synthetic" in accepted.model.trained_on
    assert accepted.model.device == "cpu" and accepted.model.kernels == "pytorch"
    updates = sentences(replies)
    assert len(updates) >= 2
    assert [u.index for u in updates] == list(range(len(updates)))
    text = " ".join(u.transcript for u in updates).lower()
    assert "fellow americans" in text and "country" in text
    for update in updates:
        assert update.transcript_source == "asr"
        estimate = update.estimate
        assert 0.0 <= estimate.probability <= 1.0 and 0.0 < estimate.evidence < 1.0
        assert [m.modality for m in estimate.modalities] == [pb.AUDIO, pb.VIDEO, pb.TEXT]
        audio, video, text_conf = estimate.modalities
        assert audio.available and not video.available and text_conf.available
        assert video.weight == 0.0
        assert audio.weight + text_conf.weight == pytest.approx(1.0, abs=1e-5)
        assert len(estimate.symptoms) == 8
        assert update.latency_ms > 0
    evidence = [u.estimate.evidence for u in updates]
    assert evidence == sorted(evidence), "evidence grows with the speech heard"
    assert "fellow" not in server.log().lower(), "transcripts never reach the server's logs"
    summary = replies[-1].summary
    assert summary.sentences == len(updates)
    assert summary.audio_seconds == pytest.approx(11.0, abs=0.05)
    assert summary.estimate.probability == pytest.approx(updates[-1].estimate.probability)


@pytest.mark.e2e
def test_video_with_faces_and_captions(server: RunningServer, tmp_path) -> None:
    captions = tmp_path / "captions.srt"
    captions.write_text("1\n00:00:00,000 --> 00:00:03,000\nbin blue at f two now\n")
    client = ScreeningClient(server.grpc_target)
    replies = asyncio.run(collect(client.stream_file(SAMPLE, speed=0, captions=captions)))
    updates = sentences(replies)
    assert len(updates) >= 8
    assert updates[0].transcript == "bin blue at f two now" and updates[0].transcript_source == "caption"
    with_video = [u for u in updates if u.estimate.modalities[1].available]
    assert len(with_video) >= 0.8 * len(updates)
    assert all(u.estimate.modalities[1].quality > 0.5 and u.estimate.modalities[1].weight > 0 for u in with_video)


VIOLATIONS = [
    ("no start first", [SILENCE_100MS], grpc.StatusCode.FAILED_PRECONDITION, "first message must be `start`"),
    (
        "malformed language tag",
        [pb.ClientMessage(start=pb.SessionStart(language="English!", audio=START.start.audio))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "start.language 'English!' is not a BCP-47 language tag: use one such as en",
    ),
    (
        "session id forging a log line",
        [
            pb.ClientMessage(
                start=pb.SessionStart(
                    session_id="ok\nERROR forged entry", audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)
                )
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "unprintable characters",
    ),
    ("second start", [START, SILENCE_100MS, START], grpc.StatusCode.FAILED_PRECONDITION, "second `start`"),
    (
        "sample rate 0",
        [pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=0, channels=1)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "sample_rate_hz=0",
    ),
    (
        "absurd sample rate",
        [pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=10_000_000, channels=1)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "sample_rate_hz=10000000",
    ),
    (
        "five channels",
        [pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=5)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "channels=5",
    ),
    (
        "odd byte count",
        [START, pb.ClientMessage(audio=pb.AudioChunk(data=bytes(3201)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "3201 bytes",
    ),
    ("audio after end", [START, SILENCE_100MS, END, SILENCE_100MS], grpc.StatusCode.FAILED_PRECONDITION, "after `end`"),
    (
        "chunk too long",
        [START, pb.ClientMessage(audio=pb.AudioChunk(data=bytes(32_000 * 6)))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "exceeds the 5000 ms limit",
    ),
    (
        "oversized message",
        [START, pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=0, image=bytes(5 * 1024 * 1024), format=pb.JPEG))],
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    (
        "resume token without a store",
        [
            pb.ClientMessage(
                start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1), resume_token="x")
            )
        ],
        grpc.StatusCode.FAILED_PRECONDITION,
        "resume",
    ),
    ("empty message", [START, pb.ClientMessage()], grpc.StatusCode.INVALID_ARGUMENT, "no field set"),
]


@pytest.fixture(scope="module")
def reference_run(seam: ServerThread) -> list[pb.ServerMessage]:
    """The good interview alone, to compare against runs with bad streams alongside."""
    client = ScreeningClient(seam.grpc_target)
    return asyncio.run(collect(client.stream_file(FIXTURES / "jfk.flac", speed=0, disable_asr=True)))


def test_every_violation_ends_only_its_own_stream(seam: ServerThread, reference_run) -> None:
    async def violate(items: list[pb.ClientMessage]) -> grpc.aio.AioRpcError | None:
        client = ScreeningClient(seam.grpc_target)
        try:
            await collect(client.stream_messages(messages(*items)))
        except grpc.aio.AioRpcError as error:
            return error
        return None

    async def scenario() -> tuple[list[pb.ServerMessage], list[grpc.aio.AioRpcError | None]]:
        good_client = ScreeningClient(seam.grpc_target)
        good = asyncio.ensure_future(collect(good_client.stream_file(FIXTURES / "jfk.flac", speed=4, disable_asr=True)))
        errors = await asyncio.gather(*(violate(items) for _, items, _, _ in VIOLATIONS))
        return await good, errors

    good, errors = asyncio.run(scenario())
    for (name, _, code, text), error in zip(VIOLATIONS, errors, strict=True):
        assert error is not None, f"{name}: the stream should have failed"
        assert error.code() == code, f"{name}: {error.code()} {error.details()}"
        assert text in error.details(), f"{name}: {error.details()!r}"
    assert_unharmed(good, reference_run)
    assert good[-1].WhichOneof("kind") == "summary"
    metrics = seam.metrics()
    assert 'depscreen_errors_total{code="INVALID_ARGUMENT"}' in metrics
    assert 'depscreen_errors_total{code="FAILED_PRECONDITION"}' in metrics


def test_corrupt_frames_and_captions_are_dropped_and_counted(seam: ServerThread) -> None:
    pcm = subprocess.run(
        [sys.executable, "-c", "import sys; from depscreen.engine.media import decode_audio_file as d;"
         f"sys.stdout.buffer.write(d('{FIXTURES / 'jfk.flac'}').tobytes())"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    chunks = [pb.ClientMessage(audio=pb.AudioChunk(data=pcm[i : i + 3200])) for i in range(0, len(pcm), 3200)]
    bad = [
        pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=100, image=b"\xff\xd8garbage", format=pb.JPEG)),
        pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=300, image=b"abc", format=pb.RGB24, width=10, height=10)),
        pb.ClientMessage(caption=pb.Caption(start_ms=900, end_ms=100, text="backwards")),
        pb.ClientMessage(caption=pb.Caption(start_ms=0, end_ms=100, text="x" * 10_000)),
    ]
    before = seam.metrics()
    client = ScreeningClient(seam.grpc_target)
    replies = asyncio.run(collect(client.stream_messages(messages(START, *bad, *chunks, END))))
    assert replies[-1].summary.dropped_video_frames == 2
    assert replies[-1].summary.dropped_captions == 2
    assert len(sentences(replies)) >= 2, "the interview went on"
    sample = 'depscreen_errors_total{code="video_frame"}'
    assert seam.counter(sample) - read_counter(before, sample) == pytest.approx(2)


def test_a_refused_start_is_reported_with_its_own_status_however_fast_the_client_writes(
    seam: ServerThread,
) -> None:
    """A client writing behind its `start` raced the server's refusal, and grpcio then reported INTERNAL
    ("Internal error from Core") instead of the refusal (grpc/grpc#36066; before the client waited for the
    answer to `start`, about 8% of such calls on this machine)."""
    refused_start = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=0, channels=1)))

    async def refused() -> str:
        try:
            await collect(
                ScreeningClient(seam.grpc_target).stream_messages(messages(refused_start, SILENCE_100MS, END))
            )
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name}: {error.details()}"
        return "accepted"

    async def scenario() -> list[str]:
        outcomes = []
        for _ in range(5):
            outcomes += await asyncio.gather(*(refused() for _ in range(30)))
        return outcomes

    outcomes = asyncio.run(scenario())
    wrong = [o for o in outcomes if not (o.startswith("INVALID_ARGUMENT") and "sample_rate_hz=0" in o)]
    assert not wrong, f"{len(wrong)} of {len(outcomes)}: {sorted(set(wrong))}"


def test_health_checking_and_reflection(seam: ServerThread) -> None:
    with grpc.insecure_channel(seam.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "depscreen.v1.Screening"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert "depscreen.v1.Screening" in names and "grpc.health.v1.Health" in names


def test_metrics_and_healthz(seam: ServerThread) -> None:
    asyncio.run(
        collect(ScreeningClient(seam.grpc_target).stream_file(FIXTURES / "jfk.flac", speed=0, disable_asr=True))
    )
    metrics = seam.metrics()
    for name in (
        "depscreen_sentence_latency_seconds_bucket",
        "depscreen_sessions_active",
        "depscreen_sentences_total",
        "depscreen_audio_seconds_total",
        "depscreen_stage_cpu_seconds_total",
    ):
        assert name in metrics, name
    for stage in ("decode", "vad", "features_audio", "features_video", "asr", "text_embed", "model"):
        assert f'depscreen_stage_seconds_count{{stage="{stage}"}}' in metrics
    assert read_counter(metrics, 'depscreen_stage_seconds_count{stage="model"}') >= 2
    assert read_counter(metrics, "depscreen_sessions_active") == 0
    with urllib.request.urlopen(f"{seam.http_url}/healthz", timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "ok" and "synthetic" in body["model_id"]


def test_cli_stream_json(seam: ServerThread) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "stream", str(FIXTURES / "jfk.flac"), "--server",
         seam.grpc_target, "--speed", "0", "--json", "--no-asr"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert "accepted" in lines[0] and "summary" in lines[-1]
    first = next(line["sentence"] for line in lines if "sentence" in line)
    assert first["estimate"]["modalities"][0]["modality"] == "AUDIO"
    assert first["estimate"]["symptoms"][0]["item"] == "ANHEDONIA"
    assert set(first) >= {"start_ms", "end_ms", "estimate"}


def test_cli_stream_reports_rpc_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "stream", str(FIXTURES / "jfk.flac"), "--server",
         "127.0.0.1:1", "--speed", "0", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: UNAVAILABLE")


def _accepted(server: RunningServer, **start: object) -> pb.SessionAccepted:
    client = ScreeningClient(server.grpc_target)
    begin = pb.ClientMessage(start=pb.SessionStart(audio=START.start.audio, **start))
    return asyncio.run(collect(client.stream_messages(messages(begin, SILENCE_100MS, END))))[0].accepted


@pytest.mark.e2e
def test_accepted_names_the_recogniser_of_the_language(server: RunningServer) -> None:
    assert _accepted(server, language="en-US").asr_model == "whisper-tiny.en"
    assert _accepted(server).asr_model == "whisper-tiny.en", "no language means English"
    for tag in ("zh", "zh-CN", "cmn"):
        accepted = _accepted(server, language=tag)
        assert (accepted.asr_model, list(accepted.notices)) == ("whisper-base", []), tag
    klingon = _accepted(server, language="tlh")
    assert klingon.asr_model == ""
    assert [n for n in klingon.notices if "no speech recogniser on this server knows language 'tlh'" in n]
    assert [n for n in klingon.notices if "captions only" in n]
    muted = _accepted(server, language="zh", disable_asr=True)
    assert (muted.asr_model, list(muted.notices)) == ("", [])


@pytest.mark.slow
@pytest.mark.e2e
def test_mandarin_session_is_transcribed_in_chinese(server: RunningServer) -> None:
    answer = SHARED_DATA / "eatd" / "train" / "t_1" / "positive.flac"
    if not answer.exists():
        pytest.skip(f"the EATD answer {answer} is absent (the shared data folder sits beside the project)")
    client = ScreeningClient(server.grpc_target)
    replies = asyncio.run(collect(client.stream_file(answer, speed=0, video=False, language="zh-CN")))
    assert replies[0].accepted.asr_model == "whisper-base"
    updates = sentences(replies)
    text = "".join(u.transcript for u in updates)
    assert sum("\u4e00" <= c <= "\u9fff" for c in text) > 20, text
    said = answer.with_suffix(".txt").read_text(encoding="utf-8")
    assert transcript_error(said, text, "zh").rate < 0.6, text  # 0.42 measured: whisper base on this answer
    assert all(u.transcript_source == "asr" for u in updates if u.transcript)
    assert text[:8] not in server.log(), "transcripts never reach the server's logs"
