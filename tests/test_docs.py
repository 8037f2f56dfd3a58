"""The README stays true: every server and client setting, segmenter threshold and exported metric is documented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from depscreen.clients import ClientSettings
from depscreen.engine.segment import SegmenterSettings
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.settings import ServerSettings, env_name

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


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
