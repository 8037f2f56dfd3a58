"""The generated stubs in src/depscreen/v1 are exactly what protoc makes from protos/ (no drift), and protos/ breaks
nothing a client of the last release relies on (buf's breaking-change check against its descriptor set)."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("screening_pb2.py", "screening_pb2.pyi", "screening_pb2_grpc.py")
RELEASED = ROOT / "protos" / "released" / "depscreen-v1-0.1.0.binpb"
"""The descriptor set of the last release's wire contract (`make proto-check` compares protos/ with it)."""
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def buf() -> str:
    """The buf binary `make` installs (or one on PATH); skips the test naming the target when there is none."""
    found = str(BUF) if BUF.exists() else shutil.which("buf")
    if found is None:
        pytest.skip("buf is not installed: `make proto-check` installs it from npm (@bufbuild/buf)")
    return found


def breaking(protos: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [buf(), "breaking", str(protos), "--against", str(RELEASED)], capture_output=True, text=True, timeout=120
    )


def test_the_contract_breaks_nothing_of_the_last_release() -> None:
    done = breaking(ROOT / "protos")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_check_catches_a_removed_a_retyped_and_a_renumbered_field(tmp_path: Path) -> None:
    proto = (ROOT / "protos" / "depscreen" / "v1" / "screening.proto").read_text()
    broken = (
        proto.replace("  bool disable_asr = 5;\n", "")
        .replace("  string asr_model = 6;", "  int32 asr_model = 6;")
        .replace("  int64 resume_from_ms = 4;", "  int64 resume_from_ms = 44;")
    )
    assert broken.count("\n") == proto.count("\n") - 1, "the three edits applied"
    (tmp_path / "depscreen" / "v1").mkdir(parents=True)
    (tmp_path / "depscreen" / "v1" / "screening.proto").write_text(broken)
    done = breaking(tmp_path)
    assert done.returncode != 0
    assert 'name "disable_asr" on message "SessionStart" was deleted' in done.stdout
    assert 'name "asr_model" on message "SessionAccepted" changed type from "string" to "int32"' in done.stdout
    assert 'name "resume_from_ms" on message "SessionAccepted"' in done.stdout


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"-I{resources.files('grpc_tools') / '_proto'}",  # the well-known types, as `python -m` adds them
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "protos" / "depscreen" / "v1" / "screening.proto"),
        ]
    )
    assert code == 0
    for name in GENERATED:
        fresh = (tmp_path / "depscreen" / "v1" / name).read_text()
        committed = (ROOT / "src" / "depscreen" / "v1" / name).read_text()
        assert fresh == committed, f"src/depscreen/v1/{name} is stale: run `make protos` and commit the result"
