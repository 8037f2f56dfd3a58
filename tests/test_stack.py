"""The stacked estimate: the probability is the stack of the checkpoint's heads, streaming and offline agree
after every sentence, a resume carries it, each head's share is the wire's weight, input that gives the stack
nothing leaves it at its base rate with the whole interval (never NaN), and a checkpoint whose heads this
version cannot build is refused at server start while one without a stack behaves as before."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from depscreen.engine.features.language_head import language_text_head
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import modality
from depscreen.engine.runtime.checkpoint import (
    DEMO_MODEL,
    load_checkpoint,
    replace_facts,
    save_checkpoint,
    text_route,
)
from depscreen.engine.runtime.interval import IntervalCalibration
from depscreen.engine.runtime.screener import RunningEstimate, Screener
from depscreen.engine.runtime.stack import Stack
from depscreen.engine.train.evaluate import stream_session
from depscreen.engine.train.sessions import LabelledSession
from depscreen.streamer.resume import SessionSnapshot, decode, encode
from depscreen.streamer.server import Server
from depscreen.streamer.settings import ServerSettings, SettingsError

from .conftest import spoken_sentence

STACK = Stack(heads=("text:zh",), weights=(1.5,), bias=-0.4)
INTERVAL = IntervalCalibration(
    level=0.9, evidence_edges=[0.0], negative=[0.3], positive=[0.4], sessions=40, prefixes=200
)


def stacked_screener() -> Screener:
    model, facts = load_checkpoint(DEMO_MODEL)
    return Screener(model, replace(facts, stack=STACK, interval=INTERVAL), "cpu")


def sentence(
    index: int, transcript: str, logit: float | None, head: str = "zh", speech: bool = True
) -> SentenceFeatures:
    frames = np.random.default_rng(index).normal(size=(90, modality("audio").dim))
    made = replace(spoken_sentence(index, frames.astype(np.float32), transcript=transcript), speech_ms=3000)
    if not speech:
        made = replace(made, speech_ms=0)
    return replace(made, language_text_logit=logit, language_text_head=head if logit is not None else "")


def weights(estimate: RunningEstimate) -> dict[str, float]:
    return {m.modality: m.weight for m in estimate.modalities}


def test_combine_weighs_the_heads_with_evidence_and_reports_their_shares() -> None:
    stack = Stack(("text:zh", "text:en"), (2.0, -1.0), 0.5)
    probability, shares = stack.combine({"text:zh": 1.0, "text:en": 1.0})
    assert probability == pytest.approx(1 / (1 + math.exp(-(0.5 + 2.0 - 1.0))))
    assert shares == pytest.approx({"text:zh": 2 / 3, "text:en": 1 / 3})
    probability, shares = stack.combine({})
    assert probability == pytest.approx(1 / (1 + math.exp(-0.5))) and shares == {"text:zh": 0.0, "text:en": 0.0}
    assert stack.combine({"text:zh": -1e6})[0] == 0.0 and stack.combine({"text:zh": 1e6})[0] == 1.0, "no overflow"
    own = Stack(("text:zh",), (1.0,), 0.0, base_rate=0.23)  # a head in its own (balanced) calibration
    assert own.combine({}) == (0.23, {"text:zh": 0.0}), "before evidence: the training prevalence, not 0.5"
    assert own.combine({"text:zh": 0.0})[0] == 0.5


def test_a_stack_recorded_without_a_base_rate_loads_and_a_base_rate_outside_0_1_is_refused(tmp_path: Path) -> None:
    model, facts = load_checkpoint(DEMO_MODEL)
    blob = torch.load(DEMO_MODEL, weights_only=True)
    blob["facts"]["stack"] = {"heads": ["text:zh"], "weights": [1.5], "bias": -0.4}  # as written before it
    torch.save(blob, tmp_path / "older.pt")
    assert load_checkpoint(tmp_path / "older.pt")[1].stack == STACK
    save_checkpoint(tmp_path / "bad.pt", model, replace(facts, stack=Stack(("text:zh",), (1.0,), 0.0, 1.5)))
    with pytest.raises(ValueError, match="malformed"):
        load_checkpoint(tmp_path / "bad.pt")


def test_the_stacked_estimate_streams_as_offline_after_every_sentence_and_a_resume_carries_it() -> None:
    screener = stacked_screener()
    told = [("我最近很累", 1.0), ("", None), ("晚上睡不着觉，也不想吃饭", -0.5), ("嗯", 2.0)]
    sentences = [sentence(i, text, logit) for i, (text, logit) in enumerate(told)]
    track = screener.new_session()
    streamed = [screener.step(track, s) for s in sentences[:2]]
    resumed = decode("s", encode(SessionSnapshot("s", track=track))).track
    assert resumed.account.language_text == track.account.language_text
    streamed += [screener.step(resumed, s) for s in sentences[2:]]
    offline = screener.offline(sentences)
    chars = [len(text) for text, _ in told]
    for k, (live, reference) in enumerate(zip(streamed, offline, strict=True)):
        said = [(c, logit) for c, (_, logit) in zip(chars[: k + 1], told, strict=False) if logit is not None]
        mean = sum(c * logit for c, logit in said) / sum(c for c, _ in said)
        assert live.probability == pytest.approx(1 / (1 + math.exp(-(STACK.bias + 1.5 * mean))))
        assert live.probability == reference.probability and live.interval_low == reference.interval_low
        assert weights(live) == {"audio": 0.0, "video": 0.0, "text": 1.0}, "the stack rests on its text head alone"
    assert streamed[-1].enough_speech and (streamed[-1].interval_low, streamed[-1].interval_high) == pytest.approx(
        (max(0.0, streamed[-1].probability - 0.3), min(1.0, streamed[-1].probability + 0.4))
    )


@pytest.mark.parametrize(
    "sentences",
    [
        [sentence(i, "", None, speech=False) for i in range(3)],  # sentences without usable speech
        [sentence(i, "", None) for i in range(8)],  # audio only
        [sentence(i, "I feel fine today", 1.2, head="en") for i in range(8)],  # another language's head
    ],
    ids=["no-speech", "audio-only", "other-language"],
)
def test_input_that_gives_the_stack_nothing_leaves_it_at_its_base_rate_with_the_whole_interval(
    sentences: list[SentenceFeatures],
) -> None:
    screener = stacked_screener()
    track = screener.new_session()
    for estimate in [screener.step(track, s) for s in sentences]:
        assert estimate.probability == pytest.approx(1 / (1 + math.exp(-STACK.bias)))
        assert (estimate.interval_low, estimate.interval_high) == (0.0, 1.0)
        assert set(weights(estimate).values()) == {0.0}
        assert all(math.isfinite(m.probability) for m in estimate.modalities)


def test_text_alone_unknown_characters_emoji_mixed_scripts_and_thousands_of_characters_give_finite_estimates() -> None:
    head = language_text_head("zh")
    said = ["😀🙃🎉", "ok ça va 我觉得 مرحبا", "我" * 5000, "？！", "Ωμέγα"]
    sentences = [sentence(i, text, float(head.logits([text])[0])) for i, text in enumerate(said)]
    screener = stacked_screener()
    track = screener.new_session()
    for estimate in [screener.step(track, s) for s in sentences]:
        assert math.isfinite(estimate.probability) and 0.0 < estimate.probability < 1.0
        assert weights(estimate)["text"] == 1.0
        assert 0.0 <= estimate.interval_low <= estimate.probability <= estimate.interval_high <= 1.0


def test_the_stacked_language_feeds_the_estimate_and_another_language_is_told_it_does_not(tmp_path: Path) -> None:
    _, facts = load_checkpoint(DEMO_MODEL)
    stacked = replace(facts, stack=STACK, text_languages=("zh",))
    assert text_route(stacked, "zh").own_head == "zh" and "stack" in text_route(stacked, "zh").notice
    english = text_route(stacked, "en")
    assert english.own_head == "en" and "none reads en" in english.notice and "base rate" in english.notice
    assert text_route(stacked, "sw").own_head == ""


def test_a_checkpoint_stacking_a_head_this_version_cannot_build_is_refused_at_start_and_an_older_one_loads(
    tmp_path: Path,
) -> None:
    model, facts = load_checkpoint(DEMO_MODEL)
    assert facts.stack is None, "a checkpoint written before stacks loads without one"
    replace_facts(DEMO_MODEL, replace(facts, stack=STACK), tmp_path / "stacked.pt")
    assert load_checkpoint(tmp_path / "stacked.pt")[1].stack == STACK
    stored, original = (torch.load(path, weights_only=True) for path in (tmp_path / "stacked.pt", DEMO_MODEL))
    assert stored["config"] == original["config"], "the config is kept as the training version wrote it"
    save_checkpoint(tmp_path / "alien.pt", model, replace(facts, stack=Stack(("text:xx", "audio:gemaps"), (1, 1), 0)))
    with pytest.raises(
        ValueError, match=r"cannot build \(text:xx, audio:gemaps\).*serve it with the depscreen version"
    ):
        load_checkpoint(tmp_path / "alien.pt")

    async def start() -> None:
        server = Server(ServerSettings(grpc_port=0, http_port=0, device="cpu", asr="none", model=tmp_path / "alien.pt"))
        try:
            await server.start()
        finally:
            await server.stop()

    with pytest.raises(SettingsError, match=r"text:xx"):
        asyncio.run(start())


def test_eval_streams_a_dataset_session_with_its_language_head_as_a_live_session_gets_it() -> None:
    screener = stacked_screener()
    said = ["我最近总是很累", "", "晚上睡不着觉"]
    session = LabelledSession(label=1, sentences=[sentence(i, text, None) for i, text in enumerate(said)])
    head = language_text_head("zh")
    told = [text for text in said if text]
    final = stream_session(screener, session, "zh")[-1]
    assert final.probability == pytest.approx(1 / (1 + math.exp(-(STACK.bias + 1.5 * head.session_logit(told)))))
    assert stream_session(screener, session)[-1].probability == pytest.approx(1 / (1 + math.exp(-STACK.bias)))
