"""Docs that run: every program in examples/ and every Python block of the README, run as written against a real
server on loopback (the WebRTC example inside a network namespace the test makes, as aiortc leaves loopback out
of ICE), each ending its session with a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from depscreen.localserver import start_local_server

from .conftest import FIXTURES, RunningServer
from .netns import NetworkNamespace, namespaces_available

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"


def write_wav(source: Path, out: Path, rate: int = 16_000) -> Path:
    """`source` decoded to 16-bit mono PCM at `rate` in a WAV file (what the examples read)."""
    with av.open(str(source)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        chunks = [
            frame.to_ndarray().reshape(-1)
            for decoded in container.decode(audio=0)
            for frame in resampler.resample(decoded)
        ]
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.concatenate(chunks).astype("<i2").tobytes())
    return out


@pytest.fixture(scope="module")
def interview_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(FIXTURES / "jfk.flac", tmp_path_factory.mktemp("examples") / "interview.wav")


def run_program(args: list[str], cwd: Path, server: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "DEPSCREEN_SERVER": server}
    env.pop("DEPSCREEN_TOKEN", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.parametrize("example", ["live_push.py", "sync_thread.py"])
def test_each_grpc_example_streams_an_interview_to_its_summary(
    example: str, server: RunningServer, interview_wav: Path
) -> None:
    done = run_program([str(EXAMPLES / example), server.grpc_target, str(interview_wav)], interview_wav.parent)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"sentence 0: p=0\.\d\d \(.+\)", next(line for line in lines if line.startswith("sentence")))
    assert lines[-1].startswith("summary: ") and "sentences, p=0." in lines[-1]


def test_the_live_push_example_says_a_refusal_with_its_own_exit_status(interview_wav: Path) -> None:
    done = run_program([str(EXAMPLES / "live_push.py"), "127.0.0.1:1", str(interview_wav)], interview_wav.parent)
    assert done.returncode == 1 and done.stderr.startswith("error: UNAVAILABLE: "), done.stderr


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_every_readme_python_block_runs_as_written(server: RunningServer, interview_wav: Path) -> None:
    blocks = readme_python_blocks()
    assert len(blocks) >= 2, "the client snippet and the retry snippet"
    for block in blocks:
        done = run_program(["-c", block], interview_wav.parent, server.grpc_target)
        assert done.returncode == 0, f"{done.stderr}\n--- in the block ---\n{block}"
        assert "Summary(sentences=" in done.stdout, block


def test_the_webrtc_example_streams_over_whip(interview_wav: Path, tmp_path: Path) -> None:
    unavailable = namespaces_available()
    if unavailable is not None:
        pytest.skip(unavailable)
    with NetworkNamespace() as namespace, (tmp_path / "server.log").open("w") as log:
        local = namespace.run(start_local_server, "--device", "cpu", "--asr", "none", output=log)
        try:
            command = [sys.executable, str(EXAMPLES / "webrtc_file.py"), f"{local.http_url}/whip", str(interview_wav)]
            done = namespace.run(subprocess.run, command, capture_output=True, text=True, timeout=300)
        finally:
            local.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("accepted ") and lines[0].endswith("(protocol 1.1)")
    assert any(line.startswith("sentence 0: p=") for line in lines)
    assert lines[-1].startswith("summary: ")
