"""The README stays true: every server and client setting, segmenter threshold, exported metric and session class
is documented."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from depscreen.clients import ClientSettings
from depscreen.engine.segment import SegmenterSettings
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.settings import ServerSettings, env_name

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_server_setting_is_in_the_configuration_table() -> None:
    for f in fields(ServerSettings):
        flag = "--" + f.name.replace("_", "-")
        assert f"| `{flag}` | `{env_name(f.name)}` |" in README, f.name


def test_every_segmenter_threshold_is_documented_with_its_default() -> None:
    rows = [line for line in README.splitlines() if (line.startswith("| `") and "/" in line) or "| `" in line]
    text = "\n".join(rows)
    for f in fields(SegmenterSettings):
        assert f"`{f.name}`" in text, f.name
        row = next(line for line in rows if f"`{f.name}`" in line)
        assert str(f.default) in row, f"{f.name}: default {f.default} missing from {row!r}"


def test_every_exported_metric_is_in_the_metrics_list() -> None:
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}" in README, name


def test_every_client_setting_is_in_the_client_table_with_its_default() -> None:
    for f in fields(ClientSettings):
        assert f"| `{f.name}` | `{f.default}` |" in README, f.name


def test_every_session_class_is_in_the_names_table_with_its_module() -> None:
    table = README.split("**Names.**", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| `")]
    where: dict[str, list[Path]] = {}
    for row in rows:
        modules = [
            ROOT / m if m.startswith("protos/") else ROOT / "src/depscreen" / m
            for m in re.findall(r"`([^`]+)`", row[2])
        ]
        for name in re.findall(r"`(\w+)`", row[0]):
            where[name] = modules
    package = ROOT / "src/depscreen"
    defined = {
        node.name
        for path in package.rglob("*.py")
        if "v1" not in path.relative_to(package).parts
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and "Session" in node.name
    }
    missing = sorted(defined - where.keys())
    assert not missing, f"add these session classes to README's names table: {missing}"
    for name, modules in where.items():
        assert any(re.search(rf"^\s*(class|message) {name}\b", m.read_text(), re.M) for m in modules), (
            f"{name} is not defined in {modules}"
        )
