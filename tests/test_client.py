"""Client library: media messages, captions, pacing, the live view, `depscreen stream` and the demo sample."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import av
import cv2
import grpc
import numpy as np
import pytest
from rich.console import Console

from depscreen.clients import cli
from depscreen.clients.captions import CaptionError, parse_captions, read_captions
from depscreen.clients.live import LiveState, render, sparkline
from depscreen.clients.media import (
    BYTES_PER_MS,
    AudioSendLog,
    MediaError,
    MediaSource,
    Pacer,
    TimedMessage,
    interleave,
)
from depscreen.clients.session import ScreeningClient
from depscreen.clients.updates import Interval, update_of
from depscreen.v1 import screening_pb2

from .conftest import FIXTURES, RunningServer

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "depscreen" / "clients" / "samples"
DEMO = SAMPLES / "grid_interview.mp4"
GRID = REPO.parent / "shared" / "data" / "video" / "grid"
GRID_CLIP = GRID / "bbaf2n.mpg"
JFK = REPO.parent / "shared" / "data" / "speech" / "jfk" / "jfk.flac"

needs_grid = pytest.mark.skipif(not GRID_CLIP.exists(), reason=f"GRID clips not found under {GRID}")
needs_jfk = pytest.mark.skipif(not JFK.exists(), reason=f"{JFK} not found")
MEDIA = [pytest.param(GRID_CLIP, marks=needs_grid, id="grid-clip"), pytest.param(DEMO, id="demo-sample")]


def _kind(message: screening_pb2.ClientMessage) -> str:
    return message.WhichOneof("kind")


def _messages(path: Path, **options: object) -> list[TimedMessage]:
    chunk_ms = options.pop("chunk_ms", 100)
    captions = options.pop("captions", ())
    with MediaSource(path, **options) as source:
        return list(source.messages(chunk_ms=chunk_ms, captions=captions))


def _audio_seconds(path: Path) -> float:
    """The first audio stream's length, decoded independently of the client code."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.sample_rate


# --------------------------------------------------------------------------------------------- media


@pytest.mark.parametrize("path", MEDIA)
def test_media_messages_are_in_media_time_order(path: Path) -> None:
    timed = _messages(path)
    sent_ms = 0.0
    last_ms = 0.0
    for item in timed:
        message = item.message
        if _kind(message) == "audio":
            start_ms = sent_ms
            sent_ms += len(message.audio.data) / BYTES_PER_MS
            assert item.media_ms == pytest.approx(sent_ms)
        else:
            start_ms = message.video.timestamp_ms if _kind(message) == "video" else message.caption.start_ms
            assert start_ms <= sent_ms, "a frame went out before the audio reached its timestamp"
            assert item.media_ms == pytest.approx(sent_ms)
        assert start_ms >= last_ms
        last_ms = start_ms
    assert _kind(timed[0].message) == "audio"


@pytest.mark.parametrize("path", MEDIA)
@pytest.mark.parametrize("chunk_ms", [100, 250])
def test_audio_chunks_cover_the_whole_file(path: Path, chunk_ms: int) -> None:
    chunks = [item.message.audio.data for item in _messages(path, chunk_ms=chunk_ms) if _kind(item.message) == "audio"]
    chunk_bytes = chunk_ms * BYTES_PER_MS
    assert all(len(chunk) == chunk_bytes for chunk in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_bytes
    total = sum(len(chunk) for chunk in chunks)
    assert abs(total - _audio_seconds(path) * 32_000) <= chunk_bytes
    samples = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert np.abs(samples).max() > 1000, "speech should not decode to silence"


@pytest.mark.parametrize("path", MEDIA)
def test_video_frames_are_sampled_at_5_fps_as_jpeg(path: Path) -> None:
    frames = [item.message.video for item in _messages(path) if _kind(item.message) == "video"]
    seconds = _audio_seconds(path)
    assert abs(len(frames) - seconds * 5) <= 2
    stamps = [frame.timestamp_ms for frame in frames]
    assert stamps[0] == 0
    assert all(160 <= later - earlier <= 240 for earlier, later in itertools.pairwise(stamps))
    for frame in frames[:: max(1, len(frames) // 8)]:
        assert frame.format == screening_pb2.JPEG
        assert (frame.width, frame.height) == (360, 288)
        image = cv2.imdecode(np.frombuffer(frame.image, dtype=np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (288, 360, 3)


@pytest.mark.parametrize("video_fps", [2.0, 12.5])
def test_video_fps_sets_the_frame_spacing(video_fps: float) -> None:
    frames = [item.message.video for item in _messages(DEMO, video_fps=video_fps) if _kind(item.message) == "video"]
    gaps = np.diff([frame.timestamp_ms for frame in frames])
    assert np.median(gaps) == pytest.approx(1000 / video_fps, abs=40)


def test_jpeg_frames_keep_the_colours() -> None:
    """The encoded JPEG (BGR when decoded by cv2) matches the decoded video frame channel by channel."""
    first = next(item.message.video for item in _messages(DEMO) if _kind(item.message) == "video")
    jpeg = cv2.imdecode(np.frombuffer(first.image, dtype=np.uint8), cv2.IMREAD_COLOR).astype(float)
    with av.open(str(DEMO)) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    red, blue = rgb[..., 0].mean(), rgb[..., 2].mean()
    assert abs(red - blue) > 40, "the sample frame must tell red from blue for this test to mean anything"
    assert jpeg[..., 2].mean() == pytest.approx(red, abs=4)
    assert jpeg[..., 0].mean() == pytest.approx(blue, abs=4)


def test_captions_are_merged_when_the_audio_reaches_them() -> None:
    captions = [
        screening_pb2.Caption(start_ms=2500, end_ms=3000, text="third"),
        screening_pb2.Caption(start_ms=150, end_ms=900, text="first"),
        screening_pb2.Caption(start_ms=1000, end_ms=2000, text="second"),
        screening_pb2.Caption(start_ms=60_000, end_ms=61_000, text="after the end"),
    ]
    timed = _messages(DEMO, video=False, captions=captions)
    sent_ms = 0.0
    seen: list[tuple[str, float]] = []
    for item in timed:
        if _kind(item.message) == "audio":
            sent_ms += len(item.message.audio.data) / BYTES_PER_MS
        else:
            assert _kind(item.message) == "caption"
            seen.append((item.message.caption.text, sent_ms))
    assert seen == [("first", 200), ("second", 1000), ("third", 2500), ("after the end", sent_ms)]
    assert _kind(timed[-1].message) == "caption"


def test_audio_waits_for_video_decoded_behind_it() -> None:
    """A demuxer can hand out a second of audio before the frames of that second: chunks are held back until
    the video has caught up, so frames still go out right after the audio that reaches them."""
    audio = [bytes(16 * BYTES_PER_MS)] * 62
    frames = [
        screening_pb2.VideoFrame(timestamp_ms=ms, image=b"jpeg" if ms % 200 == 0 else b"") for ms in range(0, 1000, 40)
    ]
    decoded: list[bytes | screening_pb2.VideoFrame] = [*audio, *frames, bytes(8 * BYTES_PER_MS)]
    order = []
    for item in interleave(decoded, chunk_ms=100):
        if _kind(item.message) == "audio":
            order.append(("audio", item.media_ms))
        else:
            order.append(("video", item.message.video.timestamp_ms))
    assert order == [
        ("audio", 100), ("video", 0), ("audio", 200), ("video", 200), ("audio", 300), ("audio", 400), ("video", 400),
        ("audio", 500), ("audio", 600), ("video", 600), ("audio", 700), ("audio", 800), ("video", 800),
        ("audio", 900), ("audio", 1000),
    ]  # fmt: skip


@needs_jfk
def test_audio_only_file_and_no_video_option() -> None:
    assert {_kind(item.message) for item in _messages(JFK)} == {"audio"}
    assert {_kind(item.message) for item in _messages(DEMO, video=False)} == {"audio"}
    with MediaSource(DEMO, video=False) as source:
        assert not source.has_video


def test_unreadable_media_raises_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="No such file"):
        MediaSource(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"\x00not audio at all" * 64)
    with pytest.raises(MediaError, match=r"garbage\.mp3"):
        MediaSource(garbage)
    with pytest.raises(ValueError, match="video_fps"):
        MediaSource(DEMO, video_fps=0)


# --------------------------------------------------------------------------------------------- captions

SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\nI have not been\r\n<i>sleeping well</i>\r\n\r\n"
    "2\r\n00:00:03,200 --> 00:01:04,000\r\nNothing feels fun &amp; easy"
)
VTT = """WEBVTT - interview
Kind: captions
Language: en

NOTE this block is a comment
and spans two lines

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:02.000 align:start position:10%
<v Doctor>How have you been?

01:02:03.456 --> 01:02:04.000
Tired, mostly.
"""


def _triples(captions: list[screening_pb2.Caption]) -> list[tuple[int, int, str]]:
    return [(caption.start_ms, caption.end_ms, caption.text) for caption in captions]


def test_srt_with_bom_crlf_and_no_final_blank_line() -> None:
    assert _triples(parse_captions(SRT)) == [
        (1000, 2500, "I have not been sleeping well"),
        (3200, 64_000, "Nothing feels fun & easy"),
    ]


def test_webvtt_headers_notes_settings_and_short_timestamps() -> None:
    assert _triples(parse_captions(VTT)) == [
        (1000, 2000, "How have you been?"),
        (3_723_456, 3_724_000, "Tired, mostly."),
    ]


def test_caption_files_are_read_with_bom(tmp_path: Path) -> None:
    srt = tmp_path / "interview.srt"
    srt.write_bytes(SRT.encode("utf-8"))
    assert len(read_captions(srt)) == 2
    vtt = tmp_path / "interview.vtt"
    vtt.write_text(VTT.replace("\n", "\r\n"), encoding="utf-8")
    assert _triples(read_captions(vtt))[0] == (1000, 2000, "How have you been?")
    with pytest.raises(CaptionError, match="cannot read captions"):
        read_captions(tmp_path / "missing.srt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "1\n00:00:01,000 --> 00:00:02,000\nfine\n\n2\n00:00:03,000 --> 00:0x:04,000\nbad\n",
            r"interview\.srt:6: malformed",
        ),
        ("1\n00:00:01 --> 00:00:02,000\nno millis\n", r"interview\.srt:2: malformed timestamp '00:00:01'"),
        ("1\n00:00:01,000 -> 00:00:02,000\nwrong arrow\n", r"interview\.srt:1: expected a timing line"),
        ("1\n00:00:05,000 --> 00:00:02,000\nbackwards\n", r"interview\.srt:2: cue ends before it starts"),
        ("WEBVTT\n\n00:01.000 --> 00:61.000\nsixty-one seconds\n", r"interview\.srt:3: malformed"),
    ],
)
def test_malformed_captions_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_captions(text, name="interview.srt")


# --------------------------------------------------------------------------------------------- pacing


class VirtualClock:
    """A clock that only moves when someone sleeps on it (or a test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def demo_messages() -> list[TimedMessage]:
    return _messages(DEMO)


def _paced(
    messages: list[TimedMessage], speed: float, clock: VirtualClock, work: dict[int, float] | None = None
) -> list[float]:
    """Send times on the virtual clock; `work` adds seconds of consumer time after the given message."""

    async def run() -> list[float]:
        times = []
        pacer = Pacer(speed, clock=clock.time, sleep=clock.sleep)
        async for message in pacer.pace(messages):
            times.append(clock.now)
            clock.now += (work or {}).get(len(times) - 1, 0.0)
            assert message is messages[len(times) - 1].message
        return times

    return asyncio.run(run())


@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
def test_pacer_sends_at_media_time_over_speed(demo_messages: list[TimedMessage], speed: float) -> None:
    clock = VirtualClock()
    times = _paced(demo_messages, speed, clock)
    assert times == pytest.approx([item.media_ms / 1000 / speed for item in demo_messages], abs=1e-9)
    assert times[-1] == pytest.approx(41.0 / speed, abs=0.1)


def test_pacer_speed_zero_never_sleeps(demo_messages: list[TimedMessage]) -> None:
    clock = VirtualClock()
    assert _paced(demo_messages, 0.0, clock) == [0.0] * len(demo_messages)
    assert clock.sleeps == []


def test_pacer_catches_up_after_a_stall(demo_messages: list[TimedMessage]) -> None:
    clock = VirtualClock()
    times = _paced(demo_messages, 1.0, clock, work={10: 2.0})
    due = [item.media_ms / 1000 for item in demo_messages]
    stalled_until = due[10] + 2.0
    late = [index for index in range(11, len(due)) if due[index] < stalled_until]
    assert late, "the stall must make some messages late"
    assert all(times[index] == pytest.approx(stalled_until) for index in late)
    after = late[-1] + 1
    assert times[after:] == pytest.approx(due[after:], abs=1e-9)


def test_pacer_rejects_negative_speed() -> None:
    with pytest.raises(ValueError, match="speed"):
        Pacer(-1.0)


def test_send_log_round_trip() -> None:
    clock = VirtualClock()
    log = AudioSendLog(clock=clock.time)
    for step in range(5):
        clock.now = step * 0.1
        log.record(screening_pb2.ClientMessage(audio=screening_pb2.AudioChunk(data=bytes(3200))))
        log.record(screening_pb2.ClientMessage(video=screening_pb2.VideoFrame(timestamp_ms=step * 100)))
    clock.now = 1.0
    assert log.round_trip_ms(250) == pytest.approx(800)
    assert log.round_trip_ms(100) == pytest.approx(1000)
    assert log.round_trip_ms(501) is None


# --------------------------------------------------------------------------------------------- live view


def _estimate(probability: float) -> screening_pb2.Estimate:
    return screening_pb2.Estimate(
        probability=probability,
        evidence=0.42,
        modalities=[
            screening_pb2.ModalityConfidence(
                modality=screening_pb2.AUDIO, available=True, quality=0.9, weight=0.6, probability=0.7
            ),
            screening_pb2.ModalityConfidence(modality=screening_pb2.VIDEO, available=False),
            screening_pb2.ModalityConfidence(
                modality=screening_pb2.TEXT, available=True, quality=0.8, weight=0.4, probability=0.81
            ),
        ],
        symptoms=[
            screening_pb2.SymptomEvidence(item=screening_pb2.SLEEP, score=0.77),
            screening_pb2.SymptomEvidence(item=screening_pb2.APPETITE, score=0.05),
            screening_pb2.SymptomEvidence(item=screening_pb2.DEPRESSED_MOOD, score=0.51),
        ],
    )


ACCEPTED = screening_pb2.ServerMessage(
    accepted=screening_pb2.SessionAccepted(
        session_id="interview-7",
        model=screening_pb2.ModelInfo(
            model_id="bimamba-test-1", trained_on="synthetic data with a planted signal", device="cpu"
        ),
    )
)


def _sentence(index: int, probability: float, transcript: str) -> screening_pb2.ServerMessage:
    return screening_pb2.ServerMessage(
        sentence=screening_pb2.SentenceUpdate(
            index=index,
            start_ms=1000 * index,
            end_ms=1000 * index + 800,
            transcript=transcript,
            transcript_source="asr",
            estimate=_estimate(probability),
            latency_ms=12.4,
        )
    )


def _text(state: LiveState, width: int = 100) -> str:
    console = Console(record=True, width=width)
    console.print(render(state))
    return console.export_text()


def test_live_view_before_any_sentence() -> None:
    state = LiveState()
    state.apply(ACCEPTED)
    text = _text(state)
    assert "interview-7" in text
    assert "bimamba-test-1" in text
    assert "synthetic data with a planted signal" in text
    assert "screening aid, not a diagnosis" in text
    assert "waiting for the first sentence" in text


def test_live_view_shows_estimate_modalities_symptoms_and_transcript() -> None:
    state = LiveState()
    state.apply(ACCEPTED)
    state.apply(_sentence(0, 0.2, "Hello doctor."))
    state.apply(_sentence(1, 0.734, "I have not been sleeping well [lately]."), round_trip_ms=340.2)
    text = _text(state)
    assert "screening probability 73.4%" in text
    assert "evidence 0.42" in text
    assert state.history == pytest.approx([0.2, 0.734])
    assert f"history (2 sentences) {sparkline([0.2, 0.734])}" in text
    lines = text.splitlines()
    audio = next(line for line in lines if "AUDIO" in line)
    assert "0.60" in audio and "█" * 18 + "░" * 12 in audio and "0.90" in audio and "70.0%" in audio
    video = next(line for line in lines if "VIDEO" in line)
    assert "unavailable" in video and "█" not in video
    text_row = next(line for line in lines if "TEXT" in line)
    assert "0.40" in text_row and "81.0%" in text_row
    symptoms = [line for line in lines if any(name in line for name in ("sleep", "depressed mood", "appetite"))]
    assert ["sleep" in symptoms[0], "depressed mood" in symptoms[1], "appetite" in symptoms[2]] == [True] * 3
    assert "I have not been sleeping well [lately]." in text
    assert "(asr)" in text and "sentence #1" in text
    assert "server latency 12 ms" in text and "round trip 340 ms" in text
    assert "screening aid, not a diagnosis" in text


def test_live_view_big_percentage_and_summary() -> None:
    state = LiveState()
    state.apply(_sentence(0, 0.58, ""))
    state.apply(
        screening_pb2.ServerMessage(
            summary=screening_pb2.SessionSummary(
                sentences=1, audio_seconds=41.0, speech_seconds=30.5, estimate=_estimate(0.61)
            )
        )
    )
    text = _text(state)
    assert "screening probability 61.0%" in text
    digits = [line for line in text.splitlines() if "|_ " in line or " _|" in line]
    assert digits, "the percentage is drawn in big digits"
    assert "(no transcript)" in text
    assert "done: 1 sentences, 30.5 s speech in 41.0 s audio" in text


def test_live_view_and_typed_updates_show_the_interval_or_why_there_is_none() -> None:
    calibrated = _sentence(2, 0.3, "")
    calibrated.sentence.estimate.MergeFrom(
        screening_pb2.Estimate(interval_low=0.1, interval_high=0.62, interval_level=0.9, enough_speech=True)
    )
    assert update_of(calibrated).interval == Interval(pytest.approx(0.1), pytest.approx(0.62), pytest.approx(0.9), True)
    assert update_of(calibrated).interval.words() == "90% interval 0.10-0.62"
    state = LiveState()
    state.apply(_sentence(0, 0.3, ""))
    assert "not enough speech yet" in _text(state)
    state.apply(calibrated)
    text = _text(state)
    assert "90% interval 0.10-0.62 " + "·" * 3 + "█" * 16 + "·" * 11 in text
    uncalibrated = _sentence(3, 0.3, "")
    uncalibrated.sentence.estimate.enough_speech = True
    state.apply(uncalibrated)
    assert "no interval (the model has no interval calibration)" in _text(state)
    no_speech = screening_pb2.ServerMessage(summary=screening_pb2.SessionSummary(audio_seconds=3.0))
    assert update_of(no_speech).interval.words() == "not enough speech yet"
    state.apply(no_speech)
    assert "final estimate: none (no sentence heard): not enough speech yet" in _text(state, width=200)
    record = json.loads(cli.message_json(calibrated))["sentence"]["estimate"]
    assert (record["interval_low"], record["interval_high"]) == pytest.approx((0.1, 0.62)) and record["enough_speech"]


def test_sparkline_maps_low_to_high() -> None:
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert len(sparkline([0.3] * 500)) == 60


# --------------------------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depscreen")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_stream_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPSCREEN_TOKEN", "from-env")
    args = _parser().parse_args(["stream", "interview.mp4"])
    assert (args.server, args.speed, args.chunk_ms) == ("127.0.0.1:50051", 1.0, 100)
    assert (args.video, args.video_fps, args.json, args.disable_asr) == (True, 5.0, False, False)
    assert (args.token, args.language, args.captions, args.session_id) == ("from-env", "en", None, "")
    assert args.func is cli.run_stream
    args = _parser().parse_args(
        ["stream", "a.wav", "--no-video", "--no-asr", "--json", "--speed", "0", "--token", "t", "--chunk-ms", "20"]
    )
    assert (args.video, args.disable_asr, args.json) == (False, True, True)
    assert (args.speed, args.token, args.chunk_ms) == (0, "t", 20)
    with pytest.raises(SystemExit):
        _parser().parse_args(["stream", "a.wav", "--speed", "-1"])


def test_message_json_is_one_line_with_proto_names_and_enum_names() -> None:
    line = cli.message_json(_sentence(3, 0.734, "I feel tired"))
    assert "\n" not in line
    record = json.loads(line)
    sentence = record["sentence"]
    assert sentence["transcript_source"] == "asr"
    assert sentence["latency_ms"] == pytest.approx(12.4)
    assert sentence["index"] == 3
    assert sentence["end_ms"] == "3800"
    assert [modality["modality"] for modality in sentence["estimate"]["modalities"]] == ["AUDIO", "VIDEO", "TEXT"]
    assert sentence["estimate"]["symptoms"][0] == {"item": "SLEEP", "score": pytest.approx(0.77)}


def test_run_stream_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.mp4"
    assert cli.run_stream(_parser().parse_args(["stream", str(missing), "--server", "127.0.0.1:9"])) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot open {missing}: No such file or directory"
    captions = tmp_path / "bad.srt"
    captions.write_text("1\n00:00:01,000 --> 00:00:0x,000\nbad\n")
    args = _parser().parse_args(["stream", str(DEMO), "--captions", str(captions), "--server", "127.0.0.1:9"])
    assert cli.run_stream(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {captions}:2: malformed timestamp '00:00:0x,000' " + (
        "(expected HH:MM:SS,mmm or MM:SS.mmm)"
    )


# --------------------------------------------------------------------------------------------- streaming
# The client's side of the wire contract, against the real server on loopback (the session-wide fixture).


def _collect(stream: AsyncIterator[screening_pb2.ServerMessage]) -> list[screening_pb2.ServerMessage]:
    async def run() -> list[screening_pb2.ServerMessage]:
        return [message async for message in stream]

    return asyncio.run(asyncio.wait_for(run(), timeout=120))


@needs_grid
def test_stream_file_sends_start_captions_and_media(server: RunningServer, tmp_path: Path) -> None:
    srt = tmp_path / "grid.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nbin blue at f two now\n")
    client = ScreeningClient(server.grpc_target)
    replies = _collect(client.stream_file(GRID_CLIP, speed=0, captions=srt, session_id="s-1", language="en"))
    assert [reply.WhichOneof("kind") for reply in replies] == ["accepted", "sentence", "summary"]
    assert replies[0].accepted.session_id == "s-1"
    sentence = replies[1].sentence
    assert (sentence.transcript, sentence.transcript_source) == ("bin blue at f two now", "caption")
    assert sentence.estimate.modalities[1].available, "the clip's frames reached the server"
    assert replies[2].summary.audio_seconds == pytest.approx(3.0, abs=0.1)


def test_replies_arrive_while_sending_goes_on(server: RunningServer) -> None:
    """The sender waits for the first sentence before sending `end`: a client that only read after sending
    everything would never finish."""
    first_sentence = asyncio.Event()
    pcm = b"".join(
        item.message.audio.data for item in _messages(FIXTURES / "jfk.flac") if _kind(item.message) == "audio"
    )

    async def interview() -> AsyncIterator[screening_pb2.ClientMessage]:
        yield screening_pb2.ClientMessage(
            start=screening_pb2.SessionStart(audio=screening_pb2.AudioFormat(sample_rate_hz=16000, channels=1))
        )
        for offset in range(0, 4 * 32_000, 3200):
            yield screening_pb2.ClientMessage(audio=screening_pb2.AudioChunk(data=pcm[offset : offset + 3200]))
        await first_sentence.wait()
        yield screening_pb2.ClientMessage(end=screening_pb2.SessionEnd())

    async def run() -> list[str]:
        kinds = []
        async for reply in ScreeningClient(server.grpc_target).stream_messages(interview()):
            kinds.append(reply.WhichOneof("kind"))
            if kinds[-1] == "sentence":
                first_sentence.set()
        return kinds

    kinds = asyncio.run(asyncio.wait_for(run(), timeout=120))
    assert kinds[0] == "accepted" and kinds[1] == "sentence" and kinds[-1] == "summary"


def test_server_errors_keep_code_and_details(server: RunningServer) -> None:
    async def bad() -> AsyncIterator[screening_pb2.ClientMessage]:
        yield screening_pb2.ClientMessage(audio=screening_pb2.AudioChunk(data=bytes(320)))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _collect(ScreeningClient(server.grpc_target).stream_messages(bad()))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details().startswith("the first message must be `start`")


def test_a_failing_message_source_is_raised_not_hidden(server: RunningServer) -> None:
    async def broken() -> AsyncIterator[screening_pb2.ClientMessage]:
        yield screening_pb2.ClientMessage(
            start=screening_pb2.SessionStart(audio=screening_pb2.AudioFormat(sample_rate_hz=16000, channels=1))
        )
        raise MediaError("cannot decode interview.mp4: Invalid data found when processing input")

    with pytest.raises(MediaError, match=r"cannot decode interview\.mp4"):
        _collect(ScreeningClient(server.grpc_target).stream_messages(broken()))


def test_run_stream_json_lines(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["stream", str(DEMO), "--server", server.grpc_target, "--speed", "0", "--json"])
    assert cli.run_stream(args) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [next(iter(record)) for record in records]
    assert kinds[0] == "accepted" and kinds[-1] == "summary" and kinds.count("sentence") >= 8
    assert records[1]["sentence"]["estimate"]["modalities"][1]["modality"] == "VIDEO"
    assert records[-1]["summary"]["audio_seconds"] == pytest.approx(41.0, abs=0.1)


def test_run_stream_live_view(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["stream", str(DEMO), "--server", server.grpc_target, "--speed", "0", "--no-video"])
    assert cli.run_stream(args) == 0
    out = capsys.readouterr().out
    assert "done: " in out and "screening aid, not a diagnosis" in out and "synthetic" in out


def test_run_stream_rpc_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    args = _parser().parse_args(["stream", str(DEMO), "--server", f"127.0.0.1:{port}", "--json"])
    assert cli.run_stream(args) == 1
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")


# --------------------------------------------------------------------------------------------- demo sample


def test_demo_sample_is_a_small_interview_with_pauses() -> None:
    assert DEMO.stat().st_size < 3_000_000
    with av.open(str(DEMO)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.width, video.codec_context.height, video.average_rate) == (360, 288, 25)
        assert video.codec_context.name in ("h264", "mpeg4")
        assert (audio.codec_context.name, audio.sample_rate, audio.channels) == ("aac", 16000, 1)
    pcm = np.frombuffer(b"".join(item.message.audio.data for item in _messages(DEMO, video=False)), dtype="<i2").astype(
        float
    )
    assert len(pcm) / 16_000 == pytest.approx(41.0, abs=0.05)
    for clip in range(10):
        clip_end = int((clip * 3.8 + 3.0) * 16_000)
        pause = pcm[clip_end + 800 : clip_end + 12_000]
        assert np.sqrt(np.mean(pause**2)) < 30, f"the pause after clip {clip + 1} should be silent"
        assert np.abs(pcm[clip_end - 48_000 : clip_end]).max() > 1000, f"clip {clip + 1} should have speech"


@needs_grid
def test_make_grid_interview_script(tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    grid.mkdir()
    for name in ("swiz3n.mpg", "bbaf2n.mpg"):
        (grid / name).symlink_to(GRID / name)
    out = tmp_path / "two.mp4"
    script = SAMPLES / "make_grid_interview.py"
    subprocess.run([sys.executable, str(script), "--grid", str(grid), "--out", str(out), "--gap", "0.4"], check=True)
    with av.open(str(out)) as container:
        assert container.duration / 1e6 == pytest.approx(6.4, abs=0.05)
        assert container.streams.video[0].frames == 2 * 75 + 10
