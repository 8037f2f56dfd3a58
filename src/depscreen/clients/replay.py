"""A recording made with `depscreen serve --record` read back as the client messages that made it.

A stream folder (`DIR/<session>/stream-<n>/`, see `streamer/record.py`) holds the audio exactly as sent, every
video frame, the captions and the stream's `start` options. `open_recording` checks all of it before anything
is sent (a missing, unreadable or truncated file is a `RecordingError` naming the file); `Recording.messages`
then yields the audio in chunks, read lazily, with each frame and caption right after the audio that reaches
its timestamp, which is how the bundled client sends a file. Where a frame or caption came relative to the
audio in the original stream is not recorded, so one that arrived late is replayed on time.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from depscreen.v1 import screening_pb2 as pb

from .media import TimedMessage

DESCRIPTION = "stream.json"
AUDIO = "audio.wav"
FRAMES = "frames.jsonl"
CAPTIONS = "captions.jsonl"
VIDEO_FOLDER = "video"
FORMATS = {"jpeg": pb.JPEG, "png": pb.PNG, "rgb24": pb.RGB24}
ROLES = ("PATIENT", "CLINICIAN")
JPEG_END = b"\xff\xd9"
PNG_END = b"IEND\xaeB`\x82"


class RecordingError(ValueError):
    """A recording that cannot be replayed: the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class RecordedFrame:
    timestamp_ms: int
    path: Path
    format: int
    width: int
    height: int


@dataclass(frozen=True)
class Recording:
    """A checked stream folder: its `start` options, audio file, frames and captions (in recorded order)."""

    folder: Path
    start: pb.SessionStart
    audio_frames: int
    frames: list[RecordedFrame]
    captions: list[pb.Caption]

    @property
    def audio_seconds(self) -> float:
        return self.audio_frames / self.start.audio.sample_rate_hz

    def messages(self, chunk_ms: int = 100) -> Iterator[TimedMessage]:
        """Audio chunks of `chunk_ms` with the frames and captions due by each chunk's end after it (captions
        before frames only when earlier), stamped with their media time; the rest after the last chunk."""
        if chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        rate = self.start.audio.sample_rate_hz
        chunk_frames = max(1, rate * chunk_ms // 1000)
        timed = sorted(
            [(frame.timestamp_ms, 0, order, frame) for order, frame in enumerate(self.frames)]
            + [(caption.start_ms, 1, order, caption) for order, caption in enumerate(self.captions)],
            key=lambda item: item[:3],
        )
        due = 0
        sent_frames = 0
        with wave.open(str(self.folder / AUDIO), "rb") as audio:
            while sent_frames < self.audio_frames:
                data = audio.readframes(min(chunk_frames, self.audio_frames - sent_frames))
                if not data:
                    raise RecordingError(f"{self.folder / AUDIO} ended early: it was truncated while replaying")
                sent_frames += len(data) // audio.getsampwidth() // audio.getnchannels()
                media_ms = sent_frames * 1000 / rate
                yield TimedMessage(media_ms, pb.ClientMessage(audio=pb.AudioChunk(data=data)))
                while due < len(timed) and timed[due][0] <= media_ms:
                    yield TimedMessage(media_ms, self._message(timed[due][3]))
                    due += 1
        media_ms = sent_frames * 1000 / rate
        for item in timed[due:]:
            yield TimedMessage(media_ms, self._message(item[3]))

    def _message(self, item: RecordedFrame | pb.Caption) -> pb.ClientMessage:
        if isinstance(item, pb.Caption):
            return pb.ClientMessage(caption=item)
        try:
            image = item.path.read_bytes()
        except OSError as error:
            raise RecordingError(f"cannot read {item.path}: {error.strerror}") from error
        frame = pb.VideoFrame(
            timestamp_ms=item.timestamp_ms, image=image, format=item.format, width=item.width, height=item.height
        )
        return pb.ClientMessage(video=frame)


def open_recording(folder: str | Path) -> Recording:
    """Check a stream folder and describe it; RecordingError names the first file that is missing or broken.

    A session folder holding a single stream folder is taken for that stream.
    """
    folder = _stream_folder(Path(folder))
    description = _description(folder / DESCRIPTION)
    start = pb.SessionStart(
        audio=pb.AudioFormat(sample_rate_hz=description["sample_rate_hz"], channels=description["channels"]),
        language=str(description.get("language", "")),
        disable_asr=bool(description.get("disable_asr", False)),
        channel_roles=_roles(description.get("channel_roles", []), folder / DESCRIPTION),
    )
    audio_frames = _check_audio(folder / AUDIO, start.audio)
    frames = [_frame(folder, line, where) for line, where in _json_lines(folder / FRAMES)]
    captions = [_caption(line, where) for line, where in _json_lines(folder / CAPTIONS)]
    return Recording(folder, start, audio_frames, frames, captions)


def _stream_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise RecordingError(f"{folder} is not a folder: give a recording's stream folder (DIR/<session>/stream-<n>)")
    if (folder / DESCRIPTION).exists():
        return folder
    streams = sorted(path for path in folder.glob("stream-*") if path.is_dir())
    if len(streams) == 1:
        return streams[0]
    if streams:
        names = ", ".join(path.name for path in streams)
        raise RecordingError(f"{folder} holds several streams of a resumed session ({names}): replay one of them")
    raise RecordingError(f"{folder / DESCRIPTION} is missing: is {folder} a recording's stream folder?")


def _description(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RecordingError(f"cannot read {path}: {error.strerror}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordingError(f"{path} is not valid JSON ({error}): the file is truncated or damaged") from error
    if not isinstance(value, dict):
        raise RecordingError(f"{path}: expected a JSON object describing the stream")
    for key in ("sample_rate_hz", "channels"):
        if not isinstance(value.get(key), int) or value[key] <= 0:
            raise RecordingError(f"{path}: `{key}` must be a positive integer, got {value.get(key)!r}")
    return value


def _check_audio(path: Path, audio_format: pb.AudioFormat) -> int:
    """The number of audio frames `path` holds, after checking it matches the stream and its header."""
    try:
        with wave.open(str(path), "rb") as audio:
            shape = (audio.getframerate(), audio.getnchannels(), audio.getsampwidth())
            frames = audio.getnframes()
            if frames:
                audio.setpos(frames - 1)
                last = audio.readframes(1)
    except FileNotFoundError:
        raise RecordingError(f"{path} is missing: the recording has no audio to replay") from None
    except OSError as error:
        raise RecordingError(f"cannot read {path}: {error.strerror}") from error
    except (wave.Error, EOFError) as error:
        raise RecordingError(
            f"{path} is not a readable WAV file ({error or 'cut short'}): truncated or damaged"
        ) from None
    if shape != (audio_format.sample_rate_hz, audio_format.channels, 2):
        raise RecordingError(
            f"{path} holds {shape[0]} Hz, {shape[1]} channels, {8 * shape[2]}-bit audio, but {DESCRIPTION} says "
            f"{audio_format.sample_rate_hz} Hz, {audio_format.channels} channels, 16-bit"
        )
    if frames and len(last) != shape[1] * shape[2]:
        raise RecordingError(
            f"{path} is truncated: its header promises {frames} sample frames but the data ends sooner"
        )
    return frames


def _json_lines(path: Path) -> Iterator[tuple[dict, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordingError(f"{path} is missing: a recording has one, empty when nothing was sent") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecordingError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from error
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordingError(f"{where}: not JSON ({error.msg}): the line is truncated or damaged") from None
        if not isinstance(value, dict):
            raise RecordingError(f"{where}: expected a JSON object, got {type(value).__name__}")
        yield value, where


def _integer(value: dict, key: str, where: str) -> int:
    number = value.get(key)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise RecordingError(f"{where}: `{key}` must be a non-negative integer, got {number!r}")
    return number


def _frame(folder: Path, value: dict, where: str) -> RecordedFrame:
    timestamp_ms = _integer(value, "timestamp_ms", where)
    extension = value.get("format")
    if extension not in FORMATS:
        raise RecordingError(f"{where}: format {extension!r} cannot be replayed (expected one of {sorted(FORMATS)})")
    width, height = _integer(value, "width", where), _integer(value, "height", where)
    path = folder / VIDEO_FOLDER / f"{timestamp_ms}.{extension}"
    try:
        size = path.stat().st_size
        with path.open("rb") as image:
            image.seek(max(0, size - len(PNG_END)))
            tail = image.read()
    except FileNotFoundError:
        raise RecordingError(f"{path} is missing ({where} lists it)") from None
    except OSError as error:
        raise RecordingError(f"cannot read {path}: {error.strerror}") from error
    truncated = (
        (extension == "rgb24" and size != width * height * 3)
        or (extension == "jpeg" and not tail.endswith(JPEG_END))
        or (extension == "png" and not tail.endswith(PNG_END))
    )
    if truncated:
        raise RecordingError(f"{path} is truncated: it does not end like a whole {extension} image ({size} bytes)")
    return RecordedFrame(timestamp_ms, path, FORMATS[extension], width, height)


def _caption(value: dict, where: str) -> pb.Caption:
    start_ms, end_ms = _integer(value, "start_ms", where), _integer(value, "end_ms", where)
    text = value.get("text")
    if not isinstance(text, str):
        raise RecordingError(f"{where}: `text` must be a string, got {type(text).__name__}")
    role = _roles([value["role"]], where)[0] if "role" in value else pb.ROLE_UNSPECIFIED
    return pb.Caption(start_ms=start_ms, end_ms=end_ms, text=text, role=role)


def _roles(names: object, where: object) -> list[pb.Role.ValueType]:
    """Recorded role names ("patient", "clinician") as wire roles; RecordingError for anything else."""
    if not isinstance(names, list) or not all(isinstance(name, str) and name.upper() in ROLES for name in names):
        raise RecordingError(f"{where}: roles must be a list of {' or '.join(ROLES).lower()}, got {names!r}")
    return [pb.Role.Value(name.upper()) for name in names]
