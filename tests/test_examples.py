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
from .netns import PEER_FLAGS, NetworkNamespace, namespaces_available

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


def write_two_voices(folder: Path, rate: int = 16_000) -> tuple[Path, Path]:
    """A made-up two-voice interview as each participant's track (what `two_voices.py` reads): the clinician
    speaks the fixture first, the patient answers with it a second after, silence in each track meanwhile."""
    clinician = write_wav(FIXTURES / "jfk.flac", folder / "clinician.wav", rate)
    with wave.open(str(clinician)) as track:
        speech = track.readframes(track.getnframes())
    with wave.open(str(folder / "patient.wav"), "wb") as patient:
        patient.setnchannels(1)
        patient.setsampwidth(2)
        patient.setframerate(rate)
        patient.writeframes(bytes(2 * (len(speech) // 2 + rate)) + speech)
    return folder / "patient.wav", clinician


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


def test_the_two_voices_example_names_the_question_each_answer_follows(server: RunningServer, tmp_path: Path) -> None:
    patient, clinician = write_two_voices(tmp_path)
    done = run_program([str(EXAMPLES / "two_voices.py"), server.grpc_target, str(patient), str(clinician)], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    answers = [line for line in lines if line.startswith("  answers the question at ")]
    assert answers and len(answers) == sum(line.startswith("sentence ") for line in lines), done.stdout
    question_end_s = 11.0  # the clinician's track: the fixture's 11 s of speech, then silence
    for answer in answers:
        start, end, latency = re.fullmatch(
            r"  answers the question at (\d+\.\d\d)-(\d+\.\d\d) s after (-?\d+) ms", answer
        ).groups()
        assert 0 <= float(start) < float(end) <= question_end_s + 0.5 and int(latency) >= 0, answer
    summary = re.fullmatch(r"summary: (\d+) sentences, p=0\.\d\d; (\d+) clinician sentences", lines[-1])
    assert summary and int(summary[1]) == len(answers) and int(summary[2]) >= 1, lines[-1]


def test_the_two_voices_example_says_what_was_refused_and_why(tmp_path: Path) -> None:
    patient, clinician = write_two_voices(tmp_path, rate=4_000)
    done = run_program([str(EXAMPLES / "two_voices.py"), "127.0.0.1:1", str(patient), str(clinician)], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("invalid input: ") and "sample_rate_hz" in done.stderr, (
        done.stderr
    )
    patient, clinician = write_two_voices(tmp_path)
    done = run_program([str(EXAMPLES / "two_voices.py"), "127.0.0.1:1", str(patient), str(clinician)], tmp_path)
    assert done.returncode == 1 and done.stderr.startswith("error: UNAVAILABLE: "), done.stderr
    assert len(done.stderr.splitlines()) == 1, f"one line, no traceback of the capture task:\n{done.stderr}"


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
        local = namespace.run(start_local_server, "--device", "cpu", "--asr", "none", *PEER_FLAGS, output=log)
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
