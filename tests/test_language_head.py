"""A language's own text head: the shipped English head is checked at load and reads English, a session's text
estimate accumulates alike streaming and offline, a resume carries it, and a damaged head file stops the
server at start."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from depscreen.engine.features import language_head
from depscreen.engine.features.language_head import SHIPPED_HEADS, TextHeadAccount, language_text_head
from depscreen.engine.modalities import modality
from depscreen.engine.runtime.checkpoint import DEFAULT_MODEL, DEMO_MODEL, load_checkpoint
from depscreen.engine.runtime.screener import RunningEstimate, Screener
from depscreen.streamer.parts import preload_language_heads
from depscreen.streamer.resume import SessionSnapshot, decode, encode
from depscreen.streamer.settings import SettingsError

from .conftest import spoken_sentence


def text_estimate(estimate: RunningEstimate) -> float:
    return next(m.probability for m in estimate.modalities if m.modality == "text")


def test_a_session_text_estimate_is_the_character_weighted_mean_of_its_sentences_logits() -> None:
    account = TextHeadAccount()
    assert account.probability is None, "no estimate before any sentence with text"
    account.add(2.0, "yes")
    account.add(-1.0, "I slept badly")  # 11 characters: spaces do not count
    assert account.logit == pytest.approx((3 * 2.0 - 11 * 1.0) / 14)
    assert account.probability == pytest.approx(1 / (1 + math.exp(-account.logit)))


def test_the_shipped_english_head_is_loaded_once_and_reads_english() -> None:
    head = language_text_head("en")
    assert head is not None and head is language_text_head("en")
    sad, fine = head.logits(["I feel hopeless and empty, nothing matters anymore", "we had a lovely picnic today"])
    assert sad > fine
    sentences = ["I can't sleep.", "Nothing helps."]
    account = TextHeadAccount()
    for sentence, logit in zip(sentences, head.logits(sentences), strict=True):
        account.add(float(logit), sentence)
    assert head.session_logit(sentences) == pytest.approx(account.logit)
    assert language_text_head("sw") is None, "a language without a head of its own"
    pathological = ("😀🙃 ok ça va 我觉得 مرحبا " * 400)[:8000]
    assert np.isfinite(head.logits([pathological, "", "?"])).all(), "emoji, mixed scripts, nothing: finite"


def test_a_damaged_head_file_is_refused_by_its_checksum_and_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = SHIPPED_HEADS["en"]
    damaged = bytearray((language_head.WEIGHTS / shipped.file).read_bytes())
    damaged[-1] ^= 1
    (tmp_path / shipped.file).write_bytes(damaged)
    monkeypatch.setattr(language_head, "WEIGHTS", tmp_path)
    language_text_head.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"not the pinned .*: the file is damaged or was replaced; reinstall"):
            language_text_head("en")
        _, facts = load_checkpoint(DEFAULT_MODEL)  # Mandarin text: English sessions use the English head
        with pytest.raises(SettingsError, match="SHA-256"):
            preload_language_heads(facts)
    finally:
        language_text_head.cache_clear()


def test_streaming_and_offline_agree_on_the_text_estimate_and_a_resume_carries_it() -> None:
    screener = Screener.from_checkpoint(DEMO_MODEL, "cpu")
    rng = np.random.default_rng(0)
    told = [("I can't sleep", 1.5), ("", None), ("nothing helps anymore and I am tired", -0.5)]
    sentences = [
        replace(
            spoken_sentence(i, rng.normal(size=(90, modality("audio").dim)).astype(np.float32), transcript=text),
            language_text_logit=logit,
        )
        for i, (text, logit) in enumerate(told)
    ]
    track = screener.new_session()
    streamed = [screener.step(track, s) for s in sentences[:2]]
    resumed = decode("s", encode(SessionSnapshot("s", track=track))).track
    assert resumed.account.language_text == track.account.language_text
    streamed.append(screener.step(resumed, sentences[2]))
    offline = screener.offline(sentences)
    expected = [1.5, 1.5, (11 * 1.5 - 30 * 0.5) / 41]
    for live, reference, logit in zip(streamed, offline, expected, strict=True):
        assert text_estimate(live) == pytest.approx(text_estimate(reference))
        assert text_estimate(live) == pytest.approx(1 / (1 + math.exp(-logit)))
        assert live.probability == pytest.approx(reference.probability, abs=1e-5), "the estimate is the model's"


def test_a_snapshot_written_before_the_text_heads_resumes_with_none() -> None:
    payload = encode(SessionSnapshot("s"))
    record = torch.load(io.BytesIO(payload), weights_only=True)
    del record["language_text"]
    older = io.BytesIO()
    torch.save(record, older)
    assert decode("s", older.getvalue()).track.account.language_text == TextHeadAccount()
