"""What operators see of a real server on loopback: health that follows admission, retry hints on refusals,
process and build metrics, and JSON log lines with session fields."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
import urllib.error
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from depscreen.engine.media import decode_audio_file
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.streamer.logs import FIELDS
from depscreen.streamer.protocol import RETRY_AFTER_S
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

from .conftest import FIXTURES

TOKEN = "operations-test-token-0123456789"
START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
JFK = decode_audio_file(FIXTURES / "jfk.flac").tobytes()
SCREENING = "depscreen.v1.Screening"
HEALTHCHECK = Path(__file__).resolve().parents[1] / "deploy" / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, Path]]:
    """A server that admits one session at a time and logs JSON."""
    folder = tmp_path_factory.mktemp("operations")
    (folder / "tokens").write_text(TOKEN + "\n")
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = start_local_server(
            "--device", "cpu", "--asr", "none", "--max-sessions", "1", "--log-format", "json",
            "--auth-tokens", str(folder / "tokens"), output=log,
        )  # fmt: skip
        yield server, log_path
        server.stop()


def audio(data: bytes, chunk: int = 3200) -> list[pb.ClientMessage]:
    return [pb.ClientMessage(audio=pb.AudioChunk(data=data[i : i + chunk])) for i in range(0, len(data), chunk)]


def stream(channel: grpc.aio.Channel, messages: AsyncIterator[pb.ClientMessage]) -> grpc.aio.StreamStreamCall:
    stub = screening_pb2_grpc.ScreeningStub(channel)
    return stub.StreamSession(messages, metadata=(("authorization", f"Bearer {TOKEN}"),))


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def wait_for_health(channel: grpc.aio.Channel, service: str, status: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await health_of(channel, service) != status:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        assert time.monotonic() < deadline, f"{service!r} did not become {name}"
        await asyncio.sleep(0.05)


def probe(server: LocalServer, path: str) -> int:
    """The exit status of the image's health check (the chart's exec probe) asking `path`."""
    env = {"DEPSCREEN_HTTP_PORT": str(server.http_port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(HEALTHCHECK), path], env=env, timeout=30).returncode


def readyz(server: LocalServer) -> int:
    try:
        server.get("/readyz")
        return 200
    except urllib.error.HTTPError as error:
        return error.code


def test_health_follows_admission_and_a_refusal_carries_retry_info(full: tuple[LocalServer, Path]) -> None:
    server, log_path = full
    SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

    async def scenario() -> tuple[list[int], grpc.aio.AioRpcError, list[int]]:
        release = asyncio.Event()

        async def hold() -> AsyncIterator[pb.ClientMessage]:
            yield START
            for message in audio(JFK[: 32_000 * 2]):
                yield message
            await release.wait()
            yield pb.ClientMessage(end=pb.SessionEnd())

        async def one() -> AsyncIterator[pb.ClientMessage]:
            yield START

        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            await wait_for_health(channel, SCREENING, SERVING)
            holder = stream(channel, hold())
            assert (await holder.read()).WhichOneof("kind") == "accepted"
            await wait_for_health(channel, SCREENING, NOT_SERVING)
            while_full = [
                await health_of(channel, ""),
                await health_of(channel, SCREENING),
                readyz(server),
                probe(server, "/healthz"),
                probe(server, "/readyz"),
            ]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stream(channel, one()):
                    pass
            release.set()
            while await holder.read() != grpc.aio.EOF:
                pass
            await wait_for_health(channel, SCREENING, SERVING)
            after = [
                await health_of(channel, ""),
                await health_of(channel, SCREENING),
                readyz(server),
                probe(server, "/healthz"),
                probe(server, "/readyz"),
            ]
        return while_full, refused.value, after

    while_full, refused, after = asyncio.run(scenario())
    assert while_full == [SERVING, NOT_SERVING, 503, 0, 1], "full: liveness stays SERVING, readiness does not"
    assert after == [SERVING, SERVING, 200, 0, 0], "the slot freed: ready again"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 1 concurrent sessions" in refused.details()
    status = rpc_status.from_call(refused)
    assert status is not None and status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    infos = [error_details_pb2.RetryInfo() for _ in status.details]
    assert [detail.Unpack(info) for detail, info in zip(status.details, infos, strict=True)] == [True]
    assert infos[0].retry_delay.ToMilliseconds() == RETRY_AFTER_S * 1000
    logged = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(line.get("code") == "RESOURCE_EXHAUSTED" for line in logged), "the refusal is logged with its code"


def test_metrics_expose_the_process_the_build_and_the_session_limit(full: tuple[LocalServer, Path]) -> None:
    metrics = full[0].metrics()
    assert read_counter(metrics, "depscreen_max_sessions") == 1
    assert read_counter(metrics, "process_resident_memory_bytes") > 50e6, "the server's own RSS (model loaded)"
    assert read_counter(metrics, "process_cpu_seconds_total") > 0
    assert read_counter(metrics, "process_open_fds") > 0
    assert read_counter(metrics, 'python_gc_collections_total{generation="0"}') > 0
    build = next(line for line in metrics.splitlines() if line.startswith("depscreen_build_info{"))
    for label in ('version="0.1.0"', 'device="cpu"', 'kernels="', 'model_id="'):
        assert label in build, build
    assert build.endswith(" 1.0")


def test_json_logs_carry_session_and_status_fields_only(full: tuple[LocalServer, Path]) -> None:
    server, log_path = full

    async def short_session() -> AsyncIterator[pb.ClientMessage]:
        yield START
        for message in audio(JFK[: 32_000 * 3]):
            yield message
        yield pb.ClientMessage(end=pb.SessionEnd())

    async def run() -> str:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            replies = [reply async for reply in stream(channel, short_session())]
        return replies[0].accepted.session_id

    session_id = asyncio.run(run())
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        ended = [line for line in lines if line.get("session_id") == session_id and line.get("code") == "OK"]
        if ended or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ended, "the session's end is logged with its id and status"
    fingerprint = hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert ended[0]["token_fingerprint"] == fingerprint and ended[0]["message"] == "stream ended"
    allowed = {"time", "level", "logger", "message", *FIELDS}
    for line in lines:
        assert set(line) <= allowed, line
        assert TOKEN not in json.dumps(line)
