"""Resumable sessions: snapshots, resume tokens, the client's replay buffer, and real crashes.

The crash tests run real servers on loopback: one is killed (SIGKILL) after a few sentences and restarted on
the same SQLite store and port, or (Redis) another replica takes over, reached by the client's own balancing
or through nginx (`grpc_pass`); the client resumes, and the sentences must be those of an uninterrupted run of
the same media: same indices and spans, estimates within `chaosbench.ESTIMATE_TOLERANCE` (README, "Resumable sessions").
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from depscreen.chaosbench import SERVER_FLAGS as FLAGS
from depscreen.chaosbench import Seen, mismatches
from depscreen.clients import cli as client_cli
from depscreen.clients.resumable import ReplayBuffer
from depscreen.clients.session import ScreeningClient
from depscreen.engine.pipeline import SessionCounts
from depscreen.engine.runtime.checkpoint import DEMO_MODEL, save_checkpoint
from depscreen.engine.runtime.screener import EvidenceAccount, ModalityEstimate, RunningEstimate, Screener, SessionTrack
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions
from depscreen.localserver import LocalServer, free_port, read_counter, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.resume import ResumeError, Resumer, SessionSnapshot, decode, encode, read_key_file
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.state_store import SqliteStore, StoreRecord
from depscreen.v1 import screening_pb2 as pb

from .conftest import with_speaker_normalisation

KILL_AFTER = 4
"""Sentences received before the server is killed."""


# ---------------------------------------------------------------------------------------------------------
# Units: snapshots, tokens, the replay buffer
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def initial_state() -> object:
    return Screener.from_checkpoint(DEMO_MODEL, "cpu").model.initial_state(1)


def a_snapshot(state: object) -> SessionSnapshot:
    estimate = RunningEstimate(
        probability=0.25,
        evidence=0.5,
        modalities=(ModalityEstimate("audio", True, 0.9, 1.0, 0.3),),
        symptoms=tuple(float(i) / 10 for i in range(8)),
    )
    account = EvidenceAccount(usable_speech_s=12.5, symptom_sum=np.arange(8, dtype=np.float64), text_sentences=3)
    return SessionSnapshot("interview-7", 5, 14_500, SessionCounts(9_000, 2, 1), SessionTrack(state, account), estimate)


def test_a_snapshot_round_trips_through_bytes(initial_state: object) -> None:
    snapshot = a_snapshot(initial_state)
    for layer in snapshot.track.state.layers:
        layer.ssm.normal_()
    restored = decode("interview-7", encode(snapshot))
    assert restored.estimate == snapshot.estimate
    assert (restored.next_index, restored.resume_from_ms) == (5, 14_500)
    assert restored.counts == SessionCounts(speech_ms=9_000, dropped_video_frames=2, dropped_captions=1)
    assert restored.track.account.usable_speech_s == 12.5 and restored.track.account.text_sentences == 3
    np.testing.assert_array_equal(restored.track.account.symptom_sum, np.arange(8))
    for old, new in zip(snapshot.track.state.layers, restored.track.state.layers, strict=True):
        assert torch.equal(old.ssm, new.ssm) and torch.equal(old.conv, new.conv)
    assert torch.equal(restored.track.state.modality_sum, snapshot.track.state.modality_sum)
    assert decode("x", encode(SessionSnapshot("x"))).track.state is None


def test_a_resume_point_round_trips_through_a_snapshot_without_audio() -> None:
    from depscreen.engine.pipeline import ResumePoint
    from depscreen.engine.segment import Segmenter

    pcm = np.frombuffer(jfk_pcm(), dtype=np.int16)
    snapshot = Segmenter().push(pcm)[1].resume
    point = ResumePoint(snapshot, 2_400.0, snapshot.replay_from_sample - 3_200)
    data = encode(SessionSnapshot("interview-7", 2, 5_000, resume=point))
    assert decode("interview-7", data).resume == point
    held = pcm[snapshot.replay_from_sample : snapshot.resume_sample]
    for width in (160, 320):  # no stretch of the held audio is in the record
        assert all(held[i : i + width].tobytes() not in data for i in range(0, len(held) - width, width))


def test_a_snapshot_of_the_first_release_still_decodes(initial_state: object) -> None:
    """Records written before the state was walked generically (its parts spelled out by hand) still load:
    a rolling upgrade keeps its sessions resumable."""
    state = initial_state.map(lambda t: torch.randn_like(t))
    legacy = {
        "next_index": 3,
        "resume_from_ms": 9_000,
        "speech_ms": 6_000,
        "dropped_video_frames": 0,
        "dropped_captions": 0,
        "usable_speech_s": 4.0,
        "symptom_sum": torch.zeros(8, dtype=torch.float64),
        "text_sentences": 1,
        "estimate": None,
        "layers": [(s.conv, s.ssm) for s in state.layers],
        "modality_sum": state.modality_sum,
        "modality_count": state.modality_count,
    }
    buffer = io.BytesIO()
    torch.save(legacy, buffer)
    restored = decode("old", buffer.getvalue()).track.state
    assert all(torch.equal(a, b) for a, b in zip(restored.tensors(), state.tensors(), strict=True))
    assert encode(a_snapshot(state)) == encode(decode("old", encode(a_snapshot(state)))), "the layout is stable"
    before_first = dict(legacy, layers=[], modality_sum=None, modality_count=None)
    buffer = io.BytesIO()
    torch.save(before_first, buffer)
    assert decode("old", buffer.getvalue()).track.state is None


def test_a_speaker_normalised_session_resumes_from_its_snapshot_exactly() -> None:
    """The audio moments travel in the snapshot: a session snapshotted after sentence k and continued by
    another screener ends with the estimates of an uninterrupted run."""
    shipped = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    model = with_speaker_normalisation(shipped.model)
    eight = SyntheticSettings(min_sentences=8, max_sentences=8)
    sentences = generate_sessions(1, FeatureStats.unit(), seed=9, settings=eight)[0].sentences
    uninterrupted = Screener(model, shipped.facts, shipped.device)
    track = uninterrupted.new_session()
    expected = [uninterrupted.step(track, s) for s in sentences]
    first = Screener(model, shipped.facts, shipped.device)
    track = first.new_session()
    estimates = [first.step(track, s) for s in sentences[:3]]
    snapshot = decode("interview-3", encode(SessionSnapshot("interview-3", 3, track=track, estimate=estimates[-1])))
    assert torch.equal(snapshot.track.state.audio_moments, track.state.audio_moments)
    resumed = Screener(with_speaker_normalisation(shipped.model), shipped.facts, shipped.device)
    estimates += [resumed.step(snapshot.track, s) for s in sentences[3:]]
    assert estimates == expected


def test_a_resume_token_opens_its_own_session_only(tmp_path: Path, initial_state: object) -> None:
    store = SqliteStore(tmp_path / "sessions.db")
    resumer = Resumer(store, store.server_key(), ttl_s=3600)
    mine, other = resumer.new_ticket("interview-7"), resumer.new_ticket("interview-8")
    resumer.save(mine, a_snapshot(initial_state))
    resumer.save(other, SessionSnapshot("interview-8"))
    ticket, snapshot = resumer.restore(resumer.token(mine))
    assert ticket == replace(mine, generation=2), "the resume took the record's next generation"
    assert snapshot.session_id == "interview-7" and snapshot.next_index == 5
    record_id, mac = resumer.token(mine).split(".")
    other_mac = resumer.token(other).split(".")[1]
    for forged in (f"{record_id}.{other_mac}", f"{other.record_id}.{mac}", f"{record_id}.{mac[:-2]}AA", record_id, ""):
        with pytest.raises(ResumeError):
            resumer.restore(forged)
    with pytest.raises(ResumeError):
        Resumer(store, b"another server key, 32 bytes ...", ttl_s=3600).restore(resumer.token(mine))
    with pytest.raises(ResumeError, match="expired"):
        Resumer(store, store.server_key(), ttl_s=1e-6).restore(resumer.token(mine))
    resumer.forget(ticket)
    with pytest.raises(ResumeError):
        resumer.restore(resumer.token(mine))
    assert SqliteStore(tmp_path / "sessions.db").server_key() == store.server_key(), "the key is kept in the store"


def test_a_resume_token_works_only_for_the_principal_that_opened_the_session(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.db")
    resumer = Resumer(store, store.server_key(), ttl_s=3600)
    ticket = resumer.new_ticket("interview-7", "token:3f9d")
    resumer.save(ticket, SessionSnapshot("interview-7", next_index=2))
    token = resumer.token(ticket)
    for stranger in ("token:0a1b", "jwt:3f9d", None):
        with pytest.raises(ResumeError, match="another caller"):
            resumer.restore(token, stranger)
    restored, snapshot = resumer.restore(token, "token:3f9d")
    assert restored == replace(ticket, generation=2) and snapshot.next_index == 2
    anonymous = resumer.new_ticket("interview-8")
    resumer.save(anonymous, SessionSnapshot("interview-8"))
    assert resumer.restore(resumer.token(anonymous))[0] == replace(anonymous, generation=2)
    with pytest.raises(ResumeError):
        resumer.restore(resumer.token(anonymous), "token:3f9d")


def test_a_snapshot_that_cannot_be_read_refuses_the_resume(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.db")
    resumer = Resumer(store, store.server_key(), ttl_s=3600)
    ticket = resumer.new_ticket("interview-9")
    store.save(StoreRecord(ticket.record_id, ticket.session_id, ticket.nonce, b"not a torch.save payload"), 3600)
    with pytest.raises(ResumeError, match="unreadable"):
        resumer.restore(resumer.token(ticket))


def test_settings_refuse_an_unusable_state_store_setup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not sqlite://PATH or redis://"):
        ServerSettings(state_store="postgres://db/sessions")
    with pytest.raises(ValueError, match="set state_store"):
        ServerSettings(resume_key_file="/run/secrets/resume-key")
    with pytest.raises(ValueError, match="resume_ttl_s"):
        ServerSettings(state_store="sqlite://s.db", resume_ttl_s=0)
    with pytest.raises(ValueError, match="at least 16"):
        (tmp_path / "short.key").write_text("too short\n")
        read_key_file(str(tmp_path / "short.key"))


def test_depscreen_stream_resumes_by_default_over_grpc_only(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="depscreen")
    client_cli.register(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["stream", "a.mp4", "--resume"]).resume is True, "kept for existing scripts"
    assert parser.parse_args(["stream", "a.mp4"]).resume is None, "on by default, whenever the server can resume"
    assert parser.parse_args(["stream", "a.mp4", "--no-resume"]).resume is False
    args = parser.parse_args(["stream", "a.mp4", "--resume", "--webrtc", "http://127.0.0.1:9/whip"])
    assert client_cli.run_stream(args) == 2
    assert "--resume works over gRPC only" in capsys.readouterr().err


def audio(start_ms: int, length_ms: int) -> pb.ClientMessage:
    samples = np.arange(start_ms * 16, (start_ms + length_ms) * 16, dtype=np.int16)
    return pb.ClientMessage(audio=pb.AudioChunk(data=samples.tobytes()))


def test_the_replay_buffer_resends_exactly_what_was_not_committed() -> None:
    buffer = ReplayBuffer()
    sent = [
        audio(0, 100),
        pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=100, image=b"a")),
        audio(100, 100),
        pb.ClientMessage(caption=pb.Caption(start_ms=150, end_ms=400, text="kept: it ends after 250")),
        pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=200, image=b"b")),
        audio(200, 100),
        pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=300, image=b"c")),
        audio(300, 100),
    ]
    for message in sent:
        buffer.add(message)
    buffer.commit(120)
    replayed = buffer.replay(250)
    audio_bytes = b"".join(m.audio.data for m in replayed if m.WhichOneof("kind") == "audio")
    assert audio_bytes == audio(250, 150).audio.data, "audio from the resume point to the end, cut at its sample"
    assert [m.video.image for m in replayed if m.WhichOneof("kind") == "video"] == [b"c"]
    assert [m.caption.start_ms for m in replayed if m.WhichOneof("kind") == "caption"] == [150]
    buffer.commit(400)
    assert len(buffer) == 0 and buffer.replay(400) == []


# ---------------------------------------------------------------------------------------------------------
# Real servers: refusals, and crashes
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(store_dir: Path) -> Iterator[tuple[LocalServer, list[Seen]]]:
    """A server with a SQLite store, and the sentences of the sample streamed through it uninterrupted."""
    log = (store_dir / "reference.log").open("w")
    server = start_local_server(*FLAGS, "--state-store", f"sqlite://{store_dir}/reference.db", output=log)
    updates, _ = asyncio.run(stream_sample(server.grpc_target))
    yield server, updates
    server.stop()
    log.close()


async def stream_sample(target: str, on_sentence: object = None) -> tuple[list[Seen], list[pb.SessionAccepted]]:
    """Stream the bundled sample (audio and video, 4x real time) with resume on; `on_sentence(count)` is called
    after each sentence update."""
    updates, accepted = [], []
    client = ScreeningClient(target)
    async for message in client.stream_file(sample_path(), speed=4):
        kind = message.WhichOneof("kind")
        if kind == "accepted":
            accepted.append(message.accepted)
        elif kind == "sentence":
            updates.append(Seen.of(message.sentence))
            if on_sentence is not None:
                await on_sentence(len(updates))
    return updates, accepted


def assert_resumed_run_matches(reference: list[Seen], resumed: list[Seen], accepted: list) -> None:
    assert len(accepted) == 2 and accepted[1].session_id == accepted[0].session_id
    assert accepted[1].resume_token == accepted[0].resume_token
    assert accepted[1].next_sentence_index == KILL_AFTER
    assert accepted[1].resume_from_ms == reference[KILL_AFTER - 1].end_ms
    assert accepted[1].HasField("replay_from_sample")
    assert accepted[1].replay_from_sample < accepted[1].resume_from_ms * 16, "a warm-up before the resume point"
    assert not any("restarts cold" in notice for notice in accepted[1].notices), "a warm resume"
    assert not mismatches(reference, resumed)


def test_a_wrong_or_ended_token_is_refused(reference: tuple[LocalServer, list[Seen]]) -> None:
    server, _ = reference
    start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1))

    async def open_with(token: str) -> list[pb.ServerMessage]:
        start.resume_token = token
        messages = [pb.ClientMessage(start=start), pb.ClientMessage(end=pb.SessionEnd())]

        async def outgoing() -> object:
            for message in messages:
                yield message

        return [reply async for reply in ScreeningClient(server.grpc_target).stream_messages(outgoing())]

    ended, summary = asyncio.run(open_with(""))
    assert ended.accepted.resume_token, "a resumable server hands out a token"
    taken = asyncio.run(open_with(ended.accepted.resume_token))  # within finished_retention_s: the summary again
    assert [reply.WhichOneof("kind") for reply in taken] == ["accepted", "summary"]
    assert taken[1].summary == summary.summary
    for token in (ended.accepted.resume_token, "0" * 32 + ".forged", "not a token"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(open_with(token))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "start a new session" in refused.value.details()
        assert token not in refused.value.details()


def test_one_resume_token_opens_one_live_stream_at_a_time(reference: tuple[LocalServer, list[Seen]]) -> None:
    """A second stream presenting the token of a session that streams now would fork it: it is refused with
    UNAVAILABLE (which clients retry) until the first stream ends; then the token resumes the session."""
    server, _ = reference
    start = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
    silence = pb.ClientMessage(audio=pb.AudioChunk(data=bytes(3200)))

    async def scenario() -> tuple[grpc.aio.AioRpcError, pb.ServerMessage]:
        release, token = asyncio.Event(), asyncio.get_running_loop().create_future()

        async def first() -> AsyncIterator[pb.ClientMessage]:
            yield start
            yield silence
            await release.wait()

        async def run_first() -> None:
            async for reply in ScreeningClient(server.grpc_target).stream_messages(first()):
                if reply.WhichOneof("kind") == "accepted":
                    token.set_result(reply.accepted.resume_token)

        async def resume(resume_token: str) -> pb.ServerMessage:
            again = pb.ClientMessage()
            again.CopyFrom(start)
            again.start.resume_token = resume_token

            async def messages() -> AsyncIterator[pb.ClientMessage]:
                yield again
                yield pb.ClientMessage(end=pb.SessionEnd())

            replies = [reply async for reply in ScreeningClient(server.grpc_target).stream_messages(messages())]
            return replies[0]

        holder = asyncio.ensure_future(run_first())
        resume_token = await asyncio.wait_for(token, 60)
        try:
            await resume(resume_token)
        except grpc.aio.AioRpcError as error:
            refused = error
        holder.cancel()  # the first stream breaks: the server frees the session on noticing it
        await asyncio.gather(holder, return_exceptions=True)
        for _ in range(100):
            try:
                return refused, await resume(resume_token)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.1)
        raise AssertionError("the session stayed live after its stream broke")

    refused, resumed = asyncio.run(scenario())
    assert refused.code() == grpc.StatusCode.UNAVAILABLE and "one stream at a time" in refused.details()
    assert resumed.WhichOneof("kind") == "accepted" and resumed.accepted.resume_from_ms == 0


def test_a_break_is_raised_when_the_server_cannot_resume(store_dir: Path) -> None:
    """A server without a state store gives no token: the client raises the break instead of reconnecting."""
    with (store_dir / "storeless.log").open("w") as log:
        server = start_local_server(*FLAGS, output=log)

    async def crash(count: int) -> None:
        if count == 1:
            server.process.kill()
            server.process.wait()

    try:
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            asyncio.run(stream_sample(server.grpc_target, crash))
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


@pytest.mark.e2e
def test_a_session_survives_a_killed_and_restarted_server(
    reference: tuple[LocalServer, list[Seen]], store_dir: Path
) -> None:
    _, expected = reference
    killed_and_restarted(expected, (*FLAGS, "--state-store", f"sqlite://{store_dir}/crash.db"), store_dir / "crash.log")


@pytest.mark.e2e
def test_a_speaker_normalised_session_survives_a_killed_and_restarted_server(store_dir: Path) -> None:
    """The same with a model whose state carries the session's audio moments."""
    shipped = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    model_path = store_dir / "speaker.pt"
    save_checkpoint(model_path, with_speaker_normalisation(shipped.model), shipped.facts)
    flags = (*FLAGS, "--model", str(model_path))
    with (store_dir / "speaker-reference.log").open("w") as log:
        server = start_local_server(*flags, "--state-store", f"sqlite://{store_dir}/speaker-reference.db", output=log)
        try:
            expected, _ = asyncio.run(stream_sample(server.grpc_target))
        finally:
            server.stop()
    killed_and_restarted(
        expected, (*flags, "--state-store", f"sqlite://{store_dir}/speaker-crash.db"), store_dir / "speaker-crash.log"
    )


def killed_and_restarted(expected: list[Seen], flags: tuple[str, ...], log_path: Path) -> None:
    """Stream the sample to a server started with `flags`, SIGKILL it after `KILL_AFTER` sentences, restart it
    on the same store and port, and check that the resumed run matches `expected`."""
    port, http_port = free_port(), free_port()
    log = log_path.open("w")
    servers = [start_local_server(*flags, grpc_port=port, http_port=http_port, output=log)]
    restarted: list[asyncio.Task] = []

    async def crash(count: int) -> None:
        if count == KILL_AFTER:
            servers[0].process.kill()  # SIGKILL: nothing is flushed or closed
            servers[0].process.wait()
            start = asyncio.to_thread(start_local_server, *flags, grpc_port=port, http_port=http_port, output=log)
            restarted.append(asyncio.ensure_future(start))

    async def run() -> tuple[list[Seen], list]:
        result = await stream_sample(servers[0].grpc_target, crash)
        servers.append(await restarted[0])
        return result

    try:
        updates, accepted = asyncio.run(run())
        assert_resumed_run_matches(expected, updates, accepted)
        assert read_counter(servers[1].metrics(), "depscreen_sessions_total") == 1
    finally:
        for server in servers:
            server.stop()
        log.close()


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Return once `process` accepts connections on loopback `port`; RuntimeError if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"{process.args[0]} did not listen on port {port}") from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def redis_url(store_dir: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port (no persistence), for the test's replicas."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=store_dir,
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.e2e
def test_a_second_replica_sharing_redis_takes_over(
    reference: tuple[LocalServer, list[Seen]], redis_url: str, store_dir: Path
) -> None:
    _, expected = reference
    log = (store_dir / "replicas.log").open("w")
    replicas = [start_local_server(*FLAGS, "--state-store", redis_url, output=log) for _ in range(2)]
    # gRPC's pick_first: the first replica while it is up, the second once it is gone (as a proxy would)
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.grpc_port}" for r in replicas)

    async def crash(count: int) -> None:
        if count == KILL_AFTER:
            replicas[0].process.kill()
            replicas[0].process.wait()

    try:
        updates, accepted = asyncio.run(stream_sample(target, crash))
        assert_resumed_run_matches(expected, updates, accepted)
        assert read_counter(replicas[1].metrics(), "depscreen_sessions_total") == 1, "the second replica resumed it"
    finally:
        for replica in replicas:
            replica.stop()
        log.close()


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream replicas {{
    server 127.0.0.1:{first} max_fails=1 fail_timeout=60s;
    server 127.0.0.1:{second} max_fails=1 fail_timeout=60s;
  }}
  server {{
    listen 127.0.0.1:{port} http2;
    client_max_body_size 0;
    grpc_read_timeout 300s;
    grpc_send_timeout 300s;
    location / {{
      grpc_pass grpc://replicas;
    }}
  }}
}}
"""
"""nginx balancing gRPC streams over two replicas, as deploy/README.md recommends (no body cap, long timeouts)."""


@pytest.mark.e2e
def test_replicas_behind_nginx_sharing_redis_resume_a_session(
    reference: tuple[LocalServer, list[Seen]], redis_url: str, store_dir: Path
) -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    _, expected = reference
    log = (store_dir / "proxied.log").open("w")
    replicas = [start_local_server(*FLAGS, "--state-store", redis_url, output=log) for _ in range(2)]
    port = free_port()
    proxy_dir = store_dir / "nginx"
    proxy_dir.mkdir()
    conf = proxy_dir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(dir=proxy_dir, first=replicas[0].grpc_port, second=replicas[1].grpc_port, port=port)
    )
    proxy = subprocess.Popen([nginx, "-c", str(conf), "-p", str(proxy_dir), "-e", str(proxy_dir / "nginx-error.log")])
    killed: list[LocalServer] = []

    async def crash(count: int) -> None:
        if count == KILL_AFTER:
            (holder,) = [r for r in replicas if read_counter(r.metrics(), "depscreen_sessions_active") == 1]
            holder.process.kill()
            holder.process.wait()
            killed.append(holder)

    try:
        wait_for_port(port, proxy)
        updates, accepted = asyncio.run(stream_sample(f"127.0.0.1:{port}", crash))
        assert_resumed_run_matches(expected, updates, accepted)
        (survivor,) = [r for r in replicas if r not in killed]
        assert read_counter(survivor.metrics(), "depscreen_sessions_total") == 1, "the other replica resumed it"
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        for replica in replicas:
            replica.stop()
        log.close()


# ---------------------------------------------------------------------------------------------------------
# Bad input on a resume: an old snapshot, a replay of other audio
# ---------------------------------------------------------------------------------------------------------


def jfk_pcm() -> bytes:
    from depscreen.engine.media import decode_audio_file

    from .conftest import FIXTURES

    return decode_audio_file(FIXTURES / "jfk.flac").tobytes()


async def raw_session(
    target: str, start: pb.SessionStart, audio: object, chunk_bytes: int = 3_200, end: bool = True
) -> list[pb.ServerMessage]:
    """Open a stream with `start`; once `accepted` arrives, send `audio(accepted)` (bytes) in chunks of
    `chunk_bytes` (100 ms) and `end` (or, `end` False, nothing more: for a stream the server will end); the
    replies."""
    accepted: asyncio.Future[pb.SessionAccepted] = asyncio.get_running_loop().create_future()

    async def outgoing() -> object:
        yield pb.ClientMessage(start=start)
        data = audio(await accepted)
        for offset in range(0, len(data), chunk_bytes):
            yield pb.ClientMessage(audio=pb.AudioChunk(data=data[offset : offset + chunk_bytes]))
        if end:
            yield pb.ClientMessage(end=pb.SessionEnd())
        else:
            await asyncio.Event().wait()

    replies = []
    async for reply in ScreeningClient(target).stream_messages(outgoing()):
        if reply.WhichOneof("kind") == "accepted":
            accepted.set_result(reply.accepted)
        replies.append(reply)
    return replies


def test_a_snapshot_of_the_previous_format_resumes_cold_and_says_so(
    reference: tuple[LocalServer, list[Seen]], store_dir: Path
) -> None:
    """A snapshot written before snapshots carried a resume point (as an upgraded server finds it) resumes at
    its `resume_from_ms` with a fresh segmenter, on the session's clock, and `accepted` says so."""
    server, _ = reference
    store = SqliteStore(store_dir / "reference.db")
    resumer = Resumer(store, store.server_key(), ttl_s=3600)
    ticket = resumer.new_ticket("interview-old")
    old = SessionSnapshot("interview-old", next_index=5, resume_from_ms=14_500)
    payload = torch.load(io.BytesIO(encode(old)), weights_only=True)
    del payload["resume_point"]  # the previous format
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    store.save(StoreRecord(ticket.record_id, ticket.session_id, ticket.nonce, buffer.getvalue()), 3600)
    start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1), resume_token=resumer.token(ticket))
    pcm = jfk_pcm()
    replies = asyncio.run(raw_session(server.grpc_target, start, lambda accepted: pcm))
    accepted = replies[0].accepted
    assert accepted.replay_from_sample == old.resume_from_ms * 16 and accepted.next_sentence_index == old.next_index
    assert any("restarts cold at 14500 ms" in notice for notice in accepted.notices), accepted.notices
    sentences = [r.sentence for r in replies if r.WhichOneof("kind") == "sentence"]
    assert sentences and sentences[0].index == old.next_index and sentences[0].start_ms >= old.resume_from_ms


def test_a_resume_that_re_sends_other_audio_is_refused(reference: tuple[LocalServer, list[Seen]]) -> None:
    """A client that lost its buffer or re-sends another recording does not get it merged into the session: the
    server checks the re-sent audio against the snapshot's fingerprint and ends the stream."""
    server, _ = reference
    pcm = jfk_pcm()
    start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1))

    async def first() -> tuple[str, int]:
        """A session that gets two sentences, then breaks without `end` (the snapshot stays)."""
        replies = []
        client = ScreeningClient(server.grpc_target)

        async def outgoing() -> object:
            yield pb.ClientMessage(start=start)
            for offset in range(0, len(pcm), 3_200):
                yield pb.ClientMessage(audio=pb.AudioChunk(data=pcm[offset : offset + 3_200]))
            await asyncio.Event().wait()  # never `end`

        async for reply in client.stream_messages(outgoing()):
            replies.append(reply)
            if sum(r.WhichOneof("kind") == "sentence" for r in replies) == 2:
                break
        return replies[0].accepted.resume_token, 2

    token, received = asyncio.run(first())
    resume = pb.SessionStart(
        audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1), resume_token=token, received_sentences=received
    )
    # 4.5 s re-sent in one message, more than the replay the server checks: nothing more is written while it
    # checks it (a write racing its refusal would hide the status as INTERNAL, grpc/grpc#36066)
    checked = 4_500 * 32
    for other in (
        lambda accepted: pcm[accepted.resume_from_ms * 32 :][:checked],  # an old client: re-sends from the sentence end
        lambda accepted: np.zeros(checked // 2, dtype=np.int16).tobytes(),  # another recording
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            asyncio.run(raw_session(server.grpc_target, resume, other, chunk_bytes=checked, end=False))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "is not the audio the session heard" in refused.value.details()
    good = asyncio.run(raw_session(server.grpc_target, resume, lambda accepted: pcm[accepted.replay_from_sample * 2 :]))
    assert good[-1].WhichOneof("kind") == "summary", "the refusals left the snapshot: the right audio resumes"
