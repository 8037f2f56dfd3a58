"""Faults against real servers on loopback: a state store that fills up, is locked or corrupt; a stream that
breaks mid-interview; a server paused with SIGSTOP; a link that freezes; a stream that never sends `start`;
SIGTERM with a health watcher. Each interview must reach its summary or resume with no sentence index missing.

The interviews here are the bundled sample's audio (16 kHz mono), sent by hand over raw gRPC calls so that a
test can break a stream where it wants and resume saying which updates it holds (`received_sentences`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from depscreen.clients.whip import WhipClient
from depscreen.engine.media import decode_audio_file
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.clock import SystemClock
from depscreen.streamer.resume import Resumer, SessionSnapshot, kept_update
from depscreen.streamer.server import SERVICE_NAME, Server, grpc_options
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.snapshot_writer import NOT_RESUMABLE_STORE_DOWN
from depscreen.streamer.stall import SLICE_S, MessageWait, Silence
from depscreen.streamer.state_store import SQLITE_BUSY_TIMEOUT_S, SqliteStore, StoreError, StoreRecord
from depscreen.v1 import screening_pb2 as pb
from depscreen.v1 import screening_pb2_grpc

from .conftest import FIXTURES
from .netns import PEER_NETWORK, NamespaceLoop, NetworkNamespace, namespaces_available

FLAGS = ("--device", "cpu", "--asr", "none", "--max-speed", "0", "--reject-backlog", "1000")
"""No ASR (its cost adds nothing here) and no pacing: the tests send audio as fast as the server takes it."""
CHUNK_MS = 100
BYTES_PER_MS = 32
ESTIMATE_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def pcm() -> bytes:
    """The sample interview's audio, 16 kHz mono s16le."""
    return decode_audio_file(sample_path()).astype(np.int16).tobytes()


def start_message(token: str = "", received: int | None = None) -> pb.ClientMessage:
    start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1), resume_token=token)
    if received is not None:
        start.received_sentences = received
    return pb.ClientMessage(start=start)


@dataclass
class Call:
    """One StreamSession call driven by hand: `open()`, `send()` audio, wait for `sentences`, then `end()` or
    `cancel()`. A reader task collects every reply and the final status."""

    target: str
    updates: list[pb.SentenceUpdate] = field(default_factory=list)
    accepted: pb.SessionAccepted | None = None
    summary: pb.SessionSummary | None = None
    status: grpc.StatusCode | None = None
    details: str = ""

    async def open(self, start: pb.ClientMessage) -> pb.SessionAccepted:
        self._channel = grpc.aio.insecure_channel(self.target)
        self.call = screening_pb2_grpc.ScreeningStub(self._channel).StreamSession()
        self._first = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())
        await self.call.write(start)
        return await self._first

    async def _read(self) -> None:
        try:
            while (reply := await self.call.read()) is not grpc.aio.EOF:
                kind = reply.WhichOneof("kind")
                if kind == "accepted":
                    self.accepted = reply.accepted
                    self._first.set_result(reply.accepted)
                elif kind == "sentence":
                    self.updates.append(reply.sentence)
                elif kind == "summary":
                    self.summary = reply.summary
            self.status = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            self.status, self.details = error.code(), error.details() or ""
        except asyncio.CancelledError:
            self.status = grpc.StatusCode.CANCELLED
        if not self._first.done():
            self._first.set_exception(RuntimeError(f"no `accepted`: {self.status} {self.details}"))

    async def send(self, pcm: bytes, from_ms: int, to_ms: int | None = None, pause_s: float = 0.0) -> None:
        """The audio from `from_ms` to `to_ms` (the end when None), in 100 ms chunks, `pause_s` apart."""
        end = len(pcm) if to_ms is None else min(len(pcm), to_ms * BYTES_PER_MS)
        for offset in range(from_ms * BYTES_PER_MS, end, CHUNK_MS * BYTES_PER_MS):
            if self.status is not None:
                return
            await self.call.write(pb.ClientMessage(audio=pb.AudioChunk(data=pcm[offset : min(end, offset + 3200)])))
            await asyncio.sleep(pause_s)

    async def sentences(self, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.updates) < count and self.status is None:
            assert time.monotonic() < deadline, f"only {len(self.updates)} of {count} sentences arrived"
            await asyncio.sleep(0.02)

    async def end(self, timeout_s: float = 120.0) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self.call.write(pb.ClientMessage(end=pb.SessionEnd()))
            await self.call.done_writing()
        await self.finished(timeout_s)

    async def finished(self, timeout_s: float = 120.0) -> None:
        await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        await self._channel.close()

    async def cancel(self) -> None:
        self.call.cancel()
        await self.finished()


async def interview(target: str, pcm: bytes) -> Call:
    """The whole sample, uninterrupted."""
    call = Call(target)
    await call.open(start_message())
    await call.send(pcm, 0)
    await call.end()
    assert call.status == grpc.StatusCode.OK, call.details
    return call


def assert_matches(reference: list[pb.SentenceUpdate], updates: list[pb.SentenceUpdate]) -> float:
    """Every index once, in order, with estimates within the tolerance; the largest estimate difference."""
    assert [u.index for u in updates] == list(range(len(reference))), "every index exactly once"
    worst = 0.0
    for old, new in zip(reference, updates, strict=True):
        worst = max(worst, abs(old.estimate.probability - new.estimate.probability))
        worst = max(worst, abs(old.estimate.evidence - new.estimate.evidence))
    assert worst <= ESTIMATE_TOLERANCE
    return worst


def report(name: str, **numbers: object) -> None:
    """Measured figures, printed for the run's log (pytest -s) and the closing note."""
    print(f"\n[fault] {name}: " + ", ".join(f"{key}={value}" for key, value in numbers.items()))


# ---------------------------------------------------------------------------------------------------------
# Units: the SQLite store's errors, the stall clock, keepalive options, kept updates
# ---------------------------------------------------------------------------------------------------------


def a_record(n: int = 1) -> StoreRecord:
    return StoreRecord(f"{n:032x}", f"interview-{n}", b"n" * 32, b"payload" * 100)


def test_a_locked_sqlite_store_fails_with_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.db")
    store.save(a_record(), 3600)
    holder = sqlite3.connect(tmp_path / "sessions.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        began = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.save(a_record(2), 3600)
        assert time.monotonic() - began < SQLITE_BUSY_TIMEOUT_S + 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.save(a_record(2), 3600)
    assert store.load(a_record(2).record_id, 3600) is not None, "the store works again once the lock is gone"


def test_a_corrupt_sqlite_file_fails_with_store_error(tmp_path: Path) -> None:
    """A file whose schema page is whole but whose data pages are garbage opens, then fails on every use."""
    path = tmp_path / "sessions.db"
    store = SqliteStore(path)
    for n in range(50):
        store.save(a_record(n), 3600)
    store.close()
    with path.open("r+b") as file:
        file.seek(4096)
        file.write(os.urandom(path.stat().st_size - 4096))
    store = SqliteStore(path)
    with pytest.raises(StoreError, match=r"sqlite:///.*malformed.*check the disk"):
        store.load(a_record(3).record_id, 3600)
    with pytest.raises(StoreError, match="malformed"):
        store.save(a_record(99), 3600)


def test_the_stall_clock_counts_only_time_the_server_was_running() -> None:
    silence = Silence(timeout_s=3.0)
    silence.credit(1.0, 1.01)
    assert silence.silent_s == pytest.approx(1.01) and not silence.stalled
    silence.credit(1.0, 40.0)  # the process was stopped for 40 s: only the slice it asked for counts
    assert silence.silent_s == pytest.approx(2.01) and not silence.stalled
    silence.credit(1.0, 40.0)
    assert silence.silent_s > 3 and not silence.stalled, "a late wake is re-checked first"
    assert silence.next_wait_s() == SLICE_S, "by a full slice"
    silence.credit(SLICE_S, SLICE_S)
    assert silence.stalled
    silence.heard()
    assert silence.silent_s == 0 and not silence.stalled
    assert not Silence(timeout_s=0).stalled and Silence(timeout_s=0).next_wait_s() is None


def test_a_wait_that_wakes_late_reads_the_waiting_message_instead_of_stalling() -> None:
    """A clock that jumps 100 s during the first wait (a SIGSTOP); the message that arrived meanwhile wins."""

    class Stopped(SystemClock):
        def __init__(self) -> None:
            self.time = 0.0

        def now(self) -> float:
            self.time += 50.0  # every reading is 50 s after the last: each wait "took" 100 s
            return self.time

    async def scenario() -> object:
        wait = MessageWait(Silence(timeout_s=0.3), asyncio.Event(), Stopped())
        message: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.8, message.set_result, "audio")
        return await wait.next(message, lambda: None)

    assert asyncio.run(scenario()) == "audio"


def test_keepalive_settings_become_grpc_server_options() -> None:
    options = dict(grpc_options(ServerSettings()))
    assert options["grpc.keepalive_time_ms"] == 15_000 and options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] == 5_000, "clients pinging every 10 s pass"
    assert options["grpc.http2.max_pings_without_data"] == 0, "the server keeps pinging an idle stream"
    with pytest.raises(ValueError, match="keepalive_timeout_s"):
        ServerSettings(keepalive_timeout_s=0)
    with pytest.raises(ValueError, match="shutdown_grace_s"):
        ServerSettings(shutdown_grace_s=-1)


def test_a_snapshot_keeps_updates_without_their_transcripts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.db")
    resumer = Resumer(store, store.server_key(), ttl_s=3600)
    ticket = resumer.new_ticket("interview-1")
    update = pb.SentenceUpdate(index=4, start_ms=10, end_ms=900, transcript="the giraffe", transcript_source="asr")
    update.estimate.probability = 0.25
    resumer.save(ticket, SessionSnapshot("interview-1", next_index=5, updates=(kept_update(update),)))
    assert b"giraffe" not in store.load(ticket.record_id, 3600).payload
    (kept,) = resumer.restore(resumer.token(ticket))[1].updates
    assert (kept.index, kept.end_ms, kept.estimate.probability, kept.transcript) == (4, 900, 0.25, "")


# ---------------------------------------------------------------------------------------------------------
# Real servers
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for these tests (root only), so that a test can fill the store's disk."""
    mount = tmp_path_factory.mktemp("tmpfs")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def store_server(tmpfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server whose SQLite store lives on the tmpfs, pinging its clients every second (1 s to answer)."""
    log = (tmp_path_factory.mktemp("store-server") / "server.log").open("w")
    flags = (*FLAGS, "--state-store", f"sqlite://{tmpfs}/sessions.db", "--keepalive-time-s", "1")
    server = start_local_server(*flags, "--keepalive-timeout-s", "1", output=log)
    yield server
    server.stop()
    log.close()


@pytest.fixture(scope="module")
def reference(store_server: LocalServer, pcm: bytes) -> list[pb.SentenceUpdate]:
    """The sample's sentence updates, uninterrupted."""
    updates = asyncio.run(interview(store_server.grpc_target, pcm)).updates
    assert len(updates) >= 8, "the sample must have enough sentences for these tests"
    return updates


def until_ms(reference: list[pb.SentenceUpdate], sentences: int) -> int:
    """Media time by which the first `sentences` sentences have closed (their pause heard)."""
    return reference[sentences - 1].end_ms + 1000


def fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem is full."""
    filler = directory / "filler"
    with filler.open("wb") as file:
        with contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        with contextlib.suppress(OSError):
            os.fsync(file.fileno())
    return filler


def counter(server: LocalServer, code: str) -> float:
    return read_counter(server.metrics(), f'depscreen_errors_total{{code="{code}"}}')


async def wait_idle(server: LocalServer, timeout_s: float = 30.0) -> float:
    """Seconds until the server holds no session."""
    began = time.monotonic()
    while read_counter(server.metrics(), "depscreen_sessions_active") > 0:
        assert time.monotonic() - began < timeout_s, "the server still holds a session"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def test_a_full_disk_fails_snapshots_the_interview_goes_on_and_the_next_snapshot_catches_up(
    store_server: LocalServer, tmpfs: Path, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    async def run() -> tuple[Call, Call, float]:
        call = Call(store_server.grpc_target)
        assert (await call.open(start_message())).resume_token
        await call.send(pcm, 0, until_ms(reference, 2))
        await call.sentences(2)
        failed = counter(store_server, "checkpoint")
        filler = fill(tmpfs)
        try:
            await call.send(pcm, until_ms(reference, 2), until_ms(reference, 4))
            await call.sentences(4)
            failures = counter(store_server, "checkpoint") - failed
        finally:
            filler.unlink()
        await call.send(pcm, until_ms(reference, 4), until_ms(reference, 6))
        await call.sentences(6)
        await call.cancel()  # the stream breaks: the resume must find the snapshot after sentence 6
        await wait_idle(store_server)
        resumed = Call(store_server.grpc_target)
        accepted = await resumed.open(start_message(call.accepted.resume_token, received=len(call.updates)))
        assert accepted.next_sentence_index == len(call.updates) == 6, "the snapshot caught up"
        await resumed.send(pcm, accepted.replay_from_sample // 16)
        await resumed.end()
        return call, resumed, failures

    call, resumed, failures = asyncio.run(run())
    assert failures >= 1, "the snapshots on the full disk failed and were counted"
    assert resumed.status == grpc.StatusCode.OK and resumed.summary is not None
    worst = assert_matches(reference, call.updates + resumed.updates)
    report("full disk", failed_snapshots=failures, sentences=len(reference), missing=0, max_estimate_diff=worst)


def test_a_locked_store_opens_new_sessions_without_resume_and_says_so(
    store_server: LocalServer, tmpfs: Path, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    holder = sqlite3.connect(tmpfs / "sessions.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for the whole interview
    try:
        failed = counter(store_server, "checkpoint")
        call = asyncio.run(interview(store_server.grpc_target, pcm))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not call.accepted.resume_token and NOT_RESUMABLE_STORE_DOWN in call.accepted.notices
    assert call.summary is not None
    assert counter(store_server, "checkpoint") - failed == 1, "the first snapshot failed; no more were tried"
    worst = assert_matches(reference, call.updates)
    report("locked store", sentences=len(call.updates), missing=0, max_estimate_diff=worst)
    again = asyncio.run(interview(store_server.grpc_target, pcm))
    assert again.accepted.resume_token, "resumable again once the store answers"
    assert NOT_RESUMABLE_STORE_DOWN not in again.accepted.notices


def test_a_broken_stream_loses_no_update_and_drops_its_open_sentence(
    store_server: LocalServer, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    """The call is cancelled mid-interview; the client resumes saying it holds only 2 updates (fewer than the
    server sent): the server re-sends the rest from its snapshot, then the sentences of the re-sent audio."""
    held = 2

    async def run() -> tuple[Call, Call]:
        cancelled = counter(store_server, "CANCELLED")
        call = Call(store_server.grpc_target)
        await call.open(start_message())
        sender = asyncio.create_task(call.send(pcm, 0, until_ms(reference, 6)))
        await call.sentences(4)
        await call.cancel()  # mid-sentence, while audio is still going out
        sender.cancel()
        await wait_idle(store_server)
        assert counter(store_server, "CANCELLED") - cancelled == 1, "the break is counted"
        resumed = Call(store_server.grpc_target)
        accepted = await resumed.open(start_message(call.accepted.resume_token, received=held))
        assert accepted.next_sentence_index >= len(call.updates) > held
        await resumed.sentences(accepted.next_sentence_index - held)
        assert [u.index for u in resumed.updates] == list(range(held, accepted.next_sentence_index))
        await resumed.send(pcm, accepted.replay_from_sample // 16)
        await resumed.end()
        return call, resumed

    call, resumed = asyncio.run(run())
    assert resumed.status == grpc.StatusCode.OK and resumed.summary is not None
    resent = len(call.updates) - held
    for original, again in zip(call.updates[held:], resumed.updates, strict=False):
        assert again == kept_update(original), "a re-sent update is the original, less its transcript"
    worst = assert_matches(reference, call.updates[:held] + resumed.updates)
    report(
        "broken stream",
        received_before_break=len(call.updates),
        resent=f">={resent}",
        sentences=len(reference),
        missing=0,
        max_estimate_diff=worst,
    )


class Relay:
    """A TCP relay on loopback that can freeze: it stops moving bytes both ways without closing anything, as a
    black-holed link does."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.frozen = asyncio.Event()
        self._closing = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.frozen.is_set():
                await self._closing.wait()  # hold the bytes until the relay closes; read no more
                return
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        self._closing.set()
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()


def test_a_frozen_link_is_noticed_by_the_servers_keepalive(
    store_server: LocalServer, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    async def run() -> float:
        relay = Relay(store_server.grpc_port)
        port = await relay.start()
        cancelled = counter(store_server, "CANCELLED")
        call = Call(f"127.0.0.1:{port}")
        try:
            await call.open(start_message())
            await call.send(pcm, 0, until_ms(reference, 1))
            await call.sentences(1)
            relay.frozen.set()
            detected = await wait_idle(store_server)
            assert counter(store_server, "CANCELLED") - cancelled == 1, "the server ended the stream as broken"
            return detected
        finally:
            call.call.cancel()
            await relay.close()

    detected = asyncio.run(run())
    assert detected < 1 + 1 + 2, "within keepalive time + timeout (1 s each here), with room"
    report("frozen link", keepalive="1 s + 1 s", detected_s=round(detected, 2))


@pytest.fixture(scope="module")
def stall_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A resumable server with a 3 s stall timeout."""
    directory = tmp_path_factory.mktemp("stall-server")
    log = (directory / "server.log").open("w")
    flags = (*FLAGS, "--state-store", f"sqlite://{directory}/sessions.db", "--stall-timeout-s", "3")
    server = start_local_server(*flags, output=log)
    yield server
    server.stop()
    log.close()


def test_a_stream_that_never_sends_start_is_ended_after_the_stall_timeout(stall_server: LocalServer) -> None:
    async def run() -> tuple[Call, float]:
        ended = counter(stall_server, "DEADLINE_EXCEEDED")
        call = Call(stall_server.grpc_target)
        call._channel = grpc.aio.insecure_channel(call.target)
        call.call = screening_pb2_grpc.ScreeningStub(call._channel).StreamSession()
        call._first = asyncio.get_running_loop().create_future()
        began = time.monotonic()
        call._reader = asyncio.create_task(call._read())
        await call.finished(30)
        assert counter(stall_server, "DEADLINE_EXCEEDED") - ended == 1, "counted"
        return call, time.monotonic() - began

    call, took = asyncio.run(run())
    assert call.status == grpc.StatusCode.DEADLINE_EXCEEDED and "no `start`: no message for 3 s" in call.details
    assert 3 <= took < 10
    report("no start", stall_timeout_s=3, ended_after_s=round(took, 2))


def test_a_server_woken_from_sigstop_reads_what_waited_instead_of_ending_the_session(
    stall_server: LocalServer, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    """Stopped for 8 s (over twice the 3 s stall timeout) while the client keeps sending at 4x real time (so the
    server was waiting for its next message, stall timer armed), then continued: the interview completes on the
    same stream."""

    async def run() -> Call:
        call = Call(stall_server.grpc_target)
        await call.open(start_message())
        await call.send(pcm, 0, until_ms(reference, 2))
        await call.sentences(2)
        sender = asyncio.create_task(call.send(pcm, until_ms(reference, 2), pause_s=0.025))
        await asyncio.sleep(0.2)
        stall_server.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(8)
        finally:
            stall_server.process.send_signal(signal.SIGCONT)
        await sender
        await call.end()
        return call

    call = asyncio.run(run())
    assert call.status == grpc.StatusCode.OK, f"{call.status}: {call.details}"
    assert call.summary is not None
    worst = assert_matches(reference, call.updates)
    report("SIGSTOP 8 s", stall_timeout_s=3, sentences=len(call.updates), missing=0, max_estimate_diff=worst)


def test_a_stalled_resumable_session_is_kept_for_resuming(
    stall_server: LocalServer, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    async def run() -> tuple[Call, Call, float]:
        call = Call(stall_server.grpc_target)
        await call.open(start_message())
        await call.send(pcm, 0, until_ms(reference, 3) - 1500)  # stops mid-sentence
        await call.sentences(2)
        began = time.monotonic()
        await call.finished(30)
        took = time.monotonic() - began
        resumed = Call(stall_server.grpc_target)
        accepted = await resumed.open(start_message(call.accepted.resume_token, received=len(call.updates)))
        await resumed.send(pcm, accepted.replay_from_sample // 16)
        await resumed.end()
        return call, resumed, took

    call, resumed, took = asyncio.run(run())
    assert call.status == grpc.StatusCode.DEADLINE_EXCEEDED and "resume it" in call.details
    assert call.summary is None and len(call.updates) == 2, "the open sentence was neither cut nor scored"
    assert resumed.status == grpc.StatusCode.OK and resumed.summary is not None
    worst = assert_matches(reference, call.updates + resumed.updates)
    report("stall", stall_timeout_s=3, ended_after_s=round(took, 2), missing=0, max_estimate_diff=worst)


async def watch_health(target: str, seen: list[tuple[float, int]]) -> None:
    """Record (time, status) of every health update of the Screening service until the watch ends."""
    async with grpc.aio.insecure_channel(target) as channel:
        with contextlib.suppress(grpc.aio.AioRpcError):
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            async for update in watch:
                seen.append((time.monotonic(), update.status))


@pytest.mark.e2e
def test_sigterm_ends_live_streams_for_resuming_and_exits_within_the_grace(
    tmp_path: Path, pcm: bytes, reference: list[pb.SentenceUpdate]
) -> None:
    """SIGTERM with a health watcher and a live resumable stream: NOT_SERVING reaches the watcher before the
    server closes its listener, the stream ends with UNAVAILABLE "... resume ...", the process exits 0 within the
    grace, and the interview resumes on a server restarted on the same store with no sentence missing."""
    grace_s = 20
    flags = (*FLAGS, "--state-store", f"sqlite://{tmp_path}/sessions.db", "--shutdown-grace-s", str(grace_s))
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = start_local_server(*flags, output=log)
        restarted = None
        try:

            async def run() -> tuple[Call, Call, dict[str, float]]:
                seen: list[tuple[float, int]] = []
                watcher = asyncio.create_task(watch_health(server.grpc_target, seen))
                call = Call(server.grpc_target)
                await call.open(start_message())
                sender = asyncio.create_task(call.send(pcm, 0))
                await call.sentences(3)
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                await call.finished(grace_s)
                ended = time.monotonic()
                sender.cancel()
                code = await asyncio.to_thread(server.process.wait, grace_s + 10)
                exited = time.monotonic()
                assert code == 0
                await asyncio.wait_for(watcher, 10)
                assert [status for _, status in seen] == [
                    health_pb2.HealthCheckResponse.SERVING,
                    health_pb2.HealthCheckResponse.NOT_SERVING,
                ]
                assert seen[1][0] < exited
                nonlocal restarted
                restarted = await asyncio.to_thread(start_local_server, *flags, output=log)
                resumed = Call(restarted.grpc_target)
                accepted = await resumed.open(start_message(call.accepted.resume_token, received=len(call.updates)))
                await resumed.send(pcm, accepted.replay_from_sample // 16)
                await resumed.end()
                times = {"not_serving": seen[1][0], "stream_ended": ended, "exited": exited}
                return call, resumed, {name: round(t - signalled, 3) for name, t in times.items()}

            call, resumed, after_s = asyncio.run(run())
        finally:
            for process in (server, restarted):
                if process is not None and process.process.poll() is None:
                    process.stop()
    assert call.status == grpc.StatusCode.UNAVAILABLE and "resume it" in call.details, call.details
    assert after_s["not_serving"] < after_s["exited"] < grace_s
    assert "stopped" in log_path.read_text() and "SIGTERM received" in log_path.read_text()
    worst = assert_matches(reference, call.updates + resumed.updates)
    report(
        "SIGTERM",
        grace_s=grace_s,
        **{f"{k}_after_s": v for k, v in after_s.items()},
        missing=0,
        max_estimate_diff=worst,
    )


def test_a_shutdown_sends_webrtc_sessions_their_summary() -> None:
    """A WHIP session live when the server shuts down gets its last sentences and summary on the data channel."""
    unavailable = namespaces_available()
    if unavailable is not None:
        pytest.skip(unavailable)
    torch_threads = torch.get_num_threads()
    settings = ServerSettings(
        grpc_port=0, http_port=0, device="cpu", asr="none", shutdown_grace_s=20, webrtc_allow_networks=PEER_NETWORK
    )
    with NetworkNamespace() as namespace, NamespaceLoop(namespace) as loop:
        server = Server(settings)
        loop.call(server.start())

        async def run() -> tuple[list[pb.ServerMessage], float]:
            messages: list[pb.ServerMessage] = []
            shutdown: asyncio.Task | None = None
            url = f"http://127.0.0.1:{server.http_port}/whip"
            async for message in WhipClient(url).stream_file(FIXTURES / "jfk.flac", video=False):
                messages.append(message)
                if message.WhichOneof("kind") == "sentence" and shutdown is None:
                    began = time.monotonic()
                    shutdown = asyncio.create_task(server.shutdown())
            assert shutdown is not None, "no sentence came before the summary"
            await shutdown
            return messages, time.monotonic() - began

        try:
            messages, took = loop.call(run())
        finally:
            torch.set_num_threads(torch_threads)
    kinds = [message.WhichOneof("kind") for message in messages]
    assert kinds[0] == "accepted" and kinds[-1] == "summary"
    assert messages[-1].summary.sentences == kinds.count("sentence") >= 1
    assert took < settings.shutdown_grace_s
    report("shutdown with a WebRTC session", sentences=kinds.count("sentence"), shutdown_s=round(took, 2))
