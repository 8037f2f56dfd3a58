"""The generated stubs in depscreen/v1 are exactly what protoc makes from protos/ (no drift)."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("screening_pb2.py", "screening_pb2.pyi", "screening_pb2_grpc.py")


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "protos" / "depscreen" / "v1" / "screening.proto"),
        ]
    )
    assert code == 0
    for name in GENERATED:
        fresh = (tmp_path / "depscreen" / "v1" / name).read_text()
        committed = (ROOT / "depscreen" / "v1" / name).read_text()
        assert fresh == committed, f"depscreen/v1/{name} is stale: run `make protos` and commit the result"
