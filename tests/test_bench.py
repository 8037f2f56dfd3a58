"""The load benchmark runs end to end against a real server and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import FIXTURES


def test_bench_load_json_with_bad_clients() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "bench", "load", "--sessions", "2", "--duration", "6",
         "--media", str(FIXTURES / "jfk.flac"), "--speed", "2", "--bad-clients", "--json",
         "--server-arg=--asr=none", "--server-arg=--stall-timeout-s=2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    for key in ("sessions", "p95_latency_s", "shed_video_frames", "rss_per_session_mb", "server_cpu_cores"):
        assert key in report, key
    assert report["sessions"] == 2 and report["failed_sessions"] == 0 and report["sentences"] >= 2
    assert 0 < report["p50_latency_s"] <= report["p95_latency_s"] <= report["p99_latency_s"]
    assert report["sessions_active_after"] == 0 and report["state_slots_after"] == 0, "nothing leaked"
    bad = report["bad_clients"]
    assert "DEADLINE_EXCEEDED" in bad["staller"]
    assert "sentences scored" in bad["fast"] and "without `end`" in bad["vanisher"]


def test_bench_load_counts_transcribed_and_shed_asr_sentences_and_where_asr_time_goes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "bench", "load", "--sessions", "1", "--duration", "11",
         "--media", str(FIXTURES / "jfk.flac"), "--no-video", "--json", "--server-arg=--asr=tiny.en"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["transcribed_sentences"] >= 2 and report["shed_asr_sentences"] == 0, report
    parts = report["asr_ms_per_speech_second"]
    assert set(parts) == {"features", "encode", "tail", "generate", "fallback", "no_speech_check"}, report
    assert parts["encode"] > 0 and parts["generate"] > 0, report
    assert report["asr_decodes"]["own"] >= report["transcribed_sentences"], report
    assert report["asr_decodings_per_call"]["whisper-tiny.en"] >= 1, "every model call is counted with its size"
    close = report["asr_close_decodes"]
    assert set(close) == {"own", "fallback", "no_speech_check"}, report
    assert sum(close.values()) <= sum(report["asr_decodes"].values()), "the close path is part of all decodings"
    assert report["asr_close_wait_p95_s"] is not None, "every transcribed sentence's close is timed"


def test_bench_asr_compares_the_30s_window_with_own_length_windows(tmp_path) -> None:
    speech = tmp_path / "speech"
    (speech / "librivox").mkdir(parents=True)
    (speech / "jfk").mkdir()
    (speech / "jfk" / "jfk.flac").symlink_to(FIXTURES / "jfk.flac")
    (speech / "jfk" / "transcript.txt").symlink_to(FIXTURES / "jfk.txt")
    out = tmp_path / "asr.md"
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "bench", "asr", "--data", str(tmp_path), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    for method in ("before (30 s window)", "own length, whole sentence", "pieces while speaking"):
        assert f"| en | all | {method} |" in table, table
        row = next(line for line in table.splitlines() if line.startswith(f"| en (WER) | {method} |"))
        assert float(row.split("|")[3].split("%")[0]) < 40, row
    assert "fellow" not in result.stdout + result.stderr, "transcripts stay in memory"


def test_bench_load_sessions_start_in_the_language_asked() -> None:
    import asyncio

    from depscreen.clients.media import TimedMessage
    from depscreen.loadbench import paced_session
    from depscreen.v1 import screening_pb2 as pb

    async def first(**language: str) -> pb.ClientMessage:
        chunk = TimedMessage(message=pb.ClientMessage(audio=pb.AudioChunk(data=b"\0\0" * 160)), media_ms=10)
        return await anext(paced_session([chunk], 0.01, 0, **language))

    assert asyncio.run(first(language="zh")).start.language == "zh"
    assert asyncio.run(first()).start.language == "", "English by default, as the server reads an empty tag"


def test_bench_negotiation_refuses_every_hostile_request_and_reports_both_targets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "bench", "negotiation", "--rounds", "1", "--duration", "4",
         "--media", str(FIXTURES / "jfk.flac"), "--interval", "0.5", "--server-arg=--asr=none"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cells = [line.strip("| ").split(" | ") for line in result.stdout.splitlines() if line.startswith("| ")]
    answers = {row[0]: row[2] for row in cells}
    fitting = next(kind for kind in answers if kind.startswith("PATCH") and "12000" not in kind)
    expected = {
        "offer, 12000 candidates": "413",
        "small offer (opens a session)": "201",
        "PATCH, 12000 candidates": "413",
        fitting: "400",
        "DELETE": "200",
    }
    for kind, status in expected.items():
        assert answers[kind].startswith(f"{status} x") and "," not in answers[kind], (kind, result.stdout)
    assert {"alone", "beside the hostile client"} <= set(answers), result.stdout
    assert "Beside / alone: **" in result.stdout and "Slowest /healthz" in result.stdout


def test_bench_asr_batch_reports_throughput_per_batch_size_with_the_same_texts(tmp_path) -> None:
    out = tmp_path / "batch.md"
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "bench", "asr", "--data", str(tmp_path), "--batch", "1,4",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| GRID sample |")]
    assert [int(row[3]) for row in rows] == [1, 4], rows
    alone, batched = rows
    assert float(alone[6]) == 1.0 and float(batched[6]) > 1.5, "decodings of the GRID sample share calls at 4"
    assert int(alone[4]) == int(alone[5]) and float(batched[9]) > 0, rows
    assert batched[11].strip() == "yes", "each text at batch 4 is its text at batch 1"
    assert not {"blue", "green", "white"} & set((result.stdout + result.stderr).split()), "transcripts stay in memory"
    bad = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "bench", "asr", "--data", str(tmp_path), "--batch", "0,4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "is not a comma-separated list of batch sizes >= 1" in bad.stderr
