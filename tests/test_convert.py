"""The gRPC adapter's conversions both ways: wire messages to the session core's typed inputs, its updates and
errors back to the wire. End-to-end streams over them are in `test_protocol.py`."""

from __future__ import annotations

import grpc
import pytest

from depscreen import PROTOCOL_VERSION, __version__
from depscreen.engine.features.face import EncodedImage
from depscreen.engine.pipeline import Notice
from depscreen.streamer.convert import accepted_message, client_input, opening, server_message
from depscreen.streamer.interview import Audio, Caption, End, InterviewSummary, Opening, Video, Welcome
from depscreen.streamer.protocol import ErrorKind, ProtocolError
from depscreen.v1 import screening_pb2 as pb


def test_a_start_becomes_the_session_opening_and_says_whether_the_client_counted_its_updates() -> None:
    start = pb.SessionStart(
        audio=pb.AudioFormat(sample_rate_hz=48_000, channels=2),
        language="zh-CN",
        disable_asr=True,
        session_id="visit-7",
        resume_token="abc.def",
        received_sentences=0,
    )
    assert opening(pb.ClientMessage(start=start)) == Opening(48_000, 2, "zh-CN", True, "visit-7", "abc.def", 0)
    start.ClearField("received_sentences")
    assert opening(pb.ClientMessage(start=start)).received_sentences is None, "absent is not 0"
    with pytest.raises(ProtocolError, match=r"first message must be `start`.*got `audio`") as refused:
        opening(pb.ClientMessage(audio=pb.AudioChunk(data=b"\0\0")))
    assert refused.value.kind is ErrorKind.FAILED_PRECONDITION


def test_later_messages_become_typed_inputs() -> None:
    frame = pb.VideoFrame(timestamp_ms=40, image=b"\1\2\3", format=pb.RGB24, width=1, height=1)
    assert client_input(pb.ClientMessage(audio=pb.AudioChunk(data=b"\1\0"))) == Audio(b"\1\0")
    assert client_input(pb.ClientMessage(video=frame)) == Video(40, EncodedImage(b"\1\2\3", "rgb24", 1, 1))
    unnamed = pb.VideoFrame(timestamp_ms=80, image=b"?")
    assert client_input(pb.ClientMessage(video=unnamed)) == Video(80, EncodedImage(b"?", "unspecified"))
    caption = pb.Caption(start_ms=10, end_ms=20, text="我很累")
    assert client_input(pb.ClientMessage(caption=caption)) == Caption(10, 20, "我很累")
    assert client_input(pb.ClientMessage(end=pb.SessionEnd())) == End()
    with pytest.raises(ProtocolError, match="second `start`") as again:
        client_input(pb.ClientMessage(start=pb.SessionStart()))
    assert again.value.kind is ErrorKind.FAILED_PRECONDITION
    with pytest.raises(ProtocolError, match="no field set") as empty:
        client_input(pb.ClientMessage())
    assert empty.value.kind is ErrorKind.INVALID_ARGUMENT


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_error_kind_ends_a_grpc_stream_with_the_status_of_its_name(kind: ErrorKind) -> None:
    assert grpc.StatusCode[kind.name].name == kind.name


def test_the_welcome_and_a_summary_go_out_as_their_messages() -> None:
    notice = Notice("not_resumable_store_down", "not resumable")
    welcome = Welcome("visit-7", "tiny.en", (notice,), "tok", resume_from_ms=1200, next_sentence_index=3)
    model = pb.ModelInfo(model_id="m")
    accepted = accepted_message(welcome, model).accepted
    assert (accepted.session_id, accepted.asr_model) == ("visit-7", "tiny.en")
    assert list(accepted.notices) == ["not resumable"], "the text alone, as before protocol 1.1"
    assert [(n.code, n.text) for n in accepted.coded_notices] == [("not_resumable_store_down", "not resumable")]
    assert (accepted.server_version, accepted.protocol_version) == (__version__, PROTOCOL_VERSION)
    assert (accepted.resume_token, accepted.resume_from_ms, accepted.next_sentence_index) == ("tok", 1200, 3)
    assert accepted.model == model
    summary = server_message(InterviewSummary(2, 9.5, 6.25, 1, 0, estimate=None)).summary
    assert (summary.sentences, summary.audio_seconds, summary.speech_seconds) == (2, 9.5, 6.25)
    assert summary.dropped_video_frames == 1 and not summary.HasField("estimate"), "no estimate before a sentence"
