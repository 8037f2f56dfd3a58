"""Fencing: a stream that wakes up after its session was resumed elsewhere never overwrites the newer snapshot.

Every resume takes the next generation of the session's record; a snapshot write or delete names the
generation its stream holds and happens only if the record still has it (compare-and-set in SQLite and in
Redis). Here: writers racing on both stores (the stale ones refused, the record left as the newest wrote it),
records of the release before fencing, and a real server whose live stream is resumed by another replica: the
stale stream ends with ABORTED at its next sentence, before sending it, and the record stays the replica's.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from depscreen.chaosbench import SERVER_FLAGS
from depscreen.clients.session import ScreeningClient
from depscreen.localserver import read_counter, start_local_server
from depscreen.streamer.resume import Resumer, SessionSnapshot, decode
from depscreen.streamer.state_store import (
    FencedError,
    RedisStore,
    SqliteStore,
    StateStore,
    StoreRecord,
    add_column,
)
from depscreen.v1 import screening_pb2 as pb

from .test_resume import jfk_pcm, redis_url, store_dir  # noqa: F401 (fixtures)

RACERS = 8
"""Streams that try to resume one session at the same moment."""


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened = (
        SqliteStore(tmp_path / "sessions.db")
        if request.param == "sqlite"
        else RedisStore(request.getfixturevalue("redis_url"))
    )
    yield opened
    opened.close()


def a_record(generation: int, payload: bytes, record_id: str = "ab" * 16) -> StoreRecord:
    return StoreRecord(record_id, "interview-1", b"n" * 32, payload, generation=generation)


def test_a_stale_writer_is_refused_and_writes_nothing(store: StateStore) -> None:
    assert store.save(a_record(0, b"first"), 3600) == 1, "a new record is created at generation 1"
    with pytest.raises(FencedError, match="exists already"):
        store.save(a_record(0, b"again"), 3600)
    assert store.advance("ab" * 16, 1) == 2, "a resume takes the next generation"
    assert store.save(a_record(2, b"resumed"), 3600) == 2
    for stale in (lambda: store.save(a_record(1, b"stale"), 3600), lambda: store.delete("ab" * 16, 1)):
        with pytest.raises(
            FencedError, match=re.escape("resumed on another stream (generation 2; this stream holds 1)")
        ):
            stale()
    with pytest.raises(FencedError):
        store.advance("ab" * 16, 1)
    record = store.load("ab" * 16, 3600)
    assert record is not None and (record.payload, record.generation) == (b"resumed", 2)
    store.delete("ab" * 16, 2)
    assert store.load("ab" * 16, 3600) is None
    with pytest.raises(FencedError, match="gone"):
        store.save(a_record(2, b"after the end"), 3600)
    assert store.load("ab" * 16, 3600) is None, "a stale write does not bring an ended session back"


def test_of_resumes_racing_one_wins_and_the_stale_writers_are_refused(store: StateStore) -> None:
    """`RACERS` threads each load the record and try to resume it at once (as replicas would): exactly one takes
    the next generation; then every one writes, and only the winner's snapshot is kept."""
    store.save(a_record(0, b"before"), 3600)
    barrier = threading.Barrier(RACERS)
    taken: dict[int, int] = {}

    def resume(racer: int) -> None:
        record = store.load("ab" * 16, 3600)
        assert record is not None
        barrier.wait()
        try:
            taken[racer] = store.advance(record.record_id, record.generation)
        except FencedError:
            taken[racer] = record.generation  # it goes on as a stale stream would

    threads = [threading.Thread(target=resume, args=(racer,)) for racer in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [racer for racer, generation in taken.items() if generation == 2]
    assert len(winners) == 1, taken
    refused = 0
    for racer, generation in taken.items():
        try:
            store.save(a_record(generation, f"racer {racer}".encode()), 3600)
        except FencedError:
            refused += 1
    assert refused == RACERS - 1
    record = store.load("ab" * 16, 3600)
    assert record is not None and record.payload == f"racer {winners[0]}".encode() and record.generation == 2


def test_a_sqlite_store_of_the_release_before_fencing_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE sessions (record_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, nonce BLOB NOT NULL, "
            "updated_at REAL NOT NULL, payload BLOB NOT NULL)"
        )
        db.execute(
            "INSERT INTO sessions VALUES (?, 'interview-1', ?, strftime('%s', 'now'), ?)", ("ab" * 16, b"n", b"old")
        )
    db.close()
    store = SqliteStore(path)
    record = store.load("ab" * 16, 3600)
    assert record is not None and (record.payload, record.generation) == (b"old", 1)
    assert store.advance("ab" * 16, 1) == 2
    with sqlite3.connect(path) as db:
        add_column(
            db, "generation INTEGER NOT NULL DEFAULT 1"
        )  # another server upgrading the same store at the same moment: no error
    db.close()


def test_a_redis_record_of_the_release_before_fencing_counts_as_generation_1(redis_url: str) -> None:  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_url)
    key = "depscreen:session:" + "cd" * 16
    client.hset(key, mapping={"session_id": "interview-2", "nonce": b"n", "updated_at": "1.0", "payload": b"old"})
    store = RedisStore(redis_url)
    record = store.load("cd" * 16, 3600)
    assert record is not None and record.generation == 1
    with pytest.raises(FencedError):
        store.save(a_record(2, b"stale", "cd" * 16), 3600)
    assert store.advance("cd" * 16, 1) == 2
    assert store.save(a_record(2, b"new", "cd" * 16), 3600) == 2


def test_a_live_stream_resumed_by_another_replica_stops_without_writing(store_dir: Path) -> None:  # noqa: F811
    """A server streams a session; another replica (here: the same store opened in the test, doing what a
    replica's resume does) resumes it. The first stream, still live, is stale: at its next sentence it ends with
    ABORTED before sending it, and the store keeps the replica's snapshot byte for byte."""
    path = store_dir / "fencing.db"
    pcm = jfk_pcm()
    half = len(pcm) // 2 // 2 * 2
    with (store_dir / "fencing.log").open("w") as log:
        server = start_local_server(*SERVER_FLAGS, "--state-store", f"sqlite://{path}", output=log)
    store = SqliteStore(path)
    resumer = Resumer(store, store.server_key(), ttl_s=3600)
    first_sentence, resumed_elsewhere = asyncio.Event(), asyncio.Event()

    replies: list[pb.ServerMessage] = []

    async def outgoing() -> AsyncIterator[pb.ClientMessage]:
        yield pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
        for offset in range(0, half, 3_200):
            yield pb.ClientMessage(audio=pb.AudioChunk(data=pcm[offset : offset + 3_200]))
        await resumed_elsewhere.wait()
        for offset in range(half, len(pcm), 3_200):
            yield pb.ClientMessage(audio=pb.AudioChunk(data=pcm[offset : offset + 3_200]))
        yield pb.ClientMessage(end=pb.SessionEnd())

    async def stale_stream() -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for reply in ScreeningClient(server.grpc_target).stream_messages(outgoing()):
                replies.append(reply)
                if reply.WhichOneof("kind") == "sentence":
                    first_sentence.set()
        return ended.value

    async def scenario() -> tuple[grpc.aio.AioRpcError, SessionSnapshot, bytes]:
        streaming = asyncio.ensure_future(stale_stream())
        await asyncio.wait_for(first_sentence.wait(), 60)
        ticket, snapshot = await asyncio.to_thread(resumer.restore, replies[0].accepted.resume_token)
        ticket = await asyncio.to_thread(resumer.save, ticket, snapshot)  # the replica's first write
        record = store.load(ticket.record_id, 3600)
        assert record is not None
        resumed_elsewhere.set()
        return await asyncio.wait_for(streaming, 60), snapshot, record.payload

    try:
        ended, snapshot, payload = asyncio.run(scenario())
        aborted = read_counter(server.metrics(), 'depscreen_errors_total{code="ABORTED"}')
    finally:
        server.stop()
    assert ended.code() == grpc.StatusCode.ABORTED and "stale" in ended.details()
    sent = [r.sentence.index for r in replies if r.WhichOneof("kind") == "sentence"]
    assert sent and max(sent) < snapshot.next_index, "the stale stream sent no sentence the record lacks"
    record = store.load(replies[0].accepted.resume_token.split(".")[0], 3600)
    assert record is not None and record.payload == payload and record.generation == 2
    assert decode(record.session_id, record.payload).next_index == snapshot.next_index
    assert aborted == 1
