"""The API reference builds from the docstrings (pdoc) without a warning, and documents the public client: its
classes, the typed errors with their retry hint, the updates and the settings."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from depscreen import apidocs


def test_the_api_reference_builds_and_covers_the_public_client(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apidocs.build(tmp_path)
    assert [str(w.message) for w in caught if "pdoc" in w.filename] == []
    index = (tmp_path / "depscreen" / "clients.html").read_text()
    text = re.sub(r"<[^>]+>", "", index)
    for name in ("ScreeningClient", "SyncScreeningClient", "WhipClient", "RefusedError", "Reconnecting", "Notice"):
        assert name in text, name
    errors = re.sub(r"<[^>]+>", "", (tmp_path / "depscreen" / "clients" / "errors.html").read_text())
    assert "retry_after_s" in errors and "suggested wait before trying again" in errors, "attribute docstrings"
    for module in apidocs.MODULES[1:]:
        assert (tmp_path / (module.replace(".", "/") + ".html")).exists(), module
