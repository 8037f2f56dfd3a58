"""Per-role audio: a patient and a clinician as channels of one stream, only the patient scored, each answer
naming its question; the role mapping's bad input refused in `start`."""

from __future__ import annotations

import argparse
import asyncio
import json
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from depscreen.clients import cli
from depscreen.clients.errors import SessionInputError
from depscreen.clients.media import MediaError, MediaSource
from depscreen.clients.replay import open_recording
from depscreen.clients.session import ScreeningClient, wire_role
from depscreen.engine.features.asr_backends import make_transcriber
from depscreen.engine.media import SAMPLE_RATE
from depscreen.engine.pipeline import Caption
from depscreen.engine.questions import QuestionTrack
from depscreen.engine.segment import SegmenterSettings, segment_pcm
from depscreen.localserver import LocalServer, start_local_server
from depscreen.streamer.settings import ServerSettings
from depscreen.v1 import screening_pb2 as pb

from .conftest import SHARED_DATA, RunningServer
from .fakes import fake_parts
from .inprocess import ServerThread

SPEECH = SHARED_DATA / "speech"
LIBRIVOX = SPEECH / "librivox"
ARCTIC = SPEECH / "arctic" / "arctic_a0007.wav"
needs_speech = pytest.mark.skipif(not ARCTIC.exists(), reason=f"real speech not found under {SPEECH}")

TURNS = (
    ("clinician", ARCTIC, 0.0),
    ("patient", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav", 4.6),
    ("clinician", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav", 12.6),
    ("patient", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0890.wav", 16.4),
)
"""A made-up interview of real speech: (who, clip, where it starts in seconds); the voices take turns."""
INTERVIEW_S = 23.0
QUESTION_TOLERANCE_MS = 60
"""How far a question's span after a resume may be from the uninterrupted run's (three 20 ms frames)."""


def _clip(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as audio:
        assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        return np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2")


def _voices() -> dict[str, np.ndarray]:
    """Each role's channel of the interview: its clips at their times, silence between."""
    voices = {role: np.zeros(int(INTERVIEW_S * SAMPLE_RATE), dtype="<i2") for role in ("patient", "clinician")}
    for role, path, at_s in TURNS:
        clip = _clip(path)
        start = int(at_s * SAMPLE_RATE)
        voices[role][start : start + len(clip)] = clip
    return voices


def _write_wav(path: Path, channels: list[np.ndarray]) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(len(channels))
        audio.setsampwidth(2)
        audio.setframerate(SAMPLE_RATE)
        audio.writeframes(np.stack(channels, axis=1).astype("<i2").tobytes())
    return path


def _collect(stream: AsyncIterator[pb.ServerMessage]) -> list[pb.ServerMessage]:
    async def run() -> list[pb.ServerMessage]:
        return [message async for message in stream]

    return asyncio.run(asyncio.wait_for(run(), timeout=180))


def _sentences(replies: list[pb.ServerMessage]) -> list[pb.SentenceUpdate]:
    return [reply.sentence for reply in replies if reply.WhichOneof("kind") == "sentence"]


@needs_speech
def test_the_patient_alone_and_the_patients_channel_of_a_two_role_stream_score_the_same(
    server: RunningServer, tmp_path: Path
) -> None:
    """The target: the patient's channel within a stereo (patient, clinician) stream gives the sentences (spans
    equal) and estimates (within 1e-4) of the patient streamed alone; each answer names the clinician's question
    before it and its onset latency, and the clinician's words are not reported by default."""
    voices = _voices()
    alone = _write_wav(tmp_path / "patient.wav", [voices["patient"]])
    both = _write_wav(tmp_path / "interview.wav", [voices["patient"], voices["clinician"]])
    client = ScreeningClient(server.grpc_target)
    solo = _collect(client.stream_file(alone, speed=0, video=False, language="en"))
    duo = _collect(
        client.stream_file(both, speed=0, video=False, language="en", channel_roles=("patient", "clinician"))
    )

    solo_sentences, duo_sentences = _sentences(solo), _sentences(duo)
    assert len(solo_sentences) >= 2, "each of the patient's answers is at least one sentence"
    assert [(s.start_ms, s.end_ms) for s in duo_sentences] == [(s.start_ms, s.end_ms) for s in solo_sentences]
    assert [s.transcript for s in duo_sentences] == [s.transcript for s in solo_sentences]
    for one, two in zip(solo_sentences, duo_sentences, strict=True):
        assert two.estimate.probability == pytest.approx(one.estimate.probability, abs=1e-4)
        assert two.estimate.evidence == pytest.approx(one.estimate.evidence, abs=1e-4)
        for a, b in zip(one.estimate.modalities, two.estimate.modalities, strict=True):
            assert b.probability == pytest.approx(a.probability, abs=1e-4)
    assert duo[-1].summary.estimate.probability == pytest.approx(solo[-1].summary.estimate.probability, abs=1e-4)
    assert duo[-1].summary.sentences == solo[-1].summary.sentences

    assert not any(s.HasField("question") for s in solo_sentences), "no clinician channel, no question"
    assert solo[-1].summary.clinician_sentences == 0
    asked = [(q.start_ms, q.end_ms) for q in segment_pcm(voices["clinician"])]  # the clinician's channel alone
    assert duo[-1].summary.clinician_sentences == len(asked)
    for sentence in duo_sentences:
        expected = max((q for q in asked if q[1] <= sentence.start_ms), key=lambda q: q[1])
        assert (sentence.question.start_ms, sentence.question.end_ms) == expected
        assert sentence.answer_latency_ms == sentence.start_ms - expected[1] >= 0
        assert (sentence.question.transcript, sentence.question.transcript_source) == ("", ""), (
            "the clinician's words are not reported by default"
        )
    first_answer = duo_sentences[0]
    assert first_answer.question.end_ms < TURNS[1][2] * 1000 < first_answer.start_ms


@needs_speech
def test_a_clinician_only_session_is_scored_on_nothing_and_says_so(server: RunningServer, tmp_path: Path) -> None:
    clinician = _write_wav(tmp_path / "clinician.wav", [_voices()["clinician"]])
    client = ScreeningClient(server.grpc_target)
    replies = _collect(client.stream_file(clinician, speed=0, video=False, channel_roles=("clinician",)))
    assert [reply.WhichOneof("kind") for reply in replies] == ["accepted", "summary"]
    assert any("nothing of this session is scored" in notice for notice in replies[0].accepted.notices)
    summary = replies[-1].summary
    assert summary.sentences == 0 and not summary.HasField("estimate")
    assert summary.clinician_sentences >= 2
    assert summary.audio_seconds == pytest.approx(INTERVIEW_S, abs=0.05)


@pytest.fixture(scope="module")
def seam() -> Iterator[ServerThread]:
    """An in-process server on fake parts: the role checks are the session's, not the models'."""
    with ServerThread(ServerSettings(grpc_port=0, http_port=0, device="cpu"), fake_parts()) as server:
        yield server


def _refusal(server: ServerThread, *messages: pb.ClientMessage) -> grpc.aio.AioRpcError:
    async def stream() -> AsyncIterator[pb.ClientMessage]:
        for message in messages:
            yield message

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        _collect(ScreeningClient(server.grpc_target).stream_messages(stream()))
    return refused.value


def _start(channels: int, *roles: int) -> pb.ClientMessage:
    audio = pb.AudioFormat(sample_rate_hz=16000, channels=channels)
    return pb.ClientMessage(start=pb.SessionStart(audio=audio, channel_roles=roles))


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        (_start(2, pb.PATIENT, pb.ROLE_UNSPECIFIED), "start.channel_roles[1]=ROLE_UNSPECIFIED is not a role"),
        (_start(1, 7), "start.channel_roles[0]=7 is not a role"),
        (_start(1, pb.PATIENT, pb.CLINICIAN), "has 2 roles for start.audio.channels=1"),
        (_start(2, pb.PATIENT), "has 1 roles for start.audio.channels=2"),
        (_start(2, pb.PATIENT, pb.PATIENT), "names PATIENT for more than one channel"),
        (_start(2, pb.CLINICIAN, pb.CLINICIAN), "names CLINICIAN for more than one channel"),
    ],
    ids=[
        "unspecified-role",
        "unknown-role",
        "more-roles-than-channels",
        "fewer-roles",
        "second-patient",
        "second-clinician",
    ],
)
def test_a_role_mapping_the_server_cannot_follow_is_refused_in_start(
    seam: ServerThread, start: pb.ClientMessage, reason: str
) -> None:
    refused = _refusal(seam, start, pb.ClientMessage(audio=pb.AudioChunk(data=bytes(640))))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in refused.details()


def test_a_caption_of_an_unknown_role_is_refused(seam: ServerThread) -> None:
    caption = pb.Caption(start_ms=0, end_ms=500, text="hello", role=9)
    refused = _refusal(seam, _start(1), pb.ClientMessage(caption=caption))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "caption.role=9 is not a role" in refused.details()


def test_the_client_keeps_a_stereo_files_channels_apart_and_checks_the_mapping(tmp_path: Path) -> None:
    left, right = np.arange(1600, dtype="<i2"), -np.arange(1600, dtype="<i2")
    stereo = _write_wav(tmp_path / "stereo.wav", [left, right])
    with MediaSource(stereo, video=False, channels=2) as source:
        pcm = b"".join(m.message.audio.data for m in source.messages(chunk_ms=50) if m.message.HasField("audio"))
    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)
    assert np.array_equal(frames[:, 0], left) and np.array_equal(frames[:, 1], right)
    mono = _write_wav(tmp_path / "mono.wav", [left])
    with pytest.raises(MediaError, match="has 1 audio channel"):
        MediaSource(mono, video=False, channels=2)


def test_a_question_is_the_last_clinician_sentence_that_ended_before_the_answer(tmp_path: Path) -> None:
    """The clinician's track on its own: spans on the session clock, captions as its text only when kept."""
    speech = _clip(ARCTIC) if ARCTIC.exists() else None
    if speech is None:
        pytest.skip(f"{ARCTIC} not found")
    gap = np.zeros(SAMPLE_RATE * 2, dtype="<i2")
    pcm = np.concatenate([speech, gap, speech, gap]).tobytes()
    for keep_text in (False, True):
        track = QuestionTrack(
            sample_rate_hz=SAMPLE_RATE, settings=SegmenterSettings(), keep_text=keep_text, origin_ms=1000
        )
        assert track.push_caption(Caption(1000, 5000, "how  have you   been")) is keep_text
        track.push_audio(pcm)
        track.finish()
        assert track.sentences >= 2
        first = track.answered_by(5500)
        assert first is not None and 1000 <= first.start_ms < first.end_ms <= 5500
        expected = ("how have you been", "caption") if keep_text else ("", "")
        assert (first.transcript, first.transcript_source) == expected
        last = track.answered_by(20_000)
        assert last is not None and last.start_ms >= first.end_ms and last.transcript == ""


@pytest.fixture(scope="module")
def recording_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, Path]]:
    """A server that records every session and reports the clinician's words (ASR off: text from captions)."""
    root = tmp_path_factory.mktemp("record") / "sessions"
    server = start_local_server(
        "--device", "cpu", "--asr", "none", "--max-speed", "0", "--record", str(root), "--clinician-text", "on"
    )
    yield server, root
    server.stop()


async def _as_stream(messages: list[pb.ClientMessage]) -> AsyncIterator[pb.ClientMessage]:
    for message in messages:
        yield message


@needs_speech
def test_roles_are_recorded_replayed_and_the_clinicians_words_reported_when_on(
    recording_server: tuple[LocalServer, Path], tmp_path: Path
) -> None:
    server, root = recording_server
    voices = _voices()
    both = _write_wav(tmp_path / "interview.wav", [voices["clinician"], voices["patient"]])
    asked, answered = "how have you been sleeping", "not well lately"
    captions = [
        pb.Caption(start_ms=100, end_ms=3500, text=asked, role=pb.CLINICIAN),
        pb.Caption(start_ms=4700, end_ms=11000, text=answered, role=pb.PATIENT),
    ]
    start = pb.SessionStart(
        audio=pb.AudioFormat(sample_rate_hz=SAMPLE_RATE, channels=2), channel_roles=[pb.CLINICIAN, pb.PATIENT]
    )
    with MediaSource(both, video=False, channels=2) as source:
        media = [t.message for t in source.messages(chunk_ms=100, captions=captions)]
    messages = [pb.ClientMessage(start=start), *media, pb.ClientMessage(end=pb.SessionEnd())]
    live = _collect(ScreeningClient(server.grpc_target).stream_messages(_as_stream(messages)))
    sentences = _sentences(live)
    assert sentences[0].transcript == answered, "the patient's caption, never the clinician's, is its text"
    assert (sentences[0].question.transcript, sentences[0].question.transcript_source) == (asked, "caption")
    assert all(asked not in s.transcript for s in sentences)

    folder = root / live[0].accepted.session_id / "stream-0"
    assert json.loads((folder / "stream.json").read_text())["channel_roles"] == ["clinician", "patient"]
    recorded = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    assert [line.get("role", "") for line in recorded] == ["clinician", ""]

    recording = open_recording(folder)
    assert list(recording.start.channel_roles) == [pb.CLINICIAN, pb.PATIENT]
    replay = [pb.ClientMessage(start=recording.start), *(t.message for t in recording.messages())]
    replay.append(pb.ClientMessage(end=pb.SessionEnd()))
    replayed = _collect(ScreeningClient(server.grpc_target).stream_messages(_as_stream(replay)))
    assert [(s.start_ms, s.end_ms, s.transcript, s.question) for s in _sentences(replayed)] == [
        (s.start_ms, s.end_ms, s.transcript, s.question) for s in sentences
    ]
    assert replayed[-1].summary.clinician_sentences == live[-1].summary.clinician_sentences


def _stream_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["stream", *argv])


@needs_speech
def test_depscreen_stream_channels_maps_a_files_channels_to_roles(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--channels patient,clinician`: JSON lines and the live view show each answer's question and latency."""
    voices = _voices()
    both = str(_write_wav(tmp_path / "interview.wav", [voices["patient"], voices["clinician"]]))
    common = ("--server", server.grpc_target, "--speed", "0", "--no-asr", "--channels", "patient,clinician")
    assert cli.run_stream(_stream_args(both, *common, "--json")) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sentences = [record["sentence"] for record in records if "sentence" in record]
    assert sentences and all("question" in s and int(s["answer_latency_ms"]) > 0 for s in sentences)
    assert int(records[-1]["summary"]["clinician_sentences"]) >= 2
    assert cli.run_stream(_stream_args(both, *common)) == 0
    last = sentences[-1]
    question = f"{int(last['question']['start_ms']) / 1000:.1f}–{int(last['question']['end_ms']) / 1000:.1f} s"
    shown = f"answers the question at {question} after {int(last['answer_latency_ms']) / 1000:.1f} s"
    assert shown in capsys.readouterr().out

    assert cli.run_stream(_stream_args(str(ARCTIC), *common)) == cli.EXIT_BAD_INPUT
    assert "has 1 audio channel(s), but 2 role(s) were mapped" in capsys.readouterr().err
    one_role = ("--server", server.grpc_target, "--speed", "0", "--no-asr", "--channels", "patient")
    assert cli.run_stream(_stream_args(both, *one_role)) == cli.EXIT_BAD_INPUT
    assert "has 2 audio channel(s), but 1 role(s) were mapped" in capsys.readouterr().err, "never mixed across roles"
    webrtc = _stream_args(both, "--webrtc", "http://127.0.0.1:9/whip", "--channels", "patient,clinician", "--json")
    assert cli.run_stream(webrtc) == cli.EXIT_BAD_INPUT
    assert "a WebRTC session carries the patient alone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _stream_args(both, "--channels", "patient,nurse")


def test_the_client_refuses_a_role_mapping_before_sending() -> None:
    async def open_with(**options: object) -> None:
        async with ScreeningClient("127.0.0.1:9") as client:
            client.session(**options)

    with pytest.raises(SessionInputError, match="'nurse' is not a role: use one of patient, clinician"):
        asyncio.run(open_with(channels=2, channel_roles=("patient", "nurse")))
    with pytest.raises(SessionInputError, match="channel_roles has 2 roles for 1 channels"):
        asyncio.run(open_with(channels=1, channel_roles=("patient", "clinician")))
    with pytest.raises(SessionInputError, match="'doctor' is not a role"):
        wire_role("doctor")
    assert wire_role("Clinician") == pb.CLINICIAN


@needs_speech
def test_a_two_role_session_resumes_with_its_roles(tmp_path: Path) -> None:
    """A stream that closes between two answers is resumed with its token and the same roles, its media re-sent
    from the replay point: the later answers are cut and name their questions as in the uninterrupted run (the
    clinician's track restarts at the replay point, after the first answer, so the second question is heard whole
    again)."""
    voices = _voices()
    pcm = np.stack([voices["patient"], voices["clinician"]], axis=1).astype("<i2").tobytes()
    chunk = 100 * SAMPLE_RATE // 1000 * 4
    audio = [pb.ClientMessage(audio=pb.AudioChunk(data=pcm[i : i + chunk])) for i in range(0, len(pcm), chunk)]
    roles = [pb.PATIENT, pb.CLINICIAN]
    start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=SAMPLE_RATE, channels=2), channel_roles=roles)
    end = pb.ClientMessage(end=pb.SessionEnd())
    server = start_local_server(
        "--device", "cpu", "--asr", "none", "--max-speed", "0", "--state-store", f"sqlite://{tmp_path}/sessions.db"
    )
    try:
        client = ScreeningClient(server.grpc_target)
        reference = _sentences(
            _collect(client.stream_messages(_as_stream([pb.ClientMessage(start=start), *audio, end])))
        )
        first = _collect(client.stream_messages(_as_stream([pb.ClientMessage(start=start), *audio[:140]])))
        held = _sentences(first)
        assert len(held) == 1 and held[0].end_ms < 14_000 < reference[1].start_ms
        resumed_start = pb.SessionStart()
        resumed_start.CopyFrom(start)
        resumed_start.resume_token = first[0].accepted.resume_token
        resumed_start.received_sentences = len(held)
        offset = held[0].replay_from_sample * 4  # the client keeps its media from there (16 kHz, 2 x s16le)
        rest = [pb.ClientMessage(audio=pb.AudioChunk(data=pcm[i : i + chunk])) for i in range(offset, len(pcm), chunk)]
        again = _collect(client.stream_messages(_as_stream([pb.ClientMessage(start=resumed_start), *rest, end])))
    finally:
        server.stop()
    accepted = again[0].accepted
    assert accepted.resume_from_ms == held[0].end_ms
    assert accepted.replay_from_sample == held[0].replay_from_sample < held[0].end_ms * 16
    later = _sentences(again)
    assert [s.index for s in later] == [s.index for s in reference[1:]]
    assert [(s.start_ms, s.end_ms) for s in later] == [(s.start_ms, s.end_ms) for s in reference[1:]]
    for resumed, uninterrupted in zip(later, reference[1:], strict=True):
        # the clinician's segmenter starts afresh at the resume point (its noise floor learnt anew): a frame or two
        assert abs(resumed.question.start_ms - uninterrupted.question.start_ms) <= QUESTION_TOLERANCE_MS
        assert abs(resumed.question.end_ms - uninterrupted.question.end_ms) <= QUESTION_TOLERANCE_MS
        assert resumed.answer_latency_ms == resumed.start_ms - resumed.question.end_ms


@needs_speech
def test_the_clinicians_words_come_from_asr_when_kept_and_asr_may_run() -> None:
    """With the clinician's words kept and no caption over a question, ASR gives them; shed ASR gives none."""
    transcriber = make_transcriber("tiny.en")
    pcm = np.concatenate([_clip(ARCTIC), np.zeros(SAMPLE_RATE, dtype="<i2")]).tobytes()
    for transcribe in (True, False):
        track = QuestionTrack(
            sample_rate_hz=SAMPLE_RATE,
            settings=SegmenterSettings(),
            transcriber=transcriber,
            language="en",
            keep_text=True,
        )
        track.push_audio(pcm, transcribe)
        track.finish(transcribe)
        question = track.answered_by(10_000)
        assert question is not None
        if transcribe:
            assert question.transcript_source == "asr" and len(question.transcript.split()) >= 3
        else:
            assert (question.transcript, question.transcript_source) == ("", "")


@needs_speech
def test_a_clinician_caption_never_becomes_the_patients_text(server: RunningServer) -> None:
    """Without a clinician channel (and with the clinician's words off), a CLINICIAN caption over the patient's
    speech is not used: the sentence has no text and the caption is counted as dropped."""
    pcm = _voices()["patient"][: 13 * SAMPLE_RATE].tobytes()
    start = pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=SAMPLE_RATE, channels=1), disable_asr=True)
    caption = pb.Caption(start_ms=4700, end_ms=11000, text="how have you been sleeping", role=pb.CLINICIAN)
    chunks = [pb.ClientMessage(audio=pb.AudioChunk(data=pcm[i : i + 3200])) for i in range(0, len(pcm), 3200)]
    messages = [pb.ClientMessage(start=start), pb.ClientMessage(caption=caption), *chunks]
    replies = _collect(ScreeningClient(server.grpc_target).stream_messages(_as_stream(messages)))
    sentences = _sentences(replies)
    assert sentences and all(s.transcript == "" for s in sentences)
    assert replies[-1].summary.dropped_captions == 1
