"""`depscreen export fhir`, `replay` and `plot` on a real session: one recorded on a real server on loopback, its
`stream --json` lines, and its replay to a fresh server; malformed, empty and damaged inputs name what is wrong."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import stat
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy
import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from depscreen.cli import build_parser, main
from depscreen.clients.cli import message_json
from depscreen.clients.plot import draw
from depscreen.clients.replay import RecordingError, open_recording
from depscreen.clients.sentences import SentencesError, read_sentences
from depscreen.clients.session import ScreeningClient
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.streamer.interview import Caption, Video
from depscreen.streamer.record import SessionRecorder
from depscreen.v1 import screening_pb2 as pb

from .test_record import CAPTIONS, sample_messages

SERVER_FLAGS = ("--device", "cpu", "--asr", "none", "--max-speed", "0")
CARD_URL = "https://models.example/depscreen/MODEL_CARD.md"
"""Where a clinic publishes the model card (the demo server sends the relative docs/MODEL_CARD.md)."""
SNOMED = "http://snomed.info/sct"
SESSION_ID = "handoff-1"
CAPTION_WORDS = ("lay white at b seven", "bin blue by s nine")


@dataclass(frozen=True)
class Recorded:
    stream_json: Path
    """`depscreen stream --json` lines of the session (the CLI's own `message_json` of every reply)."""
    folder: Path
    """The server's recording of the same session: DIR/handoff-1/stream-0."""
    replies: list[pb.ServerMessage]


async def _stream(target: str, messages: list[pb.ClientMessage]) -> list[pb.ServerMessage]:
    async def outgoing() -> AsyncIterator[pb.ClientMessage]:
        for message in messages:
            yield message

    return [reply async for reply in ScreeningClient(target).stream_messages(outgoing())]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """The sample's first 15 s (audio, JPEG frames, two captions) streamed to a recording server."""
    root = tmp_path_factory.mktemp("handoff")
    server = start_local_server(*SERVER_FLAGS, "--record", str(root / "sessions"))
    try:
        start = pb.SessionStart(
            session_id=SESSION_ID, audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1), language="en"
        )
        sent = [pb.ClientMessage(start=start), *sample_messages(15.0), pb.ClientMessage(end=pb.SessionEnd())]
        replies = asyncio.run(_stream(server.grpc_target, sent))
    finally:
        server.stop()
    stream_json = root / "stream.jsonl"
    stream_json.write_text("".join(message_json(reply) + "\n" for reply in replies))
    yield Recorded(stream_json, root / "sessions" / SESSION_ID / "stream-0", replies)


@pytest.fixture(scope="module")
def fresh_server() -> Iterator[LocalServer]:
    server = start_local_server(*SERVER_FLAGS)
    yield server
    server.stop()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`depscreen ARGV` in this process: exit code, standard output, standard error."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def sentence_updates(replies: list[pb.ServerMessage]) -> list[pb.SentenceUpdate]:
    return [reply.sentence for reply in replies if reply.WhichOneof("kind") == "sentence"]


def without_latency(update: dict) -> dict:
    """A sentence update as JSON, less the server's own timing (the one field two runs never share)."""
    return {key: value for key, value in update.items() if key != "latency_ms"}


# --- replay ------------------------------------------------------------------------------------------------


def test_a_replayed_recording_gives_the_recorded_sentences_and_estimates(
    recorded: Recorded, fresh_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    description = json.loads((recorded.folder / "stream.json").read_text())
    assert description["language"] == "en" and description["disable_asr"] is False
    assert description["model"]["model_id"] == recorded.replies[0].accepted.model.model_id

    code, out, err = run_cli(
        capsys, "replay", str(recorded.folder), "--server", fresh_server.grpc_target, "--speed", "0", "--json"
    )
    assert code == 0, err
    replayed = [json.loads(line) for line in out.splitlines()]
    assert list(replayed[0]) == ["accepted"] and list(replayed[-1]) == ["summary"]
    assert replayed[0]["accepted"]["session_id"] != SESSION_ID, "a replay is a new session"
    recorded_lines = [json.loads(line) for line in (recorded.folder / "sentences.jsonl").read_text().splitlines()]
    assert len(recorded_lines) >= 4
    replayed_lines = [line["sentence"] for line in replayed if "sentence" in line]
    assert [without_latency(u) for u in replayed_lines] == [without_latency(u) for u in recorded_lines]
    transcripts = " ".join(u.get("transcript", "") for u in replayed_lines)
    assert all(words in transcripts for words in CAPTION_WORDS), "the captions were replayed"


def test_replay_messages_follow_the_recorded_media_times(recorded: Recorded) -> None:
    recording = open_recording(recorded.folder.parent)  # a session folder with one stream is taken for it
    timed = list(recording.messages(chunk_ms=100))
    audio = [t for t in timed if t.message.WhichOneof("kind") == "audio"]
    assert [t.media_ms for t in audio] == sorted(t.media_ms for t in audio)
    assert audio[-1].media_ms == pytest.approx(recording.audio_seconds * 1000)
    assert sum(len(t.message.audio.data) for t in audio) == recording.audio_frames * 2
    frames = [t for t in timed if t.message.WhichOneof("kind") == "video"]
    assert len(frames) == len((recorded.folder / "frames.jsonl").read_text().splitlines()) >= 50
    for item in frames:
        assert item.message.video.timestamp_ms <= item.media_ms <= item.message.video.timestamp_ms + 100
        path = recorded.folder / "video" / f"{item.message.video.timestamp_ms}.jpeg"
        assert item.message.video.image == path.read_bytes()
    assert [t.message.caption.text for t in timed if t.message.WhichOneof("kind") == "caption"] == [
        c.text for c in CAPTIONS
    ]


def _drop(folder: Path, name: str) -> str:
    (folder / name).unlink()
    return name


def _cut(folder: Path, name: str, keep: int) -> str:
    path = folder / name
    path.write_bytes(path.read_bytes()[:keep])
    return name


def _first_frame(folder: Path) -> str:
    return "video/" + min((folder / "video").iterdir(), key=lambda p: int(p.stem)).name


DAMAGE = {
    "stream.json missing": lambda f: (_drop(f, "stream.json"), "is missing"),
    "stream.json truncated": lambda f: (_cut(f, "stream.json", 30), "truncated"),
    "audio.wav missing": lambda f: (_drop(f, "audio.wav"), "is missing"),
    "audio.wav truncated": lambda f: (_cut(f, "audio.wav", 44 + 16_000), "truncated"),
    "audio.wav header cut": lambda f: (_cut(f, "audio.wav", 20), "not a readable WAV"),
    "frames.jsonl missing": lambda f: (_drop(f, "frames.jsonl"), "is missing"),
    "frames.jsonl last line cut": lambda f: (
        _cut(f, "frames.jsonl", len((f / "frames.jsonl").read_bytes()) - 9),
        "truncated",
    ),
    "a frame missing": lambda f: (_drop(f, _first_frame(f)), "is missing"),
    "a frame truncated": lambda f: (_cut(f, _first_frame(f), 500), "truncated"),
    "captions.jsonl missing": lambda f: (_drop(f, "captions.jsonl"), "is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_recording_stops_naming_the_file(recorded: Recorded, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "stream-0"
    shutil.copytree(recorded.folder, copy)
    name, problem = DAMAGE[damage](copy)
    with pytest.raises(RecordingError, match=problem) as raised:
        open_recording(copy)
    assert str(copy / name) in str(raised.value)


def test_replay_of_a_damaged_recording_sends_nothing(
    recorded: Recorded, fresh_server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "stream-0"
    shutil.copytree(recorded.folder, copy)
    _cut(copy, "audio.wav", 44 + 1000)
    before = read_counter(fresh_server.metrics(), "depscreen_sessions_total")
    code, out, err = run_cli(capsys, "replay", str(copy), "--server", fresh_server.grpc_target, "--speed", "0")
    assert code == 2 and out == ""
    assert f"{copy / 'audio.wav'} is truncated" in err
    assert read_counter(fresh_server.metrics(), "depscreen_sessions_total") == before


def test_a_webrtc_style_recording_replays_its_raw_frames_and_refuses_a_cut_one(tmp_path: Path) -> None:
    recorder = SessionRecorder(tmp_path, "rtc", 48_000, 2, language="de", disable_asr=True)
    recorder.audio(bytes(range(256)) * 48)  # 3072 sample frames of 48 kHz stereo: 64 ms
    recorder.video(Video(40, numpy.zeros((2, 2, 3), dtype=numpy.uint8)))  # WebRTC hands over decoded pixels
    recorder.caption(Caption(10, 50, "hallo"))
    recorder.close()
    recording = open_recording(recorder.folder)
    assert (recording.start.language, recording.start.disable_asr) == ("de", True)
    assert recording.start.audio == pb.AudioFormat(sample_rate_hz=48_000, channels=2)
    kinds = [(t.message.WhichOneof("kind"), t.media_ms) for t in recording.messages(chunk_ms=20)]
    assert kinds == [("audio", 20), ("caption", 20), ("audio", 40), ("video", 40), ("audio", 60), ("audio", 64)]
    _cut(recorder.folder, "video/40.rgb24", 11)
    with pytest.raises(RecordingError, match=r"video/40.rgb24 is truncated"):
        open_recording(recorder.folder)


def test_replay_of_a_resumed_session_folder_asks_for_one_stream(recorded: Recorded, tmp_path: Path) -> None:
    session = tmp_path / SESSION_ID
    shutil.copytree(recorded.folder, session / "stream-0")
    shutil.copytree(recorded.folder, session / "stream-1")
    with pytest.raises(RecordingError, match=r"several streams .*stream-0, stream-1"):
        open_recording(session)


# --- FHIR export -------------------------------------------------------------------------------------------


def test_export_fhir_of_stream_json_is_a_valid_risk_assessment(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "assessment.json"
    argv = ["export", "fhir", str(recorded.stream_json), "--out", str(out), "--patient", "Patient/p-17"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "the model card URL 'docs/MODEL_CARD.md' is not absolute" in err, err
    code, _, err = run_cli(capsys, *argv, "--model-card-url", CARD_URL)
    assert code == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assessment = RiskAssessment.model_validate_json(out.read_text())
    summary = recorded.replies[-1].summary
    accepted = recorded.replies[0].accepted
    model = accepted.model
    assert assessment.status == "final"
    assert [(c.system, c.code) for c in assessment.code.coding] == [(SNOMED, "171207006")]
    assert [(c.system, c.code) for c in assessment.prediction[0].outcome.coding] == [(SNOMED, "35489007")]
    assert assessment.subject.reference == "Patient/p-17"
    assert assessment.identifier[0].value == SESSION_ID
    (prediction,) = assessment.prediction
    assert float(prediction.probabilityDecimal) == pytest.approx(summary.estimate.probability, abs=5e-5)
    assert f"evidence {summary.estimate.evidence:.2f}" in prediction.rationale
    for confidence in summary.estimate.modalities:
        name = pb.Modality.Name(confidence.modality).lower()
        expected = (
            f"{name}: its head {confidence.probability:.3f}, its pathway's fusion weight {confidence.weight:.2f}"
            if confidence.available
            else f"{name} unavailable"
        )
        assert expected in prediction.rationale
    assert assessment.method.coding[0].code == model.model_id
    (card,) = assessment.contained
    assert assessment.basis[0].reference == f"#{card.id}"
    assert card.content[0].attachment.url == CARD_URL
    assert any("not a diagnosis" in note.text for note in assessment.note)
    assert assessment.occurrenceDateTime is None, "the session's own span, not a moment"
    period = assessment.occurrencePeriod
    assert period.start == accepted.started_at.ToDatetime(tzinfo=UTC)
    assert (period.end - period.start).total_seconds() == pytest.approx(summary.audio_seconds, abs=1e-3)
    text = out.read_text()
    assert not any(words in text for words in CAPTION_WORDS), "no transcript unless asked for"


def test_export_fhir_includes_transcripts_only_when_asked(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "export", "fhir", str(recorded.stream_json), "--include-transcript", "--occurred", "2026-05-04T09:30",
        "--model-card-url", CARD_URL,
    )  # fmt: skip
    assert code == 0, err
    assessment = RiskAssessment.model_validate_json(out)
    assert assessment.occurrenceDateTime.isoformat() == "2026-05-04T09:30:00+00:00"
    notes = " ".join(note.text for note in assessment.note)
    assert all(words in notes for words in CAPTION_WORDS)
    assert assessment.subject.reference is None and SESSION_ID in assessment.subject.display


def test_export_fhir_of_a_recording_takes_model_and_time_from_stream_json(recorded: Recorded) -> None:
    from depscreen.clients.fhir import risk_assessment

    session = read_sentences(recorded.folder / "sentences.jsonl")
    assessment = risk_assessment(session, model_card_url=CARD_URL)
    description = json.loads((recorded.folder / "stream.json").read_text())
    last = sentence_updates(recorded.replies)[-1]
    assert assessment.status == "preliminary", "a recording does not show the session ended"
    assert float(assessment.prediction[0].probabilityDecimal) == pytest.approx(last.estimate.probability, abs=5e-5)
    assert assessment.method.coding[0].code == description["model"]["model_id"]
    assert assessment.occurrencePeriod.start.isoformat() == description["started_utc"]
    assert (assessment.occurrencePeriod.end - assessment.occurrencePeriod.start).total_seconds() == pytest.approx(
        last.end_ms / 1000
    )


def _sentence_line(probability: float = 0.3, index: int = 0, **estimate: object) -> str:
    body = {"index": index, "start_ms": "100", "end_ms": "900", "estimate": {"probability": probability, **estimate}}
    return json.dumps({"sentence": body})


MALFORMED = {
    "empty": ("", None, "is empty"),
    "blank lines only": ("\n\n  \n", None, "is empty"),
    "not JSON": (_sentence_line() + "\n{not json\n", 2, "not JSON"),
    "last line cut short": (_sentence_line() + "\n" + _sentence_line(index=1)[:-20], 2, "cut short"),
    "a JSON list": ("[1, 2]\n", 1, "expected a JSON object"),
    "neither kind": (_sentence_line() + '\n{"hello": 1}\n', 2, "neither a server message"),
    "sentence without estimate": ('{"sentence": {"index": 0}}\n', 1, "has no estimate"),
    "probability outside 0..1": (_sentence_line(1.5) + "\n", 1, "probability 1.5 is outside 0..1"),
    "wrong field type": ('{"sentence": {"index": "first", "estimate": {}}}\n', 1, "not a valid `sentence`"),
    "no sentence at all": ('{"accepted": {"session_id": "x"}}\n', None, "holds no sentence update"),
    "interval upside down": (
        _sentence_line(0.4, interval_low=0.6, interval_high=0.2) + "\n",
        1,
        "interval .* is not within 0..1",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_sentences_file_names_the_line(tmp_path: Path, case: str) -> None:
    content, line, problem = MALFORMED[case]
    path = tmp_path / "sentences.jsonl"
    path.write_text(content)
    with pytest.raises(SentencesError, match=problem) as raised:
        read_sentences(path)
    assert (f"{path}:{line}:" if line else str(path)) in str(raised.value)


@pytest.mark.parametrize("command", [["export", "fhir", "FILE"], ["plot", "FILE", "--out", "unused.png"]])
def test_the_commands_refuse_a_malformed_file_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = tmp_path / "stream.jsonl"
    path.write_text(_sentence_line() + "\n" + '{"sentence": {"index": 1, "estimate": {"probability": -0.2}}}\n')
    argv = [
        str(path) if part == "FILE" else str(tmp_path / part) if part.endswith(".png") else part for part in command
    ]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert f"{path}:2: estimate probability -0.2 is outside 0..1" in err
    assert not (tmp_path / "unused.png").exists()


# --- plot --------------------------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


@pytest.mark.parametrize(("flags", "size"), [((), (1200, 700)), (("--size", "800x450"), (800, 450))])
def test_plot_writes_a_png_of_the_asked_size(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], size: tuple
) -> None:
    out = tmp_path / "session.png"
    code, _, err = run_cli(capsys, "plot", str(recorded.stream_json), "--out", str(out), *flags)
    assert code == 0, err
    assert _png_size(out) == size
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def _line(figure: Figure, gid: str) -> Artist:
    """The one artist of `figure` with this gid."""
    found = [artist for axes in figure.axes for artist in axes.get_children() if artist.get_gid() == gid]
    assert len(found) == 1, f"one artist with gid {gid}, found {len(found)}"
    return found[0]


def test_the_plotted_series_are_the_input(recorded: Recorded) -> None:
    session = read_sentences(recorded.stream_json)
    updates = sentence_updates(recorded.replies)
    figure = draw(session)
    audio_seconds = recorded.replies[-1].summary.audio_seconds
    times = [u.end_ms / 1000 for u in updates]

    estimate = _line(figure, "estimate")
    assert list(estimate.get_xdata()) == pytest.approx([*times, audio_seconds])
    probabilities = [u.estimate.probability for u in updates]
    assert list(estimate.get_ydata()) == pytest.approx([*probabilities, probabilities[-1]])
    assert list(_line(figure, "estimate-updates").get_ydata()) == pytest.approx(probabilities)
    evidence = [u.estimate.evidence for u in updates]
    assert list(_line(figure, "evidence").get_ydata()) == pytest.approx([*evidence, evidence[-1]])

    for kind in (pb.AUDIO, pb.VIDEO, pb.TEXT):
        confidences = [next(m for m in u.estimate.modalities if m.modality == kind) for u in updates]
        first = next(i for i, c in enumerate(confidences) if c.available)  # captions give two sentences text
        expected = [math.nan] * first + [c.probability for c in confidences[first:]]
        line = _line(figure, f"modality-{pb.Modality.Name(kind).lower()}")
        numpy.testing.assert_allclose(line.get_ydata(), [*expected, expected[-1]], rtol=1e-6)
    spans = _line(figure, "speech").get_paths()
    assert len(spans) == len(updates)


def test_an_interval_in_the_data_is_drawn_as_a_band_and_exported(recorded: Recorded, tmp_path: Path) -> None:
    from depscreen.clients.fhir import risk_assessment

    lines = []
    intervals = []
    for number, line in enumerate(recorded.stream_json.read_text().splitlines()):
        value = json.loads(line)
        if "sentence" in value:
            p = value["sentence"]["estimate"]["probability"]
            low, high = max(0.0, p - 0.05 - 0.01 * number), min(1.0, p + 0.04)
            value["sentence"]["estimate"] |= {
                "interval_low": low,
                "interval_high": high,
                "interval_level": 0.9,
                "enough_speech": True,
            }
            intervals.append((low, high))
        lines.append(json.dumps(value))
    path = tmp_path / "with-interval.jsonl"
    path.write_text("\n".join(lines) + "\n")
    session = read_sentences(path)
    assert [point.interval for point in session.sentences] == intervals

    band = _line(draw(session), "interval")
    vertices = band.get_paths()[0].vertices
    assert numpy.nanmin(vertices[:, 1]) == pytest.approx(min(low for low, _ in intervals))
    assert numpy.nanmax(vertices[:, 1]) == pytest.approx(max(high for _, high in intervals))
    rationale = risk_assessment(session, model_card_url=CARD_URL).prediction[0].rationale
    assert f"Interval {intervals[-1][0]:.3f} to {intervals[-1][1]:.3f} (90% nominal coverage" in rationale
    narrative = risk_assessment(session, model_card_url=CARD_URL).text.div
    assert f"interval {intervals[-1][0] * 100:.1f}%-{intervals[-1][1] * 100:.1f}% (90% nominal coverage" in narrative


def test_replay_takes_the_session_options_of_stream_and_ends_like_it(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    def options(command: str) -> set[str]:
        parser = build_parser(command)
        subcommand = next(a for a in parser._actions if a.dest == "command").choices[command]
        return {option for action in subcommand._actions for option in action.option_strings}

    shared = {"--server", "--speed", "--chunk-ms", "--session-id", "--json", "--token", "--tls-ca", "--tls-cert"}
    assert shared | {"--tls-key"} <= options("replay") & options("stream")
    code, out, err = run_cli(capsys, "replay", str(recorded.folder), "--server", "127.0.0.1:1", "--speed", "0")
    assert (code, out) == (1, "") and err.startswith("error: UNAVAILABLE"), err


def _rewritten(recorded: Recorded, path: Path, change: Callable[[dict], None]) -> Path:
    """The session's `stream --json` lines with `change` applied to each message, written to `path`."""
    lines = []
    for line in recorded.stream_json.read_text().splitlines():
        value = json.loads(line)
        change(value)
        lines.append(json.dumps(value))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_rationale_gives_a_language_head_its_own_weight_not_the_encoders(
    recorded: Recorded, tmp_path: Path
) -> None:
    from depscreen.clients.fhir import risk_assessment

    def own_head(value: dict) -> None:
        """An English session scored beside the estimate by the English head (a server would say so)."""
        if "accepted" in value:
            value["accepted"]["coded_notices"] = [{"code": "text_own_head", "text": "the en text head"}]
        for body in (value.get("sentence"), value.get("summary")):
            for modality in (body or {}).get("estimate", {}).get("modalities", []):
                if modality["modality"] == "TEXT":
                    modality |= {"available": True, "probability": 0.71, "weight": 0.25}

    session = read_sentences(_rewritten(recorded, tmp_path / "own-head.jsonl", own_head))
    assert session.notice_codes == ("text_own_head",)
    rationale = risk_assessment(session, model_card_url=CARD_URL).prediction[0].rationale
    text = next(m for m in session.final.modalities if m.modality == pb.TEXT)
    assert (
        f"text: its language's own text head {text.probability:.3f}, beside the estimate with weight 0 in it "
        f"(the model's text pathway had fusion weight {text.weight:.2f})"
    ) in rationale
    assert f"text: its head {text.probability:.3f}" not in rationale


def test_export_fhir_refuses_a_session_whose_start_is_unknown(recorded: Recorded, tmp_path: Path) -> None:
    from depscreen.clients.fhir import risk_assessment

    def older_server(value: dict) -> None:
        if "accepted" in value:
            value["accepted"].pop("started_at")

    session = read_sentences(_rewritten(recorded, tmp_path / "no-start.jsonl", older_server))
    assert session.started is None
    with pytest.raises(ValueError, match=r"when the session took place is unknown .* pass --occurred"):
        risk_assessment(session, model_card_url=CARD_URL)
    with pytest.raises(ValueError, match="is not absolute"):
        risk_assessment(session, model_card_url="MODEL_CARD.md", occurred=datetime(2026, 5, 4, tzinfo=UTC))


def _pixels(figure: Figure) -> numpy.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return numpy.asarray(canvas.buffer_rgba())[..., :3]


def test_the_plot_shows_the_final_value_inside_the_frame_and_shades_the_stretch_without_enough_speech(
    recorded: Recorded, tmp_path: Path
) -> None:
    enough_from = 2

    def enough_after_two(value: dict) -> None:
        if "sentence" in value:
            value["sentence"]["estimate"]["enough_speech"] = value["sentence"].get("index", 0) >= enough_from

    session = read_sentences(_rewritten(recorded, tmp_path / "enough.jsonl", enough_after_two))
    figure = draw(session)
    pixels = _pixels(figure)
    axes = figure.axes[0]
    left, right = axes.get_xlim()
    final = session.final.probability

    marker = _line(figure, "final")
    assert list(marker.get_ydata()) == pytest.approx([final]) and left < marker.get_xdata()[0] < right
    label = _line(figure, "final-label")
    assert label.get_text() == f"final {final * 100:.1f}%"
    frame = axes.get_window_extent()
    box = label.get_window_extent()
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, "inside"

    shade = _line(figure, "not-enough-speech")
    enough_s = session.sentences[enough_from].end_ms / 1000
    assert (shade.get_x(), shade.get_x() + shade.get_width()) == pytest.approx((0.0, enough_s))

    shade.set_visible(False)
    unshaded = _pixels(figure)
    height = pixels.shape[0]
    rows = slice(height - int(frame.y1) + 2, height - int(frame.y0) - 2)

    def changed(x_s: float) -> float:
        """The share of the estimate panel's pixel column at `x_s` seconds that the shading changes."""
        column = round(axes.transData.transform((x_s, 0))[0])
        return float(numpy.any(pixels[rows, column] != unshaded[rows, column], axis=-1).mean())

    assert changed(enough_s / 2) > 0.8, "the stretch without enough speech is shaded"
    assert changed((enough_s + right) / 2) == 0.0, "and nothing after it"
