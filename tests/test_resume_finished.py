"""A break after `end` loses nothing: a finished session keeps its summary for a while, and a resume takes it.

The stream is cut on the client's side at the moment the summary arrives (as a kill or a cut link after `end`
would lose it), against real servers: one killed with SIGKILL and restarted on its SQLite store, and two
replicas sharing Redis. The resumable client reconnects with its token and gets the same summary as the
uninterrupted run, each sentence once; the record is then deleted. The stores keep a finished record only for
its own retention, and it holds no audio or text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from pathlib import Path

import grpc
import pytest

from depscreen.chaosbench import SERVER_FLAGS as FLAGS
from depscreen.chaosbench import Seen, mismatches
from depscreen.clients import resumable
from depscreen.clients.errors import StatusError
from depscreen.clients.session import ScreeningClient
from depscreen.localserver import LocalServer, free_port, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.resume import Resumer, SessionSnapshot, decode, encode, kept_update
from depscreen.streamer.state_store import FencedError, SqliteStore, StateStore, StoreRecord
from depscreen.v1 import screening_pb2 as pb

from .test_resume import redis_url, store_dir  # noqa: F401 (fixtures)
from .test_resume_fencing import store  # noqa: F401 (fixture: each test on SQLite and on Redis)


@pytest.fixture(scope="module")
def uninterrupted(store_dir: Path) -> Iterator[tuple[list[Seen], pb.SessionSummary]]:  # noqa: F811
    """The sentences and summary of the sample streamed without a break."""
    with (store_dir / "finished-reference.log").open("w") as log:
        server = start_local_server(*FLAGS, "--state-store", f"sqlite://{store_dir}/finished-ref.db", output=log)
        try:
            yield asyncio.run(stream_sample(server.grpc_target))[:2]
        finally:
            server.stop()


async def stream_sample(target: str) -> tuple[list[Seen], pb.SessionSummary, list[pb.SessionAccepted]]:
    """Stream the bundled sample (4x real time) with resume on: its sentences, summary and `accepted`s."""
    sentences, summaries, accepted = [], [], []
    async for message in ScreeningClient(target).stream_file(sample_path(), speed=4):
        kind = message.WhichOneof("kind")
        if kind == "sentence":
            sentences.append(Seen.of(message.sentence))
        elif kind == "summary":
            summaries.append(message.summary)
        elif kind == "accepted":
            accepted.append(message.accepted)
    assert len(summaries) == 1, "one summary"
    return sentences, summaries[0], accepted


def cut_at_the_summary(monkeypatch: pytest.MonkeyPatch, fault: Callable[[], None]) -> list[pb.SessionSummary]:
    """Make the client's first stream break (UNAVAILABLE) when the summary reaches it, after `fault()` (which
    kills the server): the summary the server sent is lost, as with a kill or a cut link after `end`. The
    summaries dropped so are returned (filled in as they are dropped)."""
    real = resumable.call_replies
    dropped: list[pb.SessionSummary] = []

    async def replies(*args: object, **kwargs: object) -> AsyncIterator[pb.ServerMessage]:
        async with aclosing(real(*args, **kwargs)) as stream:
            async for reply in stream:
                if reply.WhichOneof("kind") == "summary" and not dropped:
                    dropped.append(reply.summary)
                    fault()
                    raise StatusError(grpc.StatusCode.UNAVAILABLE, "the link was cut after `end`")
                yield reply

    monkeypatch.setattr(resumable, "call_replies", replies)
    return dropped


def assert_summary_taken_on_resume(
    expected: tuple[list[Seen], pb.SessionSummary],
    result: tuple[list[Seen], pb.SessionSummary, list[pb.SessionAccepted]],
    dropped: list[pb.SessionSummary],
) -> None:
    sentences, summary, accepted = result
    assert len(dropped) == 1, "the first summary was lost"
    assert len(accepted) == 2 and accepted[1].resume_token == accepted[0].resume_token, "the session was resumed"
    assert not mismatches(expected[0], sentences), "each sentence once, as the uninterrupted run"
    assert summary == dropped[0], "the resume gives the summary the server had sent"
    assert summary.sentences == expected[1].sentences == len(sentences)
    assert abs(summary.estimate.probability - expected[1].estimate.probability) < 1e-5


@pytest.mark.e2e
def test_a_summary_lost_to_a_killed_server_is_taken_on_resume(
    uninterrupted: tuple[list[Seen], pb.SessionSummary],
    store_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = (*FLAGS, "--state-store", f"sqlite://{store_dir}/finished-crash.db")
    port, http_port = free_port(), free_port()
    log = (store_dir / "finished-crash.log").open("w")
    servers = [start_local_server(*flags, grpc_port=port, http_port=http_port, output=log)]

    def kill_and_restart() -> None:
        servers[0].process.kill()  # SIGKILL after `end`: the summary had gone out, the client never gets it
        servers[0].process.wait()
        servers.append(start_local_server(*flags, grpc_port=port, http_port=http_port, output=log))

    dropped = cut_at_the_summary(monkeypatch, kill_and_restart)
    try:
        result = asyncio.run(stream_sample(servers[0].grpc_target))
        assert_summary_taken_on_resume(uninterrupted, result, dropped)
        assert_token_refused(servers[-1], result[2][0].resume_token)
    finally:
        for server in servers:
            server.stop()
        log.close()


@pytest.mark.e2e
def test_a_summary_lost_with_a_replica_is_taken_from_redis_by_another(
    uninterrupted: tuple[list[Seen], pb.SessionSummary],
    redis_url: str,  # noqa: F811
    store_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = (store_dir / "finished-replicas.log").open("w")
    replicas = [start_local_server(*FLAGS, "--state-store", redis_url, output=log) for _ in range(2)]
    target = "ipv4:" + ",".join(
        f"127.0.0.1:{r.grpc_port}" for r in replicas
    )  # pick_first: the second once the first is gone

    def kill() -> None:
        replicas[0].process.kill()
        replicas[0].process.wait()

    dropped = cut_at_the_summary(monkeypatch, kill)
    try:
        result = asyncio.run(stream_sample(target))
        assert_summary_taken_on_resume(uninterrupted, result, dropped)
        assert_token_refused(replicas[1], result[2][0].resume_token)
    finally:
        for replica in replicas:
            replica.stop()
        log.close()


def assert_token_refused(server: LocalServer, token: str) -> None:
    """Once its summary went out again, the finished session's record is gone: its token opens nothing."""

    async def outgoing() -> AsyncIterator[pb.ClientMessage]:
        start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1), resume_token=token)
        yield pb.ClientMessage(start=start)
        yield pb.ClientMessage(end=pb.SessionEnd())

    async def resume() -> None:
        async for _ in ScreeningClient(server.grpc_target).stream_messages(outgoing()):
            pass

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(resume())
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# ---------------------------------------------------------------------------------------------------------
# The stores


def test_a_finished_record_expires_after_its_own_retention(store: StateStore) -> None:  # noqa: F811
    """A finished record lives `finished_retention_s` (1 s here), however long the TTL of live records; a live
    record beside it is kept."""
    store.save(StoreRecord("ab" * 16, "finished", b"n" * 32, b"live"), 3600)
    store.save(StoreRecord("cd" * 16, "live", b"n" * 32, b"live"), 3600)
    store.finish(StoreRecord("ab" * 16, "finished", b"n" * 32, b"summary", generation=1), 1.0)
    record = store.load("ab" * 16, 3600)
    assert record is not None and record.payload == b"summary"
    time.sleep(2.2)  # Redis expires to the second
    store.save(StoreRecord("cd" * 16, "live", b"n" * 32, b"again", generation=1), 3600)  # SQLite cleans up here
    assert store.load("ab" * 16, 3600) is None
    live = store.load("cd" * 16, 3600)
    assert live is not None and live.payload == b"again"


def test_a_stale_stream_cannot_write_a_finished_record(store: StateStore) -> None:  # noqa: F811
    store.save(StoreRecord("ef" * 16, "finished", b"n" * 32, b"live"), 3600)
    assert store.advance("ef" * 16, 1) == 2  # resumed on another stream
    with pytest.raises(FencedError, match="resumed on another stream"):
        store.finish(StoreRecord("ef" * 16, "finished", b"n" * 32, b"summary", generation=1), 300)
    record = store.load("ef" * 16, 3600)
    assert record is not None and record.payload == b"live"


def test_a_finished_record_holds_the_summary_and_no_text(tmp_path: Path) -> None:
    """The finished record is the last snapshot and the wire summary: counts and estimate, never text."""
    resumer = Resumer(SqliteStore(tmp_path / "s.db"), b"k" * 32, 3600, finished_retention_s=300)
    ticket = resumer.new_ticket("interview-1")
    update = pb.SentenceUpdate(index=0, start_ms=10, end_ms=900, transcript="I slept badly", transcript_source="asr")
    ticket = resumer.save(ticket, SessionSnapshot("interview-1", next_index=1, updates=(kept_update(update),)))
    summary = pb.SessionSummary(sentences=1, audio_seconds=1.5)
    resumer.finish(
        ticket, SessionSnapshot("interview-1", next_index=1, updates=(kept_update(update),), summary=summary)
    )
    record = resumer.store.load(ticket.record_id, 3600)
    assert record is not None and b"slept" not in record.payload
    assert decode("interview-1", record.payload).summary == summary
    restored_ticket, restored = resumer.restore(resumer.token(ticket))
    assert restored.summary == summary and restored_ticket.generation == ticket.generation + 1
    empty = pb.SessionSummary()  # a session ended before any sentence: its summary serializes to no bytes
    assert decode("interview-1", encode(SessionSnapshot("interview-1", summary=empty))).summary == empty
