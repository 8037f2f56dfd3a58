"""The core distribution is the client: installed alone into a fresh virtual environment (from this checkout,
its two dependencies from the package index) it holds no torch, runs a live session against a real server on
loopback and `depscreen stream --json`, and says which extra a server command or a media file needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from av.audio.resampler import AudioResampler

from depscreen.localserver import LocalServer, start_local_server

from .conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "NOTICE", "src")
"""What a build of the distribution reads (as the Dockerfiles copy it)."""
SERVER_FLAGS = ("--device", "cpu", "--asr", "none", "--max-speed", "0")

SESSION_SCRIPT = """
import asyncio, sys
from depscreen.clients import ScreeningClient, SentenceUpdate, Summary, SessionInputError

async def main(target, pcm):
    async with ScreeningClient(target) as client:
        async with client.session(sample_rate_hz=48000) as session:
            try:
                await session.send_audio(b"odd")
            except SessionInputError as error:
                print("refused:", error)
            for offset in range(0, len(pcm), 9600):
                await session.send_audio(pcm[offset : offset + 9600])
            await session.end()
            async for update in session.updates():
                print(type(update).__name__, getattr(update, "index", ""))
    heavy = ("torch", "numpy", "av", "depscreen.engine", "depscreen.streamer")
    heavy = sorted(name for name in heavy if name in sys.modules)
    print("heavy modules:", heavy)

asyncio.run(main(sys.argv[1], open(sys.argv[2], "rb").read()))
"""


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with only the core distribution installed (not editable)."""
    root = tmp_path_factory.mktemp("core")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", str(source)],
        check=True,
        timeout=600,
    )
    print(f"core install: {time.monotonic() - started:.1f} s")
    yield venv


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with (tmp_path_factory.mktemp("server") / "server.log").open("w") as log:
        server = start_local_server(*SERVER_FLAGS, output=log)
    yield server
    server.stop()


def pcm_48k(path: Path) -> bytes:
    """A media file's audio as 48 kHz mono s16le (what a live source would capture)."""
    resampler = AudioResampler(format="s16", layout="mono", rate=48_000)
    pcm = bytearray()
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pcm += out.to_ndarray().tobytes()
    return bytes(pcm)


def run(venv: Path, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a program of `venv`, from inside the venv unless `cwd` says where."""
    command = [str(venv / "bin" / args[0]), *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd or venv)


@pytest.mark.slow
def test_the_core_distribution_installs_without_the_server(core_venv: Path) -> None:
    listed = run(
        core_venv, "python", "-c", "import importlib.metadata as m; print(*(d.name for d in m.distributions()))"
    )
    names = {name.lower() for name in listed.stdout.split()}
    assert {"depscreen", "grpcio", "protobuf"} <= names
    assert not names & {"torch", "av", "rich", "aiortc", "numpy", "opencv-contrib-python-headless"}, names
    typed = run(core_venv, "python", "-c", "import depscreen, pathlib; print(pathlib.Path(depscreen.__file__).parent)")
    assert (Path(typed.stdout.strip()) / "py.typed").is_file(), "the stubs are declared typed"


@pytest.mark.slow
def test_the_installed_package_is_what_python_imports_from_the_checkout_root(core_venv: Path) -> None:
    """A new user's first step after `pip install .`: nothing in the checkout root shadows the package (the
    sources live under src/), so the client imports from the installed copy."""
    script = "import depscreen.clients as c; from depscreen.clients import ScreeningClient; print(c.__file__)"
    found = run(core_venv, "python", "-c", script, cwd=ROOT)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(core_venv), found.stdout


@pytest.mark.slow
def test_a_core_client_runs_a_live_session(core_venv: Path, local_server: LocalServer, tmp_path: Path) -> None:
    pcm = tmp_path / "interview.s16le"
    pcm.write_bytes(pcm_48k(FIXTURES / "jfk.flac"))
    result = run(core_venv, "python", "-c", SESSION_SCRIPT, local_server.grpc_target, str(pcm))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused: audio chunk of 3 bytes is not whole 16-bit frames")
    kinds = [line.split()[0] for line in lines[1:-1]]
    assert kinds[0] == "Accepted" and kinds[-1] == "Summary"
    indices = [int(line.split()[1]) for line in lines[1:-1] if line.startswith("SentenceUpdate")]
    assert indices == list(range(len(indices))) and len(indices) >= 2
    assert lines[-1] == "heavy modules: []", "the client imports neither the engine nor the media stack"


@pytest.mark.slow
def test_core_commands_name_the_extra_they_need(core_venv: Path) -> None:
    serve = run(core_venv, "depscreen", "serve")
    assert serve.returncode == 2
    assert "`depscreen serve` needs the server's dependencies" in serve.stderr
    assert "pip install 'depscreen[server]'" in serve.stderr
    stream = run(core_venv, "depscreen", "stream", str(FIXTURES / "jfk.flac"), "--json")
    assert stream.returncode == 2
    assert "needs the [media] extra" in stream.stderr and "pip install 'depscreen[media]'" in stream.stderr
    live = run(core_venv, "depscreen", "stream", str(FIXTURES / "jfk.flac"))
    assert live.returncode == 2 and "the live view needs the [cli] extra" in live.stderr
    usage = run(core_venv, "depscreen", "--help")
    assert usage.returncode == 0 and "stream" in usage.stdout
    missing = next(line for line in usage.stdout.splitlines() if line.startswith("not installed:"))
    assert {"segment", "train", "serve", "bench"} <= set(missing.replace(",", " ").split()), missing


RETRY_SCRIPT = """
import importlib.util, sys
import grpc.aio
import depscreen
from depscreen.clients.errors import retry_after_s

absent = [name for name in ("google.rpc", "grpc_status") if importlib.util.find_spec(name) is None]
trailer = grpc.aio.Metadata(("grpc-status-details-bin", bytes.fromhex(sys.argv[1])))
print(retry_after_s(trailer), *absent, depscreen.__version__)
"""


@pytest.mark.slow
def test_the_examples_run_and_the_retry_hint_reads_in_the_core_install(
    core_venv: Path, local_server: LocalServer, tmp_path: Path
) -> None:
    from google.protobuf import duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    from .test_examples import write_two_voices, write_wav

    wav = write_wav(FIXTURES / "jfk.flac", tmp_path / "interview.wav")
    tracks = [str(track) for track in write_two_voices(tmp_path)]
    for example, audio in (("live_push.py", [str(wav)]), ("sync_thread.py", [str(wav)]), ("two_voices.py", tracks)):
        done = run(core_venv, "python", str(ROOT / "examples" / example), local_server.grpc_target, *audio)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1].startswith("summary: "), done.stdout
    status = status_pb2.Status(code=8, message="full")
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=10)))
    hint = run(core_venv, "python", "-c", RETRY_SCRIPT, status.SerializeToString().hex())
    assert hint.returncode == 0, hint.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert hint.stdout.split() == ["10.0", "google.rpc", "grpc_status", version], "read without grpcio-status"
