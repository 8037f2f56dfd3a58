"""`--record DIR`: a real server records exactly what a session received and what it sent back; a recording
that fails stops without hurting the interview; an unusable folder stops the server at startup."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from depscreen.clients.media import MediaSource
from depscreen.clients.session import ScreeningClient
from depscreen.engine.features.face import EncodedImage
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.sample import sample_path
from depscreen.streamer.auth import token_fingerprint
from depscreen.streamer.interview import Audio, Video
from depscreen.streamer.record import RecordBudget, RecordFull, SessionRecorder
from depscreen.streamer.server import open_record_folder
from depscreen.streamer.settings import SettingsError
from depscreen.v1 import screening_pb2 as pb

CAPTIONS = [
    pb.Caption(start_ms=200, end_ms=2400, text="lay white at b seven again"),
    pb.Caption(start_ms=3200, end_ms=5600, text="bin blue by s nine please — 请再说一遍"),
]
START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
END = pb.ClientMessage(end=pb.SessionEnd())


def sample_messages(seconds: float = 9.0) -> list[pb.ClientMessage]:
    """The first `seconds` of the bundled interview as the client sends it: audio, JPEG frames, captions."""
    with MediaSource(sample_path(), video_fps=5.0) as source:
        return [t.message for t in source.messages(chunk_ms=100, captions=CAPTIONS) if t.media_ms <= seconds * 1000]


@pytest.fixture(scope="module")
def recording_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, Path]]:
    root = tmp_path_factory.mktemp("record") / "sessions"
    server = start_local_server("--device", "cpu", "--asr", "none", "--max-speed", "0", "--record", str(root))
    yield server, root
    server.stop()


async def _collect(server: LocalServer, messages: AsyncIterator[pb.ClientMessage]) -> list[pb.ServerMessage]:
    return [m async for m in ScreeningClient(server.grpc_target).stream_messages(messages)]


async def _as_stream(messages: list[pb.ClientMessage]) -> AsyncIterator[pb.ClientMessage]:
    for message in messages:
        yield message


def test_a_recording_holds_exactly_what_was_received_and_sent(recording_server: tuple[LocalServer, Path]) -> None:
    server, root = recording_server
    sent = sample_messages()
    replies = asyncio.run(_collect(server, _as_stream([START, *sent, END])))
    session_id = replies[0].accepted.session_id
    folder = root / session_id / "stream-0"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    audio = b"".join(m.audio.data for m in sent if m.WhichOneof("kind") == "audio")
    with wave.open(str(folder / "audio.wav"), "rb") as recorded:
        assert (recorded.getframerate(), recorded.getnchannels(), recorded.getsampwidth()) == (16_000, 1, 2)
        assert recorded.readframes(recorded.getnframes()) == audio
    assert stat.S_IMODE((folder / "audio.wav").stat().st_mode) == 0o600

    frames = {m.video.timestamp_ms: m.video for m in sent if m.WhichOneof("kind") == "video"}
    assert len(frames) >= 40
    lines = [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]
    shed = replies[-1].summary.dropped_video_frames  # frames shed under load are not analysed, so not recorded
    assert len(lines) == len(frames) - shed and {line["timestamp_ms"] for line in lines} <= set(frames)
    assert len(list((folder / "video").iterdir())) == len(lines)
    for line in lines:
        frame = frames[line["timestamp_ms"]]
        assert (folder / "video" / f"{frame.timestamp_ms}.jpeg").read_bytes() == frame.image

    captions = [json.loads(line) for line in (folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [c["text"] for c in captions] == [c.text for c in CAPTIONS]

    updates = [m.sentence for m in replies if m.WhichOneof("kind") == "sentence"]
    assert updates, "the sample's first seconds hold sentences"
    recorded_sentences = [json.loads(line) for line in (folder / "sentences.jsonl").read_text().splitlines()]
    assert [(s.get("index", 0), s.get("start_ms", "0"), s.get("transcript", "")) for s in recorded_sentences] == [
        (u.index, str(u.start_ms), u.transcript) for u in updates
    ]
    assert recorded_sentences[0]["estimate"]["probability"] == pytest.approx(updates[0].estimate.probability)

    again = asyncio.run(_collect(server, _as_stream([START, *sent[:20], END])))
    second = root / again[0].accepted.session_id / "stream-0" / "audio.wav"
    with wave.open(str(second), "rb") as recorded:
        assert recorded.getnframes() * 2 == sum(len(m.audio.data) for m in sent[:20] if m.WhichOneof("kind") == "audio")


def test_a_failing_recording_stops_without_hurting_the_interview(recording_server: tuple[LocalServer, Path]) -> None:
    server, root = recording_server
    sent = sample_messages()
    before = read_counter(server.metrics(), 'depscreen_errors_total{code="record"}')

    async def messages() -> AsyncIterator[pb.ClientMessage]:
        session = pb.ClientMessage()
        session.CopyFrom(START)
        session.start.session_id = "recording-removed-midway"
        yield session
        for index, message in enumerate(sent):
            if index == len(sent) // 2:
                folder = root / "recording-removed-midway" / "stream-0"
                frames = folder / "frames.jsonl"
                for _ in range(400):
                    if frames.is_file() and frames.stat().st_size:
                        break
                    await asyncio.sleep(0.05)
                shutil.rmtree(folder)
            yield message
        yield END

    replies = asyncio.run(_collect(server, messages()))
    kinds = [m.WhichOneof("kind") for m in replies]
    assert kinds[0] == "accepted" and kinds[-1] == "summary" and "sentence" in kinds
    assert read_counter(server.metrics(), 'depscreen_errors_total{code="record"}') == before + 1
    assert not (root / "recording-removed-midway" / "stream-0").exists(), "nothing was written after the failure"


def _start(session_id: str) -> pb.ClientMessage:
    message = pb.ClientMessage()
    message.CopyFrom(START)
    message.start.session_id = session_id
    return message


def _outcome(server: LocalServer, messages: list[pb.ClientMessage]) -> tuple[list[str], grpc.StatusCode]:
    async def run() -> tuple[list[str], grpc.StatusCode]:
        kinds = []
        try:
            async for reply in ScreeningClient(server.grpc_target).stream_messages(_as_stream(messages)):
                kinds.append(reply.WhichOneof("kind"))
        except grpc.aio.AioRpcError as error:
            return kinds, error.code()
        return kinds, grpc.StatusCode.OK

    return asyncio.run(run())


def test_refused_and_dropped_inputs_leave_no_byte_on_disk(recording_server: tuple[LocalServer, Path]) -> None:
    """Once a 4 M-character caption the pipeline dropped went to disk whole, and so did a dropped 3 MB frame: now
    the recorder sees an input only after the session accepted it."""
    server, root = recording_server
    second = [m for m in sample_messages(1.0) if m.WhichOneof("kind") == "audio"]
    huge_caption = pb.ClientMessage(caption=pb.Caption(start_ms=0, end_ms=900, text="ü" * 1_500_000))
    corrupt = pb.ClientMessage(
        video=pb.VideoFrame(timestamp_ms=100, image=b"\xff\xd8" + b"\x07" * 3_000_000, format=pb.JPEG)
    )
    dropped = _outcome(server, [_start("dropped-inputs"), *second, huge_caption, corrupt, END])
    assert dropped[0][-1] == "summary" and dropped[1] == grpc.StatusCode.OK
    folder = root / "dropped-inputs" / "stream-0"
    assert (folder / "captions.jsonl").stat().st_size == (folder / "frames.jsonl").stat().st_size == 0
    assert not list((folder / "video").iterdir())
    audio_bytes = sum(len(m.audio.data) for m in second)
    written = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert written < audio_bytes + 8192  # the audio, stream.json and a sentence

    too_long = pb.ClientMessage(audio=pb.AudioChunk(data=bytes(2 * 16_000 * 6)))  # 6 s: over max_chunk_ms
    refused = _outcome(server, [_start("refused-chunk"), too_long])  # no write after it: grpc/grpc#36066
    assert refused[1] == grpc.StatusCode.INVALID_ARGUMENT
    for _ in range(200):  # the server closes the recording (its WAV header) once the stream has ended
        if read_counter(server.metrics(), "depscreen_sessions_active") == 0:
            break
        time.sleep(0.05)
    with wave.open(str(root / "refused-chunk" / "stream-0" / "audio.wav"), "rb") as recorded:
        assert recorded.getnframes() == 0

    caption = pb.ClientMessage(caption=pb.Caption(start_ms=0, end_ms=500, text="so I told her"))
    flood = _outcome(server, [_start("caption-flood"), *[caption] * 21])  # the 21st is the last write: #36066
    assert flood[1] == grpc.StatusCode.RESOURCE_EXHAUSTED  # 10 per second of audio, 2 s ahead: the 21st ends it
    recorded = (root / "caption-flood" / "stream-0" / "captions.jsonl").read_text().splitlines()
    assert len(recorded) == 20


def test_tenants_choosing_the_same_session_id_record_into_their_own_folders(tmp_path: Path) -> None:
    tokens, root = tmp_path / "tokens", tmp_path / "sessions"
    tenants = ("tenant-a-token-0123456789", "tenant-b-token-0123456789")
    tokens.write_text("".join(f"{token}\n" for token in tenants))
    server = start_local_server("--device", "cpu", "--asr", "none", "--auth-tokens", str(tokens), "--record", str(root))
    try:
        for tenant in tenants:

            async def run(token: str = tenant) -> list[pb.ServerMessage]:
                messages = _as_stream([_start("patient-A-42"), *sample_messages(1.0), END])
                return [m async for m in ScreeningClient(server.grpc_target, token=token).stream_messages(messages)]

            assert asyncio.run(run())[-1].WhichOneof("kind") == "summary"
    finally:
        server.stop()
    fingerprints = [token_fingerprint(token) for token in tenants]
    assert sorted(p.name for p in root.iterdir()) == sorted(f"principal-{f}" for f in fingerprints)
    for fingerprint in fingerprints:
        folder = root / f"principal-{fingerprint}" / "patient-A-42" / "stream-0"
        assert json.loads((folder / "stream.json").read_text())["principal"] == fingerprint
        assert stat.S_IMODE(folder.parent.parent.stat().st_mode) == 0o700
        assert not (folder.parent / "stream-1").exists(), "no tenant's stream went into the other's folder"


def test_record_budgets_stop_a_recording_before_it_writes_past_them(tmp_path: Path) -> None:
    failures: list[OSError] = []
    budget = RecordBudget(session_bytes=10_000, total_bytes=25_000)
    first = SessionRecorder(tmp_path, "budgeted", 16_000, 1, on_failure=failures.append, budget=budget)
    for _ in range(4):
        first.took(Audio(bytes(3_200)))
    first.close()
    assert len(failures) == 1 and "record_session_bytes=10000" in failures[0].strerror
    with wave.open(str(first.folder / "audio.wav"), "rb") as recorded:
        assert recorded.getnframes() * 2 == 9_600, "the fourth chunk with no room was not written, nor any after it"
    assert first.bytes_written <= 10_000

    second = SessionRecorder(tmp_path, "budgeted", 16_000, 1, on_failure=failures.append, budget=budget)
    for _ in range(3):
        second.took(Audio(bytes(3_200)))
    second.close()
    third = SessionRecorder(tmp_path, "budgeted", 16_000, 1, on_failure=failures.append, budget=budget)
    for _ in range(3):
        third.took(Audio(bytes(3_200)))
    third.close()
    assert "record_total_bytes=25000" in failures[-1].strerror
    assert budget.used <= 25_000
    with pytest.raises(RecordFull, match="record_total_bytes"):
        SessionRecorder(tmp_path, "budgeted", 16_000, 1, budget=RecordBudget(total_bytes=100, used=100))


def test_each_stream_of_a_session_records_into_its_own_private_folder(tmp_path: Path) -> None:
    first = SessionRecorder(tmp_path, "interview-3", 48_000, 2)
    second = SessionRecorder(tmp_path, "interview-3", 48_000, 2)
    assert (first.folder.name, second.folder.name) == ("stream-0", "stream-1")
    first.audio(bytes(range(256)) * 4)
    first.video(Video(40, EncodedImage(b"\x01\x02\x03" * 4, "rgb24", 2, 2)))
    first.close()
    first.close()
    second.close()
    with wave.open(str(first.folder / "audio.wav"), "rb") as recorded:
        assert (recorded.getframerate(), recorded.getnchannels(), recorded.getnframes()) == (48_000, 2, 256)
    assert (first.folder / "video" / "40.rgb24").read_bytes() == b"\x01\x02\x03" * 4
    assert json.loads((first.folder / "frames.jsonl").read_text()) == {
        "timestamp_ms": 40, "format": "rgb24", "width": 2, "height": 2,
    }  # fmt: skip
    assert stat.S_IMODE((tmp_path / "interview-3").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "session_id", ["../../escaped", "/tmp/absolute", "a/b", ".hidden", "x" * 129, "名字 with space"]
)
def test_a_session_id_cannot_write_outside_the_record_folder(tmp_path: Path, session_id: str) -> None:
    root = tmp_path / "sessions"
    recorder = SessionRecorder(root, session_id, 16_000, 1)
    recorder.close()
    assert recorder.folder.parent.parent == root and recorder.folder.parent.name.startswith("session-")
    assert json.loads((recorder.folder / "stream.json").read_text())["session_id"] == session_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions"], "nothing was written beside the folder"


def test_an_unusable_record_folder_stops_the_server_with_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SettingsError, match=r"cannot write there.*leave record empty"):
        open_record_folder(blocker / "sessions")
