"""Whose text the model reads: a session in its training language, or in any language when the checkpoint
does not record one; another language through a cross-lingual encoder (and the client is told the transfer is
untested); otherwise none (the transcript still reaches the client, the estimate rests on audio and video). A
language with its own text head (English) gets that head's estimate of its text beside the estimate."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from depscreen.engine.features.language_head import language_text_head
from depscreen.engine.features.text import CHAR_NGRAMS, MULTILINGUAL
from depscreen.engine.runtime.checkpoint import (
    DEFAULT_MODEL,
    DEMO_MODEL,
    ModelFacts,
    TextRoute,
    load_checkpoint,
    save_checkpoint,
    text_route,
)
from depscreen.streamer.interview import Caption, Opening, ScoredSentence
from depscreen.streamer.server import Server

from .test_session_time import JFK, audio, on_server
from .virtual_clock import VirtualClock


def facts(encoder: str, languages: tuple[str, ...]) -> ModelFacts:
    return ModelFacts("m", "t", text_encoder=encoder, text_languages=languages)


def test_text_in_a_training_language_or_for_a_model_that_records_none_is_read_without_a_word() -> None:
    assert text_route(facts(CHAR_NGRAMS, ("zh",)), "zh") == TextRoute(True)
    assert text_route(facts(MULTILINGUAL, ()), "en") == TextRoute(True)
    assert text_route(facts(CHAR_NGRAMS, ()), "en") == TextRoute(True)


def test_a_cross_lingual_encoder_reads_another_of_its_languages_and_says_the_transfer_is_untested() -> None:
    route = text_route(facts(MULTILINGUAL, ("zh",)), "en")
    assert route.reads_text
    assert "learned zh text" in route.notice and "not validated on en interviews" in route.notice


def test_text_the_model_has_no_way_to_read_is_not_read_and_the_client_is_told() -> None:
    for route in (text_route(facts(CHAR_NGRAMS, ("zh",)), "en"), text_route(facts(MULTILINGUAL, ("zh",)), "sw")):
        assert not route.reads_text
        assert "transcribed but not read by the model" in route.notice and "rests on audio and video" in route.notice


def test_a_language_with_its_own_text_head_gets_that_estimate_beside_and_the_client_is_told_its_source() -> None:
    for encoder in (CHAR_NGRAMS, MULTILINGUAL):
        english = text_route(facts(encoder, ("zh",)), "en")
        assert english.own_head == "en"
        assert "en character n-gram head trained on English forum posts" in english.notice
        assert "not part of it" in english.notice
    assert text_route(facts(MULTILINGUAL, ("zh",)), "sw").own_head == "", "Swahili has no head of its own"
    assert text_route(facts(CHAR_NGRAMS, ("zh",)), "zh").own_head == "", "the model reads its own language"
    assert text_route(facts(CHAR_NGRAMS, ("en",)), "en").own_head == ""


def test_the_shipped_model_stacks_the_mandarin_head_and_tells_an_english_session_its_text_is_not_read() -> None:
    _, shipped = load_checkpoint(DEFAULT_MODEL)
    assert shipped.text_languages == ("zh",) and shipped.stack is not None and shipped.stack.heads == ("text:zh",)
    mandarin = text_route(shipped, "zh")
    assert mandarin.reads_text and mandarin.own_head == "zh" and "stack" in mandarin.notice
    english = text_route(shipped, "en")
    assert english.own_head == "en" and "none reads en" in english.notice


def test_a_session_in_a_language_the_model_cannot_read_keeps_its_transcript_but_not_its_text(tmp_path: Path) -> None:
    """End to end in-process: the demo model (English-only MiniLM text) recorded as trained on Mandarin text;
    an English session is told, its captions still come back as transcripts, and no sentence carries text."""
    model, demo_facts = load_checkpoint(DEMO_MODEL)
    checkpoint = tmp_path / "zh-text.pt"
    save_checkpoint(checkpoint, model, replace(demo_facts, text_languages=("zh",)))

    async def scenario(server: Server) -> tuple[tuple[str, ...], list[ScoredSentence]]:
        session = await server.hub.open(Opening(sample_rate_hz=16_000, channels=1, language="en"))
        try:
            await anext(session.handle(Caption(0, 11_000, "ask not what your country can do for you")), None)
            sentences = [u for chunk in audio(JFK) async for u in session.handle(chunk)]
            sentences += [u async for u in session.finish()]
            return session.welcome().notices, [s for s in sentences if isinstance(s, ScoredSentence)]
        finally:
            session.close()

    notices, sentences = on_server(VirtualClock(), scenario, model=str(checkpoint), max_speed=0.0)
    assert any("learned zh text only" in notice for notice in notices), notices
    assert sentences and "your country" in " ".join(s.features.transcript for s in sentences)
    assert any("trained on English forum posts" in notice for notice in notices), notices
    head, told = language_text_head("en"), []
    assert head is not None
    for sentence in sentences:
        assert sentence.features.text is None
        text = next(m for m in sentence.estimate.modalities if m.modality == "text")
        assert not text.available and text.weight == 0.0
        if sentence.features.transcript:
            told.append(sentence.features.transcript)
        if told:  # the English head's estimate of everything said so far, as a live session accumulates it
            assert text.probability == pytest.approx(1 / (1 + math.exp(-head.session_logit(told))), abs=1e-6)
    assert told, "the caption reached a sentence"


@pytest.mark.e2e
def test_a_mandarin_session_on_the_shipped_model_gets_the_stacked_head_estimate_end_to_end() -> None:
    """In-process server with the shipped checkpoint: Mandarin captions reach the Mandarin head, and every
    estimate is the stack of that head's running logit, with the text modality's weight its share."""
    _, shipped = load_checkpoint(DEFAULT_MODEL)
    said = "我最近总是很累，晚上睡不着觉，觉得什么都没有意思"

    async def scenario(server: Server) -> tuple[tuple[str, ...], list[ScoredSentence]]:
        session = await server.hub.open(Opening(sample_rate_hz=16_000, channels=1, language="zh"))
        try:
            await anext(session.handle(Caption(0, 11_000, said)), None)
            sentences = [u for chunk in audio(JFK) async for u in session.handle(chunk)]
            sentences += [u async for u in session.finish()]
            return session.welcome().notices, [s for s in sentences if isinstance(s, ScoredSentence)]
        finally:
            session.close()

    notices, sentences = on_server(VirtualClock(), scenario, model=str(DEFAULT_MODEL), max_speed=0.0)
    assert any("stack" in notice for notice in notices), notices
    head, told = language_text_head("zh"), []
    assert head is not None and shipped.stack is not None
    (weight,) = shipped.stack.weights
    for sentence in sentences:
        if sentence.features.transcript:
            told.append(sentence.features.transcript)
        text = next(m for m in sentence.estimate.modalities if m.modality == "text")
        if told:
            logit = shipped.stack.bias + weight * head.session_logit(told)
            assert sentence.estimate.probability == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-6)
            assert text.weight == 1.0
    assert told, "the caption reached a sentence"
