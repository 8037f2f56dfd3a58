"""The bundled sample interview: GRID corpus clips (CC BY 4.0, see clients/samples/README.md), shipped as
package data of the client. The demo, the benchmarks, the tests and training's defaults all find it here."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def sample_path() -> Path:
    """Path of the bundled sample interview (an mp4 with a face and speech)."""
    return Path(str(files("depscreen.clients") / "samples" / "grid_interview.mp4"))
