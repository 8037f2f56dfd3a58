"""The client's API reference, built from its docstrings with pdoc (the [dev] extra): `make docs`, or
`python -m depscreen.apidocs OUT_DIR`; tests/test_apidocs.py builds it."""

from __future__ import annotations

import sys
from pathlib import Path

MODULES = (
    "depscreen.clients",
    "depscreen.clients.session",
    "depscreen.clients.sync",
    "depscreen.clients.updates",
    "depscreen.clients.errors",
    "depscreen.clients.settings",
    "depscreen.clients.whip",
)
"""What the reference covers: the client package (its `__all__`) and the modules that define it."""


def build(out: Path) -> None:
    """Write the reference's HTML pages under `out` (index.html first)."""
    import pdoc

    import depscreen.clients

    depscreen.clients.WhipClient  # noqa: B018 -- loads the lazily imported class so the index lists it
    pdoc.pdoc(*MODULES, output_directory=out)


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/api"))
