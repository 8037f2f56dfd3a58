"""`depscreen train --dataset eatd` and `depscreen eval` end to end on a few real EATD volunteers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from depscreen.engine.features.text import CHAR_BUCKETS, CHAR_NGRAMS, PHQ8_ITEMS
from depscreen.engine.runtime.checkpoint import load_checkpoint
from depscreen.engine.train.char_lsa import LSA_COMPONENTS

from .conftest import SHARED_DATA

EATD = SHARED_DATA / "eatd" / "train"
VOLUNTEERS = ("t_1", "t_2", "t_6", "t_10", "t_3", "t_5", "t_9", "t_20")
"""Four not depressed, four depressed, all with three answers."""

pytestmark = pytest.mark.skipif(
    not (EATD / "labels.csv").is_file(), reason=f"EATD corpus not found at {EATD} (research data, never in the repo)"
)


def depscreen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "depscreen.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A split folder of links to a few volunteers' folders and their rows of labels.csv (nothing copied)."""
    root = tmp_path_factory.mktemp("eatd")
    with (EATD / "labels.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["volunteer"] in VOLUNTEERS]
        fields = reader.fieldnames
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    for name in VOLUNTEERS:
        (root / name).symlink_to(EATD / name, target_is_directory=True)
    return root


def test_train_cross_validates_and_writes_checkpoint_report_and_card(subset: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = depscreen(
        "train", "--dataset", "eatd", "--data", str(subset), "--out", str(out), "--folds", "2", "--epochs", "2",
        "--cache", str(cache),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["sessions"], summary["positives"], summary["skipped"]) == (8, 4, 0)
    assert 0.0 <= summary["cv_auroc"]["low"] <= summary["cv_auroc"]["value"] <= summary["cv_auroc"]["high"] <= 1.0
    assert "eatd: 8 sessions (4 positive)" in result.stderr
    model, facts = load_checkpoint(out / "model.pt")
    assert facts.text_encoder == CHAR_NGRAMS and model.config.text_dim == CHAR_BUCKETS + len(PHQ8_ITEMS)
    assert model.config.text_projection == LSA_COMPONENTS and model.text_encoder.components.abs().sum() > 0
    assert model.config.score_head and 25 <= float(model.score_mean) <= 100, "SDS index scale"
    assert "EATD" in facts.trained_on and 0.0 < facts.decision_threshold < 1.0
    for figure in ("roc", "reliability", "estimate_vs_sentences", "attribution"):
        assert (out / "report" / f"{figure}.png").stat().st_size > 10_000, figure
    results = json.loads((out / "results.json").read_text())
    assert results["cross_validation"][0]["name"] == "audio+text" and len(results["cross_validation"]) == 1
    assert results["score_head"]["trained"] and "score head trains" in results["score_head"]["reason"]
    assert set(results["cross_validation"][0]["heads"]) == {"fused", "audio", "text"}
    assert set(results["cross_validation"][0]["score_error"]) >= {"mae", "rmse"}
    assert set(results["attribution"]["items"]) >= {"sleep", "depressed_mood"}
    assert (out / "MODEL_CARD.md").read_text().count("research") >= 1
    interval = results["interval"]  # 8 sessions: fitted, or a stated reason why not
    assert interval["fitted"] == (facts.interval is not None)
    assert "## The interval" in (out / "MODEL_CARD.md").read_text()
    if not interval["fitted"]:
        assert "needs at least" in interval["reason"]
    pitch = results["pitch_check"]["audio+text"]  # the pitch check of the cross-validated model
    assert pitch["sessions"] + pitch["without_voiced_frames"] == 8 and set(pitch) >= {"fused", "audio_head"}
    assert pitch["groups"]["low"] + pitch["groups"]["high"] == pitch["sessions"]
    assert "## Pitch check" in (out / "MODEL_CARD.md").read_text()
    assert "pitch check audio+text: median F0 alone AUROC" in result.stdout
    assert list(cache.rglob("*.npz")), "features were cached"

    evaluated = depscreen("eval", "--dataset", "eatd", "--data", str(subset), "--model", str(out / "model.pt"),
                          "--cache", str(cache), "--json")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert (report["n"], report["positives"], report["model"]) == (8, 4, facts.model_id)
    assert {"f1", "auroc", "precision", "recall", "accuracy", "balanced_accuracy", "ece", "baselines"} <= set(report)
    assert sorted(row["id"] for row in report["sessions"]) == sorted(VOLUNTEERS)
    for row in report["sessions"]:
        assert row["label"] in (0, 1)
        assert 0.0 <= row["interval_low"] <= row["probability"] <= row["interval_high"] <= 1.0


def test_train_names_a_missing_data_folder(tmp_path: Path) -> None:
    result = depscreen("train", "--dataset", "eatd", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "nowhere does not exist" in result.stderr
    result = depscreen("train", "--dataset", "eatd", "--out", str(tmp_path))
    assert result.returncode == 2 and "--data" in result.stderr
