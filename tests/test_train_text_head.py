"""The English text head on tiny corpora written in the three Reddit corpora's formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.train.text_head import load_corpora, train_text_head

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
    assert json.loads((tmp_path / "out" / "text_head.json").read_text())["train_posts"] == results["train_posts"]


def test_missing_corpus_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ltedi2022_depsign/dev\.tsv does not exist"):
        load_corpora(tmp_path)
