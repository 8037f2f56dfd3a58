"""EATD adapter on tiny folders in the corpus's exact layout: sessions, skipped answers, the cache, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.features.text import MULTILINGUAL, text_feature_dim
from depscreen.engine.train.cache import FeatureCache
from depscreen.engine.train.eatd import ANSWERS, EatdDataset
from depscreen.engine.train.featurize import InterviewFeaturizer

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
