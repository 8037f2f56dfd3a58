"""Runtime: the state pool and the micro-batcher give what one-session-at-a-time stepping gives."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from depscreen.engine.runtime.batcher import BatcherSettings, MicroBatcher
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.runtime.screener import RunningEstimate, Screener
from depscreen.engine.runtime.state_pool import PoolExhausted, StatePool
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions

from .conftest import with_speaker_normalisation

UNIT_STATS = FeatureStats.unit()


@pytest.fixture(scope="module", params=["shipped", "speaker-normalised"])
def screener(request: pytest.FixtureRequest) -> Screener:
    """The demo model as shipped, and with speaker normalisation (its state then carries audio moments)."""
    shipped = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    if request.param == "shipped":
        return shipped
    return Screener(with_speaker_normalisation(shipped.model), shipped.facts, shipped.device)


def sessions(count: int, seed: int) -> list:
    settings = SyntheticSettings(min_sentences=1, max_sentences=9)
    return [s.sentences for s in generate_sessions(count, UNIT_STATS, seed=seed, settings=settings)]


def alone(screener: Screener, sentences: list) -> list[RunningEstimate]:
    track = screener.new_session()
    return [screener.step(track, f) for f in sentences]


def assert_same(a: RunningEstimate, b: RunningEstimate) -> None:
    """Batched matmuls may round differently from single ones: equal to float32 precision."""
    assert a.probability == pytest.approx(b.probability, abs=1e-5)
    assert a.evidence == pytest.approx(b.evidence, abs=1e-9)
    assert a.symptoms == pytest.approx(b.symptoms, abs=1e-9)
    for x, y in zip(a.modalities, b.modalities, strict=True):
        assert (x.modality, x.available, x.quality) == (y.modality, y.available, y.quality)
        assert x.weight == pytest.approx(y.weight, abs=1e-5)
        assert x.probability == pytest.approx(y.probability, abs=1e-5)


async def run_batched(
    screener: Screener, interviews: list[list], capacity: int, settings: BatcherSettings, executor
) -> tuple[list[list[RunningEstimate]], list[int]]:
    pool = StatePool(screener.model, capacity)
    loop = asyncio.get_running_loop()
    batch_sizes: list[int] = []
    batcher = MicroBatcher(
        screener,
        pool,
        lambda fn, *args: loop.run_in_executor(executor, fn, *args),
        settings,
        on_batch=lambda size, wall, cpu: batch_sizes.append(size),
    )
    batcher.start()
    rng = random.Random(0)

    async def interview(sentences: list) -> list[RunningEstimate]:
        entry = batcher.attach()
        out = []
        for features in sentences:
            await asyncio.sleep(rng.random() * 0.002)
            out.append(await batcher.step(entry, features))
        batcher.detach(entry)
        return out

    try:
        results = await asyncio.gather(*(interview(s) for s in interviews))
    finally:
        await batcher.stop()
    assert pool.slots_used == 0, "every slot came back"
    return results, batch_sizes


def test_many_sessions_batched_equal_one_at_a_time(screener: Screener) -> None:
    interviews = sessions(24, seed=11)
    with ThreadPoolExecutor(2) as executor:
        batched, sizes = asyncio.run(
            run_batched(screener, interviews, 24, BatcherSettings(max_batch=8, max_wait_ms=3), executor)
        )
    assert max(sizes) > 1, "sentences of different sessions shared a batch"
    assert max(sizes) <= 8
    for sentences, estimates in zip(interviews, batched, strict=True):
        for a, b in zip(estimates, alone(screener, sentences), strict=True):
            assert_same(a, b)


def test_parked_sessions_come_back_transparently(screener: Screener) -> None:
    """Fewer slots than sessions: idle sessions are parked to make room and resume exactly."""
    interviews = sessions(12, seed=12)
    with ThreadPoolExecutor(2) as executor:
        batched, _ = asyncio.run(
            run_batched(screener, interviews, 3, BatcherSettings(max_batch=3, max_wait_ms=1), executor)
        )
    for sentences, estimates in zip(interviews, batched, strict=True):
        for a, b in zip(estimates, alone(screener, sentences), strict=True):
            assert_same(a, b)


def test_idle_sessions_park_after_the_timeout(screener: Screener) -> None:
    pool = StatePool(screener.model, 4)
    batcher = MicroBatcher(screener, pool, run=None, settings=BatcherSettings(max_batch=4, park_after_s=60))
    entry = batcher.attach()
    entry.slot = pool.acquire()
    assert batcher.park_idle(now=entry.last_step + 30) == 0
    assert batcher.park_idle(now=entry.last_step + 61) == 1
    assert entry.slot is None and entry.track.state is not None and pool.slots_used == 0


def test_pool_export_load_round_trip_and_exhaustion(screener: Screener) -> None:
    pool = StatePool(screener.model, 2)
    a, b = pool.acquire(), pool.acquire()
    with pytest.raises(PoolExhausted, match="all 2 state slots"):
        pool.acquire()
    state = pool.gather(torch.tensor([a]))
    state.modality_count += 3
    pool.scatter(torch.tensor([a]), state)
    saved = pool.export(a)
    pool.release(a)
    c = pool.acquire()
    assert float(pool.export(c).modality_count.sum()) == 0, "a new slot starts from the initial state"
    pool.load(c, saved)
    assert torch.equal(pool.export(c).modality_count, saved.modality_count)
    with pytest.raises(ValueError, match="not in use"):
        pool.release(a if a != c else b + 5)
    assert pool.bytes_per_slot < 64 * 1024, "a session's model state is small"


def test_session_state_rows_are_walked_whole(screener: Screener) -> None:
    """Row operations reach every tensor of the state, and a plain form that misses a part is refused."""
    batch = screener.model.initial_state(3).map(lambda t: torch.randn_like(t))
    rows = torch.tensor([2, 0])
    picked = batch.rows(rows)
    for whole, part in zip(batch.tensors(), picked.tensors(), strict=True):
        assert torch.equal(part, whole[rows])
    target = screener.model.initial_state(3)
    target.write_rows(rows, picked)
    for whole, written in zip(batch.tensors(), target.tensors(), strict=True):
        assert torch.equal(written[rows], whole[rows]) and not written[1].any()
    one = batch.cpu_row(1)
    assert all(t.shape[0] == 1 and t.device.type == "cpu" for t in one.tensors())
    plain = one.to_plain()
    assert all(torch.equal(a, b) for a, b in zip(type(one).from_plain(plain).tensors(), one.tensors(), strict=True))
    del plain["modality_count"]
    with pytest.raises(ValueError, match="expected the parts"):
        type(one).from_plain(plain)


def test_step_batch_leaves_the_callers_accounts_and_the_session_moves_itself_on(screener: Screener) -> None:
    """`step_batch` returns new accounts and leaves the ones given as they were; `step` moves its track on."""
    sentences = sessions(1, seed=3)[0]
    track = screener.new_session()
    given = track.account
    before = (given.usable_speech_s, given.symptom_sum.copy(), given.text_sentences)
    state = screener.model.initial_state(1)
    _, _, (after,) = screener.step_batch([sentences[0]], [given], state)
    assert (given.usable_speech_s, given.text_sentences) == before[::2] and (given.symptom_sum == before[1]).all()
    assert after is not given and after.usable_speech_s > given.usable_speech_s
    screener.step(track, sentences[0])
    assert track.account is not given and track.account.usable_speech_s == after.usable_speech_s
