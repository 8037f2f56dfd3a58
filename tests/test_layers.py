"""The import arrows the design promises, read from the source: the engine knows no transport, clients know no
engine, and the session core speaks no wire (its transports convert to and from it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "depscreen"
TRANSPORT = ("grpc", "depscreen.v1", "google.protobuf", "aiortc", "aiohttp")
WIRE = (*TRANSPORT, "av")
"""What the session core never imports: transports, wire messages, and the WebRTC media stack (the engine may
decode files with PyAV)."""
SESSION_CORE = ("interview.py", "session.py", "protocol.py", "admission.py", "clock.py")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names (relative imports resolved against its package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in imported_modules(path) if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    )


@pytest.mark.parametrize("folder, forbidden", [
    ("engine", ("depscreen.streamer", "depscreen.clients", *TRANSPORT)),
    ("clients", ("depscreen.engine", "depscreen.streamer")),
])  # fmt: skip
def test_a_layer_imports_nothing_above_it(folder: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    found = {str(f.relative_to(ROOT)): bad for f in files if (bad := offending(f, forbidden))}
    assert found == {}


@pytest.mark.parametrize("name", SESSION_CORE)
def test_the_session_core_speaks_no_wire(name: str) -> None:
    """The interview, its protocol and its admission take and give typed values: gRPC, protobuf and the
    WebRTC stack stay in the adapters (`service.py`, `convert.py`, `webrtc.py`, `whip.py`)."""
    assert offending(ROOT / "streamer" / name, WIRE) == []
