"""The English text head on tiny corpora written in the three Reddit corpora's formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from depscreen.cli import main
from depscreen.engine.features.language_head import LanguageTextHead, char_head_inputs
from depscreen.engine.features.text import CHAR_BUCKETS
from depscreen.engine.train.text_head import load_corpora, spoken_sentences, train_text_head

SAD = [
    "I feel hopeless and empty every day",
    "I can't sleep and I hate myself",
    "nothing matters anymore, I am so tired",
]
FINE = [
    "had a great hike with friends today",
    "my new recipe turned out delicious",
    "excited about the concert tonight",
]


def write_corpora(root: Path) -> Path:
    depsign = root / "ltedi2022_depsign"
    depsign.mkdir(parents=True)
    (depsign / "dev.tsv").write_text(
        "PID\tText data\tLabel\n"
        + "".join(f"dev_{i}\t{t}\t{'severe' if i % 2 else 'moderate'}\n" for i, t in enumerate(SAD * 2))
        + "".join(f"dev_f{i}\t{t}\tnot depression\n" for i, t in enumerate(FINE * 2))
    )
    (depsign / "test.tsv").write_text(
        "Pid\ttext data\tClass labels\n" + f"t1\t{SAD[0]}\tsevere\n" + f"t2\t{FINE[0]}\tnot depression\n"
    )
    naseem = root / "naseem2022_severity"
    naseem.mkdir()
    (naseem / "Reddit_depression_dataset.csv").write_text(
        "text,label\n" + "".join(f'"{t}",mild\n' for t in SAD * 3) + "".join(f'"{t}",minimum\n' for t in FINE * 3)
    )
    weak = root / "reddit_depression_cleaned"
    weak.mkdir()
    rows = (
        "clean_text,is_depression\n" + "".join(f'"{t}",1\n' for t in SAD * 3) + "".join(f'"{t}",0\n' for t in FINE * 3)
    )
    (weak / "reddit_depression.csv").write_bytes((rows + "caf\xe9 unlabelled,\n").encode("latin-1"))
    return root


def test_text_head_trains_and_reports_each_corpus_held_out(tmp_path: Path) -> None:
    corpora = load_corpora(write_corpora(tmp_path / "text"), seed=0)
    assert [c.name for c in corpora] == ["ltedi2022_depsign", "naseem2022_severity", "reddit_depression_cleaned"]
    assert corpora[0].test_labels == [1, 0] and corpora[2].skipped == 1
    assert len(corpora[1].test_texts) == round(0.2 * 9) * 2
    results = train_text_head(corpora, None, tmp_path / "out")
    assert results["held_out"]["ltedi2022_depsign"]["auroc"] == 1.0, "a sad post outranks a happy one"
    head = np.load(tmp_path / "out" / "text_head.npz")
    assert head["coef"].shape == (512,)
    assert results["chars"]["held_out"]["ltedi2022_depsign"]["auroc"] == 1.0, "so does the character head's"
    chars = LanguageTextHead.load(tmp_path / "out" / "text_head_chars.npz")
    assert chars.coef.shape == chars.idf.shape == (CHAR_BUCKETS,)
    assert chars.logits([SAD[1]])[0] > 0 > chars.logits([FINE[1]])[0]
    by_sentence = results["chars"]["held_out_by_sentence"]["ltedi2022_depsign"]
    assert by_sentence["auroc"] == 1.0 and by_sentence["n"] == 2, "scored sentence by sentence, as live"
    assert json.loads((tmp_path / "out" / "text_head.json").read_text())["train_posts"] == results["train_posts"]


def test_the_command_prints_both_heads_held_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as finished:
        main(["train", "--text-corpora", str(write_corpora(tmp_path / "text")), "--out", str(tmp_path / "out")])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert finished.value.code == 0
    assert set(printed["held_out"]) == set(printed["chars_held_out"]) == set(printed["chars_held_out_by_sentence"]) == {
        "ltedi2022_depsign", "naseem2022_severity", "reddit_depression_cleaned",
    }  # fmt: skip


def test_missing_corpus_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ltedi2022_depsign/dev\.tsv does not exist"):
        load_corpora(tmp_path)


def test_the_character_head_input_weights_rare_ngrams_up_and_has_unit_rows() -> None:
    idf = np.ones(CHAR_BUCKETS, dtype=np.float32)
    rows = char_head_inputs(["I feel hopeless", ""], idf)
    assert np.linalg.norm(rows[0]) == pytest.approx(1.0) and not rows[1].any(), "empty text is all zeros"
    rare, common = np.flatnonzero(rows[0])[:2]
    idf[rare] = 10.0
    weighted = char_head_inputs(["I feel hopeless"], idf)[0]
    assert weighted[rare] / weighted[common] == pytest.approx(10 * rows[0][rare] / rows[0][common])


def test_a_post_is_cut_where_a_speaker_would_pause() -> None:
    assert spoken_sentences("I can't sleep. Why bother?\nNothing helps!  ok") == [
        "I can't sleep.", "Why bother?", "Nothing helps!", "ok",
    ]  # fmt: skip
    assert spoken_sentences("no stops at all") == ["no stops at all"]
    assert spoken_sentences("") == [""]
