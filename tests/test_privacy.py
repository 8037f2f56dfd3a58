"""Privacy: a session with known speech, captions and video leaves no trace of them in the server's log (at
DEBUG), in any file the server wrote (its working directory, home, cache and temp directories), or in the
trace spans it exported (received by a real OTLP receiver)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from depscreen.clients.session import ScreeningClient
from depscreen.engine.media import decode_audio_file
from depscreen.localserver import start_local_server
from depscreen.streamer.state_store import SqliteStore, StoreError, StoreRecord
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES
from .otlp import OtlpReceiver

CAPTION = "my purple giraffe whispers quietly to the violin"
SPOKEN = ("your country", "ask what you")
"""Words of the JFK clip that Whisper transcribes (its first sentence is captioned instead)."""
SECRET_WORDS = (*CAPTION.split()[1:4], "violin", *SPOKEN)


def pcm_16k() -> bytes:
    return decode_audio_file(FIXTURES / "jfk.flac").tobytes()


def frame_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def windows(data: bytes, count: int = 24, size: int = 48) -> list[bytes]:
    """Distinct slices of `data` that would show up in any copy of it."""
    step = max(1, (len(data) - size) // count)
    return [data[i : i + size] for i in range(step // 2, len(data) - size, step)][:count]


def traces(data: bytes, needles: list[bytes]) -> list[bytes]:
    lowered = data.lower()
    return [needle for needle in needles if needle in lowered or needle in data]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.mark.slow
def test_no_media_or_transcript_reaches_logs_or_disk(tmp_path: Path, receiver: OtlpReceiver) -> None:
    places = {name: tmp_path / name for name in ("work", "home", "cache", "tmp")}
    for place in places.values():
        place.mkdir()
    env = {
        **os.environ,
        "HOME": str(places["home"]),
        "XDG_CACHE_HOME": str(places["cache"]),
        "TMPDIR": str(places["tmp"]),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    log_path = tmp_path / "server.log"
    pcm = pcm_16k()
    frames = [frame_jpeg(seed) for seed in range(5)]
    with log_path.open("w") as log:
        server = start_local_server(
            "--device", "cpu", "--log-level", "DEBUG", "--state-store", "sqlite://state/sessions.db",
            output=log, cwd=places["work"], env=env,
        )  # fmt: skip
    try:

        async def interview() -> AsyncIterator[pb.ClientMessage]:
            yield pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
            yield pb.ClientMessage(caption=pb.Caption(start_ms=0, end_ms=3000, text=CAPTION))
            for index, offset in enumerate(range(0, len(pcm), 3200)):
                if index % 10 == 0 and index // 10 < len(frames):
                    image = frames[index // 10]
                    yield pb.ClientMessage(video=pb.VideoFrame(timestamp_ms=index * 100, image=image, format=pb.JPEG))
                yield pb.ClientMessage(audio=pb.AudioChunk(data=pcm[offset : offset + 3200]))
            yield pb.ClientMessage(end=pb.SessionEnd())

        async def run() -> list[pb.ServerMessage]:
            return [reply async for reply in ScreeningClient(server.grpc_target).stream_messages(interview())]

        replies = asyncio.run(run())
        spans = receiver.wait_for("depscreen.session")
    finally:
        server.stop()

    transcript = " ".join(r.sentence.transcript for r in replies if r.WhichOneof("kind") == "sentence").lower()
    assert "giraffe" in transcript and all(words in transcript for words in SPOKEN), "caption and ASR were used"
    words = [word.encode() for word in SECRET_WORDS]
    assert traces(f"SEEN: {CAPTION.upper()}".encode(), words), "the scan finds the words wherever they are"
    assert not traces(log_path.read_bytes(), words), "the server logged transcript words"

    speech = pcm[len(pcm) // 4 : 3 * len(pcm) // 4]
    needles = [
        *words,
        *(word.encode("utf-16-le") for word in SECRET_WORDS),
        *windows(speech),
        *(window for frame in frames for window in windows(frame[600:], count=4)),
    ]
    written = [path for place in places.values() for path in place.rglob("*") if path.is_file()]
    assert places["work"] / "state" / "sessions.db" in written, "the state store of resumable sessions is scanned"
    for path in written:
        assert not traces(path.read_bytes(), needles), f"{path} holds audio, video or transcript"
    assert {"asr", "text_embed", "features_video"} <= {span.name for span in spans}, "the session's stages were traced"
    assert not traces(b"".join(receiver.raw), needles), "an exported span holds audio, video or transcript"


def test_the_state_store_is_for_its_owner_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SQLite store holds the resume key, client session ids and estimates: 0600 files in a 0700 folder, made
    so when missing, tightened (with a warning) when the server's user left them open, refused when shared."""
    folder = tmp_path / "store"
    path = folder / "sessions.db"
    files = (path, path.with_name("sessions.db-wal"), path.with_name("sessions.db-shm"))

    def modes() -> list[int]:
        return [stat.S_IMODE(p.stat().st_mode) for p in (folder, *files)]

    store = SqliteStore(path)
    store.server_key()
    store.save(StoreRecord("record", "patient-A-42", b"nonce", b"payload"), 60.0)
    assert modes() == [0o700, 0o600, 0o600, 0o600]

    folder.chmod(0o755)
    for file in files:
        file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="depscreen.streamer.state_store"):
        SqliteStore(path).close()  # another server starting on the same store, the first one still open
    assert modes() == [0o700, 0o600, 0o600, 0o600]
    assert "set to 0700" in caplog.text and "set to 0600" in caplog.text
    store.close()

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(StoreError, match="a folder of its own"):
        SqliteStore(shared / "sessions.db")
    assert not (shared / "sessions.db").exists()
