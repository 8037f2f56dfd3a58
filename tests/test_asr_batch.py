"""Decodings of many sessions in one model call: compatible requests share a call, a failed call fails only the
requests that fail alone, and real tiny.en gives each sentence of a batch the text it gets decoded alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from depscreen.asrbatchbench import BatchSizes
from depscreen.engine.features.asr import ONE_AT_A_TIME, AsrCapacity, Transcript
from depscreen.engine.features.asr_batch import Batcher
from depscreen.engine.features.whisper import TINY_EN, WhisperModel
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file

from .conftest import FIXTURES

PATIENT = AsrCapacity(parallel=1, max_batch=8, max_wait_ms=400)
"""A wait long enough that requests handed over together always meet in one batch, however loaded the machine."""


def _all_at_once(call: Callable[[str], object], requests: list[str], batcher: Batcher) -> list[object | BaseException]:
    """Each request from its own thread, all started together, each caller preparing a request from before
    the start (so none is run before the others are handed over); the result or the error of each."""
    start = threading.Barrier(len(requests))

    def one(request: str) -> object | BaseException:
        with batcher.preparing():
            start.wait()
            try:
                return call(request)
            except Exception as error:
                return error

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def _recording_batcher(capacity: AsrCapacity, key: Callable[[str], Hashable]) -> tuple[Batcher[str, str], list]:
    calls: list[list[str]] = []

    def run(requests: list[str]) -> list[str]:
        calls.append(list(requests))
        if "poison" in requests:
            raise RuntimeError("the model call failed")
        return [r.upper() for r in requests]

    return Batcher(run, key, capacity, "test"), calls


def test_requests_ready_together_share_a_call_by_key_up_to_the_batch_size() -> None:
    batcher, calls = _recording_batcher(PATIENT, key=lambda r: r[0])
    results = _all_at_once(batcher, ["a1", "a2", "b1", "a3", "b2"], batcher)
    assert results == ["A1", "A2", "B1", "A3", "B2"]
    assert sorted(sorted(c) for c in calls) == [["a1", "a2", "a3"], ["b1", "b2"]]
    small, calls = _recording_batcher(AsrCapacity(1, 2, 400), key=lambda r: 0)
    assert _all_at_once(small, ["x", "y", "z"], small) == ["X", "Y", "Z"]
    assert sorted(len(c) for c in calls) == [1, 2], "at most max_batch per call"


def test_a_failed_batch_is_run_one_by_one_and_fails_only_its_own_request() -> None:
    batcher, calls = _recording_batcher(PATIENT, key=lambda r: 0)
    results = _all_at_once(batcher, ["x", "poison", "y"], batcher)
    assert results[0] == "X" and results[2] == "Y"
    assert isinstance(results[1], RuntimeError) and "the model call failed" in str(results[1])
    assert len(calls[0]) == 3 and sorted(calls[1:]) == [["poison"], ["x"], ["y"]]


def test_a_request_waits_for_batch_mates_only_while_another_caller_is_preparing_one() -> None:
    batcher, calls = _recording_batcher(AsrCapacity(1, 8, 60_000), key=lambda r: 0)
    began = time.monotonic()
    with batcher.preparing():
        assert batcher("alone") == "ALONE"
    assert batcher("unannounced") == "UNANNOUNCED"
    assert time.monotonic() - began < 30, "no caller was preparing another request: nothing to wait for"
    second_ready = threading.Event()

    def later() -> str:
        with batcher.preparing():
            second_ready.wait()
            return batcher("later")

    with ThreadPoolExecutor(1) as pool:
        follower = pool.submit(later)
        with batcher.preparing():
            threading.Timer(0.2, second_ready.set).start()
            assert batcher("first") == "FIRST"
        assert follower.result() == "LATER"
    assert calls == [["alone"], ["unannounced"], ["first", "later"]], "the first waited for the preparing one"


def test_a_capacity_that_cannot_run_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch >= 1"):
        Batcher(lambda r: r, lambda r: 0, AsrCapacity(1, 0, 0), "test")


# ---------------------------------------------------------------- real tiny.en


class _FailingBatches:
    """A CTranslate2 Whisper model whose generate fails for more than one prompt at a time (an injected fault)."""

    def __init__(self, model: object) -> None:
        self._model = model

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)

    def generate(self, encoded: object, prompts: list, **options: object) -> object:
        if len(prompts) > 1:
            raise RuntimeError("injected: the batched call failed")
        return self._model.generate(encoded, prompts, **options)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def stretches() -> list[tuple[np.ndarray, str]]:
    """Stretches of JFK's speech of 1.5-4 s (one window length, token budgets 19-34), two following on from
    text said before (other prompt lengths, so other batches). The first loops ("And so my fellow Americans."
    over and over) until its cap cuts it: in a batch under a longer cap it is decoded again alone."""
    audio = decode_audio_file(FIXTURES / "jfk.flac").astype(np.float32) / 32768.0
    cuts = [(0.0, 3.0), (2.0, 4.5), (3.5, 7.0), (5.0, 8.0), (6.5, 10.5), (8.0, 11.0), (1.0, 2.5), (4.0, 6.0)]
    before = ["", "", "", "", "", "And so my fellow Americans", "", "ask not"]
    return [
        (audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)], said) for (a, b), said in zip(cuts, before, strict=True)
    ]


@pytest.fixture(scope="module")
def alone(stretches: list[tuple[np.ndarray, str]]) -> list[Transcript]:
    model = WhisperModel(TINY_EN, ONE_AT_A_TIME)
    return [model.transcribe(pcm, "en", said) for pcm, said in stretches]


def _batched(model: WhisperModel, stretches: list[tuple[np.ndarray, str]]) -> list[Transcript | BaseException]:
    by_index = {str(i): stretch for i, stretch in enumerate(stretches)}
    results = _all_at_once(
        lambda i: model.transcribe(by_index[i][0], "en", by_index[i][1]), list(by_index), model._batcher
    )
    return results  # type: ignore[return-value]


def test_each_sentence_of_a_batch_gets_the_text_it_gets_alone(
    stretches: list[tuple[np.ndarray, str]], alone: list[Transcript]
) -> None:
    sizes = BatchSizes()
    batched = _batched(WhisperModel(TINY_EN, PATIENT, sizes), stretches)
    assert sum(bool(t.text) for t in alone) >= 6, alone
    assert [t.text for t in batched] == [t.text for t in alone]  # type: ignore[union-attr]
    assert [t.confidence for t in batched] == pytest.approx([t.confidence for t in alone], abs=1e-4)  # type: ignore[union-attr]
    assert max(sizes.sizes) >= 5, f"the stretches without a prompt meet in one call: {sizes.sizes}"
    assert len(sizes.sizes) < len(stretches)


def test_a_failed_batch_falls_back_to_decoding_its_sentences_one_by_one(
    stretches: list[tuple[np.ndarray, str]], alone: list[Transcript]
) -> None:
    sizes = BatchSizes()
    model = WhisperModel(TINY_EN, PATIENT, sizes)
    model._model = _FailingBatches(model._model)  # type: ignore[assignment]
    batched = _batched(model, stretches)
    assert [t.text for t in batched] == [t.text for t in alone]  # type: ignore[union-attr]
    assert max(sizes.sizes) > 1 and sizes.sizes.count(1) >= len(stretches), sizes.sizes
