"""The typed session core (`interview.py`, `protocol.py`, `convert.py`) loads no model library when imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "ctranslate2", "faster_whisper", "dlib", "cv2")
"""Model and image libraries that take seconds and gigabytes to load."""


@pytest.mark.parametrize("module", ["interview", "protocol", "convert"])
def test_the_typed_core_imports_no_model_library(module: str) -> None:
    script = f"import sys; import depscreen.streamer.{module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]", f"depscreen.streamer.{module} loads {result.stdout}"
