"""The engine and server commands: `depscreen segment`, `depscreen train --synthetic`, settings from env."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from depscreen.cli import COMMANDS, build_parser
from depscreen.engine.runtime.checkpoint import DEMO_MODEL, load_checkpoint, save_checkpoint
from depscreen.engine.runtime.interval import INTERVAL_LEVEL
from depscreen.streamer.settings import ServerSettings, settings_from_args

from .conftest import FIXTURES


def depscreen(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "depscreen.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_the_command_list_imports_no_command_and_each_command_registers_its_own() -> None:
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from depscreen.cli import main\ntry: main(['--help'])\nexcept SystemExit: "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'grpc', 'av') or "
            "m.startswith(('depscreen.engine', 'depscreen.streamer', 'depscreen.clients'))))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[-1] == "[]", "depscreen --help imports nothing heavy"
    for name in COMMANDS:
        parser = build_parser(name)
        subcommands = next(a for a in parser._actions if a.dest == "command").choices
        assert name in subcommands, f"{COMMANDS[name].module} registers `{name}`"
        assert name in listing.stdout.split("[]")[0], f"`{name}` is in the list"


WITHOUT = "import sys; sys.modules[{module!r}] = None\nfrom depscreen.cli import main\nmain({argv!r})"
"""Runs `depscreen` as if `module` (a package only an extra installs) were not installed."""


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("sklearn", ["train", "--synthetic", "--out", "unused", "--sessions", "10"], "train"),
        ("matplotlib", ["plot", "unused.jsonl", "--out", "unused.png"], "plot"),
    ],
)
def test_a_command_whose_extra_is_missing_names_it(module: str, argv: list[str], extra: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert f"`depscreen {argv[0]}` needs the [{extra}] extra (missing module {module}" in result.stderr
    assert f"pip install 'depscreen[{extra}]'" in result.stderr
    assert not list(tmp_path.iterdir()), "nothing was written"


def test_segment_json_prints_one_object_per_sentence() -> None:
    result = depscreen("segment", str(FIXTURES / "jfk.flac"), "--json")
    assert result.returncode == 0, result.stderr
    sentences = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(sentences) >= 3
    assert [s["index"] for s in sentences] == list(range(len(sentences)))
    ends = [0] + [s["end_ms"] for s in sentences]
    for s, previous_end in zip(sentences, ends, strict=False):
        assert previous_end <= s["start_ms"] < s["end_ms"] <= 11_000


def test_segment_names_an_unreadable_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wav"
    bogus.write_bytes(b"not audio at all")
    result = depscreen("segment", str(bogus))
    assert result.returncode == 2
    assert "bogus.wav" in result.stderr


def test_train_synthetic_learns_the_planted_signal(tmp_path: Path) -> None:
    result = depscreen("train", "--synthetic", "--out", str(tmp_path), "--sessions", "150", "--epochs", "3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["test_auroc"] > 0.8, summary
    model, facts = load_checkpoint(tmp_path / "model.pt")
    assert "synthetic" in facts.trained_on
    assert float(model.temperature) != 1.0, "temperature scaling was fitted"
    assert not torch.allclose(model.audio_std, torch.ones(25)), "feature scales come from real media"
    assert summary["interval"]["fitted"], summary["interval"]
    assert facts.interval is not None and facts.interval.level == INTERVAL_LEVEL, "the interval was fitted"
    checked = summary["interval"]["cross_validated"]  # each half of 60 held-out sessions may be too few to fit
    assert checked.get("prefixes", 0) > 0 or "needs at least" in checked["reason"], checked

    # an existing checkpoint gets its interval from fresh sessions, weights unchanged
    calibrated = tmp_path / "calibrated.pt"
    facts_without = replace(facts, interval=None)
    save_checkpoint(tmp_path / "old.pt", model, facts_without)
    result = depscreen("calibrate", "--model", str(tmp_path / "old.pt"), "--out", str(calibrated), "--synthetic",
                       "--sessions", "120")  # fmt: skip
    assert result.returncode == 0, result.stderr
    recalibrated, new_facts = load_checkpoint(calibrated)
    assert new_facts.interval is not None and replace(new_facts, interval=None) == facts_without
    weights = zip(recalibrated.state_dict().values(), model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    result = depscreen("calibrate", "--model", str(calibrated), "--out", str(calibrated), "--dataset", "eatd")
    assert result.returncode == 2 and "--data" in result.stderr


def test_settings_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPSCREEN_GRPC_PORT", "6000")
    monkeypatch.setenv("DEPSCREEN_VIDEO_FPS", "2.5")
    args = build_parser("serve").parse_args(["serve", "--max-sessions", "3"])
    settings = settings_from_args(args)
    assert (settings.grpc_port, settings.video_fps, settings.max_sessions) == (6000, 2.5, 3)
    assert settings.http_port == ServerSettings().http_port


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grpc_port": 70000}, "grpc_port=70000"),
        ({"asr": "kaldi"}, "asr='kaldi'"),
        ({"asr_max_batch": 0}, "asr_max_batch=0 must be at least 1"),
        ({"asr_batch_wait_ms": -1.0}, "asr_batch_wait_ms=-1.0 is not between 0 and 1000 ms"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"max_sessions": 0}, "max_sessions"),
        ({"video_fps": 100.0}, "video_fps=100.0"),
    ],
)
def test_invalid_settings_say_what_is_wrong(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ServerSettings(**changes)


def test_serve_refuses_a_model_whose_features_it_cannot_make(tmp_path: Path) -> None:
    model, facts = load_checkpoint(DEMO_MODEL)
    odd = tmp_path / "odd.pt"
    save_checkpoint(odd, model, replace(facts, segmenter={**facts.segmenter, "lookahead_ms": 400}))
    result = depscreen(
        "serve", "--model", str(odd), "--grpc-port", "0", "--http-port", "0", "--asr", "none", "--device", "cpu"
    )
    assert result.returncode == 2
    assert "not starting: model synthetic-demo-s0 was trained on sentences cut with segmenter settings" in result.stderr
    assert "(lookahead_ms): serve it with the depscreen version that trained it, or retrain it" in result.stderr


def test_serve_refuses_a_missing_model(tmp_path: Path) -> None:
    result = depscreen("serve", "--model", str(tmp_path / "missing.pt"), "--grpc-port", "0", "--http-port", "0")
    assert result.returncode == 2
    assert result.stderr.startswith("error: model checkpoint") and "missing.pt" in result.stderr
