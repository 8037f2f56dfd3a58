"""Chaos: live interviews broken at random moments leave no trace in what their clients receive.

One round of `depscreen bench soak` (`src/depscreen/chaosbench.py`) per state store, SQLite and a real redis-server:
three interviews (the GRID sample with video, far-field meeting speech, read speech) stream at once, first
uninterrupted, then through loopback relays while four seeded faults at random offsets, one of each kind, kill
and restart the server, cut one interview's connection, freeze the server (SIGSTOP) while a replica on the same
store takes over and wake it (SIGCONT) a few seconds later, and cut an interview twice (the second time while
it resumes); at the edges, one interview's first stream breaks between `start` and `accepted`, another's during
its first sentence. Every interview must be its uninterrupted run: the same indices, each once, the same
spans, estimates within 1e-5. The seed is printed on failure (rerun with DEPSCREEN_CHAOS_SEED=<seed>).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from depscreen.chaosbench import SERVER_FLAGS, chaos_round
from depscreen.sample import sample_path

from .conftest import FIXTURES, SHARED_DATA
from .test_resume import redis_url, store_dir  # noqa: F401 (fixtures)

RECORDINGS = (sample_path(), SHARED_DATA / "speech" / "ami_train" / "trn03.wav", FIXTURES / "jfk.flac")
FAULTS = 4
WINDOW_S = 6.0
"""Faults fall in the first this many seconds of the broken run (the shortest interview lasts ~4 s at 3x real
time, the others ~11 s, and each restart holds them all a few seconds)."""


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("DEPSCREEN_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))


def chaos(store: str, log_path: Path, seed: int) -> None:
    for path in RECORDINGS:
        if not path.exists():
            pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    done = chaos_round(
        (*SERVER_FLAGS, "--state-store", store), log_path, seed, RECORDINGS, faults=FAULTS, window_s=WINDOW_S, speed=3.0
    )
    assert not done.mismatches, (
        f"chaos seed {seed} (rerun with DEPSCREEN_CHAOS_SEED={seed}); faults: {done.faults}; {done.mismatches}"
    )
    assert done.sentences_compared >= 15 and done.faults, f"chaos seed {seed}: {done}"
    assert any("between start and accepted" in fault for fault in done.faults), f"chaos seed {seed}: {done}"
    assert any("frozen" in fault for fault in done.faults), f"chaos seed {seed}: {done}"


def test_chaos_over_sqlite(store_dir: Path, seed: int) -> None:  # noqa: F811
    chaos(f"sqlite://{store_dir}/chaos-{seed}.db", store_dir / f"chaos-sqlite-{seed}.log", seed)


def test_chaos_over_redis(store_dir: Path, redis_url: str, seed: int) -> None:  # noqa: F811
    chaos(redis_url, store_dir / f"chaos-redis-{seed}.log", seed)
