"""EATD adapter on tiny folders in the corpus's exact layout: sessions, skipped answers, the cache, bad input,
the one featurize path against the route it replaced, and ASR text."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.features import whisper
from depscreen.engine.features.text import MULTILINGUAL, text_feature_dim
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.pipeline import Extractors, SessionPipeline
from depscreen.engine.segment import SegmenterSettings, segment_pcm
from depscreen.engine.train.align import align_transcript
from depscreen.engine.train.cache import FeatureCache, extractor_version
from depscreen.engine.train.eatd import ANSWERS, EatdDataset
from depscreen.engine.train.featurize import GAP_MS, InterviewFeaturizer
from depscreen.engine.transcript_error import error_units, transcript_error

from .conftest import FIXTURES

TRANSCRIPT = "我最近睡不好，总是很累。做什么都没有兴趣，也不想出门。嗯，就是这样吧。"


def make_eatd(root: Path, rows: list[tuple[str, int, str]], answers: dict[str, tuple[str, ...]] | None = None) -> Path:
    """An EATD split folder: labels.csv plus, per volunteer, the answers' .flac (11 s of real speech) and .txt."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["volunteer,sds_raw,sds_index,depressed,missing_answers"]
    for name, label, missing in rows:
        lines.append(f"{name},{50 if label else 30}.0,{62.5 if label else 37.5},{label},{missing}")
        folder = root / name
        folder.mkdir()
        for answer in (answers or {}).get(name, ANSWERS):
            shutil.copy(FIXTURES / "jfk.flac", folder / f"{answer}.flac")
            (folder / f"{answer}.txt").write_text(f"{name}{answer}。{TRANSCRIPT}", encoding="utf-8")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def featurizer() -> InterviewFeaturizer:
    return InterviewFeaturizer(MULTILINGUAL, cache=None, language="zh")


def test_volunteers_become_sessions_and_declared_gaps_are_reported(
    tmp_path: Path, featurizer: InterviewFeaturizer
) -> None:
    root = make_eatd(
        tmp_path / "eatd",
        [("t_1", 1, ""), ("t_2", 0, "neutral"), ("t_3", 0, "positive;neutral;negative")],
        answers={"t_2": ("positive", "negative"), "t_3": ()},
    )
    load = EatdDataset(root).load(featurizer)
    assert [(s.session_id, s.label) for s in load.sessions] == [("t_1", 1), ("t_2", 0)]
    skipped = {(Path(s.item).name if "/" in s.item else s.item, s.reason) for s in load.skipped}
    assert ("neutral.flac", "declared missing in labels.csv") in skipped
    assert ("t_3", "no answer audio") in skipped
    full, partial = load.sessions
    assert len(full.sentences) == 3 * 4 and len(partial.sentences) == 2 * 4, "jfk.flac holds 4 sentences"
    assert [s.index for s in full.sentences] == list(range(12))
    assert all(b.start_ms >= a.end_ms for a, b in zip(full.sentences, full.sentences[1:], strict=False))
    texts = [s for s in full.sentences if s.text is not None]
    assert len(texts) >= 9 and all(s.transcript_source == "caption" for s in texts)
    assert all(s.text.shape == (text_feature_dim(MULTILINGUAL),) for s in texts)
    assert "".join(s.transcript for s in full.sentences).count(TRANSCRIPT[:8]) == 3
    assert full.score == 62.5


def test_cache_hits_without_loading_extractors_and_misses_when_a_file_changes(tmp_path: Path) -> None:
    root = make_eatd(tmp_path / "eatd", [("t_1", 1, "")])
    cache = FeatureCache(tmp_path / "cache")
    first = EatdDataset(root).load(InterviewFeaturizer(MULTILINGUAL, cache)).sessions[0]
    again = InterviewFeaturizer(MULTILINGUAL, cache)
    second = EatdDataset(root).load(again).sessions[0]
    assert again._extractors is None, "a cache hit loads no feature model"
    for a, b in zip(first.sentences, second.sentences, strict=True):
        assert np.array_equal(a.audio, b.audio) and a.transcript == b.transcript
        assert (a.text is None and b.text is None) or np.array_equal(a.text, b.text)
    (root / "t_1" / "neutral.txt").write_text("完全不同的回答。", encoding="utf-8")
    changed = InterviewFeaturizer(MULTILINGUAL, cache)
    third = EatdDataset(root).load(changed).sessions[0]
    assert changed._extractors is not None, "a changed transcript misses the cache"
    assert "完全不同的回答" in "".join(s.transcript for s in third.sentences)


def test_label_file_must_match_the_folders(tmp_path: Path) -> None:
    root = make_eatd(tmp_path / "eatd", [("t_1", 1, ""), ("t_2", 0, "")])
    (root / "t_9").mkdir()
    with pytest.raises(ValueError, match="t_9 have no label row"):
        EatdDataset(root)
    (root / "t_9").rmdir()
    shutil.rmtree(root / "t_2")
    with pytest.raises(ValueError, match="no folder for t_2"):
        EatdDataset(root)


def test_bad_input_errors_name_the_file(tmp_path: Path, featurizer: InterviewFeaturizer) -> None:
    with pytest.raises(FileNotFoundError, match=r"labels\.csv"):
        EatdDataset(tmp_path)
    root = make_eatd(tmp_path / "eatd", [("t_1", 1, "")])
    (root / "t_1" / "neutral.flac").unlink()
    with pytest.raises(FileNotFoundError, match=r"t_1/neutral\.flac does not exist"):
        EatdDataset(root).load(featurizer)
    (root / "t_1" / "neutral.flac").write_bytes(b"this is not audio")
    with pytest.raises(ValueError, match=r"t_1/neutral\.flac"):
        EatdDataset(root).load(featurizer)
    (root / "labels.csv").write_text("volunteer,label\nt_1,1\n")
    with pytest.raises(ValueError, match="lacks the columns sds_index, depressed, missing_answers"):
        EatdDataset(root)
    (root / "labels.csv").write_text("volunteer,sds_raw,sds_index,depressed,missing_answers\nt_1,50,62.5,yes,\n")
    with pytest.raises(ValueError, match="line 2 \\(t_1\\)"):
        EatdDataset(root)


def _two_pass_features(recordings: list[Path], transcripts: list[str]) -> list:
    """The route training took before it segmented once: `segment_pcm` over the joined answers to align each
    transcript, then the pipeline again with the aligned captions pushed as timed captions."""
    gap = np.zeros(GAP_MS * SAMPLE_RATE // 1000, dtype=np.int16)
    parts, bounds, position = [], [], 0
    for audio in recordings:
        pcm = decode_audio_file(audio)
        parts += [pcm, gap]
        bounds.append((position, position + len(pcm)))
        position += len(pcm) + len(gap)
    stream = np.concatenate(parts)
    spans = segment_pcm(stream, SegmenterSettings())
    pipeline = SessionPipeline(
        Extractors.load(asr="none", text_encoder=MULTILINGUAL), sample_rate_hz=SAMPLE_RATE, language="zh", use_asr=False
    )
    for transcript, (start, end) in zip(transcripts, bounds, strict=True):
        inside = [s for s in spans if start <= (s.start_sample + s.end_sample) // 2 < end]
        for sentence, caption in zip(inside, align_transcript(transcript, [s.speech_ms for s in inside]), strict=True):
            if caption:
                pipeline.push_caption(sentence.start_ms, sentence.end_ms, caption)
    return [r.features for r in pipeline.push_audio(stream.tobytes()) + pipeline.finish()]


def test_segmenting_once_makes_the_features_the_two_pass_route_made(tmp_path: Path) -> None:
    root = make_eatd(tmp_path / "eatd", [("t_1", 1, "")])
    session = EatdDataset(root).load(InterviewFeaturizer(MULTILINGUAL, language="zh")).sessions[0]
    audio = [root / "t_1" / f"{answer}.flac" for answer in ANSWERS]
    texts = [(root / "t_1" / f"{answer}.txt").read_text(encoding="utf-8") for answer in ANSWERS]
    before = _two_pass_features(audio, texts)
    assert len(session.sentences) == len(before) == 12
    for new, old in zip(session.sentences, before, strict=True):
        for name in ("index", "start_ms", "end_ms", "speech_ms", "snr_db", "video_frames", "transcript"):
            assert getattr(new, name) == getattr(old, name), name
        assert (new.transcript_source, new.text_confidence, new.audio_integrity) == (
            old.transcript_source,
            old.text_confidence,
            old.audio_integrity,
        )
        assert np.array_equal(new.audio, old.audio) and np.array_equal(new.video, old.video)
        assert (new.text is None and old.text is None) or np.array_equal(new.text, old.text)


def test_the_asr_cache_key_names_every_decoding_option(monkeypatch: pytest.MonkeyPatch) -> None:
    key = extractor_version(MULTILINGUAL, asr="whisper")
    assert json.loads(key)["asr"]["options"]["token_budgets"]["en"] == {"base": 10, "per_second": 6}
    monkeypatch.setattr(whisper, "WHISPER_OPTIONS", replace(whisper.WHISPER_OPTIONS, min_confidence=0.3))
    assert extractor_version(MULTILINGUAL, asr="whisper") != key


def test_asr_text_comes_from_the_live_stage_under_its_own_cache_key(tmp_path: Path) -> None:
    root = make_eatd(tmp_path / "eatd", [("t_1", 1, "")])
    cache = FeatureCache(tmp_path / "cache")
    human = EatdDataset(root).load(InterviewFeaturizer(MULTILINGUAL, cache, "en"))
    heard = EatdDataset(root).load(InterviewFeaturizer(MULTILINGUAL, cache, "en", text="asr"))
    assert (human.text, heard.text) == ("human", "asr")
    assert human.asr_error is None and len(list((tmp_path / "cache").rglob("*.npz"))) == 2, "two keys, two entries"
    assert extractor_version(MULTILINGUAL, asr="whisper") != extractor_version(MULTILINGUAL)
    assert extractor_version(MULTILINGUAL, asr="whisper") != extractor_version(MULTILINGUAL, asr="base")
    sentences = heard.sessions[0].sentences
    spoken = [s for s in sentences if s.text is not None]
    assert len(spoken) >= 9 and all(s.transcript_source == "asr" and 0 < s.text_confidence < 1 for s in spoken)
    said = " ".join(s.transcript for s in sentences).lower()
    assert said.count("country") >= 3 and TRANSCRIPT[:4] not in said, "the JFK audio, not the transcript files"
    assert [(s.start_ms, s.end_ms) for s in sentences] == [(s.start_ms, s.end_ms) for s in human.sessions[0].sentences]
    reference = "".join(f"t_1{answer}。{TRANSCRIPT}" for answer in ANSWERS)
    assert heard.asr_error == transcript_error(reference, "".join(s.transcript for s in sentences), "zh")
    assert heard.asr_error.rate > 0.9, "English speech against Mandarin transcripts is nearly all error"
    again = InterviewFeaturizer(MULTILINGUAL, cache, "en", text="asr")
    assert EatdDataset(root).load(again).sessions[0].sentences[0].transcript == sentences[0].transcript
    assert again._extractors is None, "a cache hit loads no speech recogniser"
    with pytest.raises(ValueError, match="unknown text source 'subtitles'"):
        InterviewFeaturizer(MULTILINGUAL, text="subtitles")


def test_eval_with_asr_text_end_to_end(tmp_path: Path) -> None:
    root = make_eatd(tmp_path / "eatd", [("t_1", 1, ""), ("t_2", 0, "")])
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "eval", "--dataset", "eatd", "--data", str(root), "--text", "asr",
         "--json", "--cache", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["text"] == "asr" and report["n"] == 2
    references = [f"{name}{answer}。{TRANSCRIPT}" for name in ("t_1", "t_2") for answer in ANSWERS]
    assert report["asr_error"]["reference_units"] == sum(len(error_units(r, "zh")) for r in references)
    assert "ASR text, error" in result.stderr and "CPU s per second" in result.stderr
    entries = list((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 1, "both volunteers answer with the same audio: ASR text does not depend on transcripts"
