"""SessionRecorder: with `--record DIR`, what each session received and what the server concluded, on disk.

Off by default: without `record` nothing of a session (audio, video, captions, transcripts) reaches disk.
Turning it on is the operator's decision, and so are consent, retention and encryption at rest. Each stream of
a session writes one folder, `DIR/<session folder>/stream-<n>/` (a resumed session gets the next n), folders
mode 0700 and files 0600; on a server that authenticates, under the folder of the session's principal,
`DIR/principal-<fingerprint>/<session folder>/`, so a session id chosen by one tenant never writes into
another's. The session folder is the session id when that is a plain name (letters, digits, `.`, `_`, `-`; at
most 128); any other id (a client chooses it: `../`, `/`, spaces) becomes `session-<hash>`, so no id can write
outside DIR. In each stream folder:

- `stream.json`: the session id as given, the principal's fingerprint (null on an open server), the audio
  format, channel roles, language and ASR opt-out of its `start`, the model that scored it (`ModelInfo`), and
  when the stream started (UTC): what `depscreen replay` and `depscreen export fhir` need besides the media;
- `audio.wav`: the audio exactly as the client sent it (16-bit PCM at its own rate and channels); the WAV
  header is brought up to date after every chunk, so a killed server leaves a readable file;
- `video/<timestamp_ms>.<jpeg|png|rgb24>`: each video frame the server analysed, as it arrived (`rgb24` frames
  are raw bytes; their size is in `frames.jsonl`);
- `frames.jsonl`, `captions.jsonl`: one line per analysed video frame (timestamp, format, size) and per caption
  the session took (a clinician's caption with `"role": "clinician"`);
- `sentences.jsonl`: one line per closed sentence, as the client received it (span, transcript, estimate).

The recorder follows its session as an observer (`session.py`: `took` each input once the session checked and
accepted it, `scored` each sentence): an input the session refused, dropped or shed never reaches disk. Every
write is measured against the `RecordBudget` first: a stream's recording holds at most `record_session_bytes`,
and the folder at most `record_total_bytes` (counted from its size at start). A recording that fails (disk
full, folder removed, a budget spent) stops for that session with one warning naming why (and the setting) and
an `errors_total{code="record"}` (`record_failed`); the interview goes on. Nothing here logs media or text.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import wave
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from google.protobuf.json_format import MessageToDict

from depscreen.engine.features.face import EncodedImage
from depscreen.streamer.convert import sentence_update
from depscreen.streamer.interview import Audio, Caption, ClinicianCaption, Input, ScoredSentence, Video
from depscreen.streamer.metrics import Metrics
from depscreen.v1 import screening_pb2 as pb

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpeg", "png", "rgb24")
"""Image formats recorded under their own extension; any other is recorded as `.bin`."""
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def session_folder_name(session_id: str) -> str:
    """A folder name for the session: the id itself when it is a plain name, else `session-<16 hex of its hash>`."""
    if PLAIN_NAME.fullmatch(session_id):
        return session_id
    return f"session-{hashlib.sha256(session_id.encode()).hexdigest()[:16]}"


def _private_folder(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _private_file(path: Path, mode: str = "wb") -> IO:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(descriptor, mode)


def prepare_record_folder(root: Path) -> None:
    """Create `root` (0700) and prove it writable; OSError says why not."""
    _private_folder(root)
    probe = root / ".depscreen-write-test"
    with _private_file(probe) as handle:
        handle.write(b"")
    probe.unlink()


class RecordFull(OSError):
    """A write the record budget has no room for; `strerror` names the budget and its setting."""


class RecordBudget:
    """Bytes the recordings of one server may take: each stream at most `session_bytes`, the folder at most
    `total_bytes` (starting from `used`, its size at start); 0 = no limit."""

    def __init__(self, session_bytes: int = 0, total_bytes: int = 0, used: int = 0) -> None:
        self.session_bytes = session_bytes
        self.total_bytes = total_bytes
        self.used = used

    def check_room(self) -> None:
        """RecordFull when the folder is already full (a new stream is not recorded)."""
        if self.total_bytes and self.used >= self.total_bytes:
            raise RecordFull(errno.ENOSPC, self._total_message())

    def take(self, stream_used: int, size: int) -> None:
        """Count `size` more bytes of a stream that wrote `stream_used`; RecordFull (nothing counted) when either
        budget has no room for them."""
        if self.session_bytes and stream_used + size > self.session_bytes:
            raise RecordFull(
                errno.EFBIG,
                f"its recording reached record_session_bytes={self.session_bytes}; raise it to record longer streams",
            )
        if self.total_bytes and self.used + size > self.total_bytes:
            raise RecordFull(errno.ENOSPC, self._total_message())
        self.used += size

    def _total_message(self) -> str:
        return (
            f"the record folder reached record_total_bytes={self.total_bytes}; move recordings away (then restart) "
            "or raise it"
        )


def folder_bytes(root: Path) -> int:
    """Bytes the files under `root` take (what a record budget starts from)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).lstat().st_size
    return total


class SessionRecorder:
    """One stream's recording (see the module docstring). Every method raises OSError when the disk fails."""

    def __init__(
        self,
        root: Path,
        session_id: str,
        sample_rate_hz: int,
        channels: int,
        *,
        language: str = "",
        disable_asr: bool = False,
        channel_roles: tuple[str, ...] = (),
        model: pb.ModelInfo | None = None,
        on_failure: Callable[[OSError], None] | None = None,
        budget: RecordBudget | None = None,
        principal: str | None = None,
    ) -> None:
        """`on_failure`: told the error when the disk fails (or `budget` has no room) while the recorder follows
        its session (`took`, `scored`); it records nothing more after that. RecordFull, before anything is
        written, when the budget's folder is already full. `principal`: the fingerprint of who opened the session
        (`auth.principal_fingerprint`), None on an open server."""
        self._on_failure = on_failure
        self._failed = False
        self._budget = budget or RecordBudget()
        self._budget.check_room()
        self.bytes_written = 0
        owner = root if principal is None else root / f"principal-{principal}"
        session_folder = owner / session_folder_name(session_id)
        _private_folder(root)
        _private_folder(owner)
        _private_folder(session_folder)
        number = 0
        while True:
            self.folder = session_folder / f"stream-{number}"
            try:
                self.folder.mkdir(mode=0o700)
                break
            except FileExistsError:
                number += 1
        _private_folder(self.folder / "video")
        with _private_file(self.folder / "stream.json", "w") as handle:
            started = datetime.now(UTC).isoformat(timespec="seconds")
            description = {
                "session_id": session_id,
                "principal": principal,
                "sample_rate_hz": sample_rate_hz,
                "channels": channels,
                "language": language,
                "disable_asr": disable_asr,
                "channel_roles": list(channel_roles),
                "started_utc": started,
            }
            if model is not None:
                description["model"] = MessageToDict(model, preserving_proto_field_name=True)
            text = json.dumps(description, ensure_ascii=False)
            self._take(len(text.encode()))
            handle.write(text)
        self._audio_file = _private_file(self.folder / "audio.wav")
        self._wav = wave.open(self._audio_file, "wb")  # noqa: SIM115 (open for the session's life; close() ends it)
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate_hz)
        self._frames = _private_file(self.folder / "frames.jsonl", "w")
        self._captions = _private_file(self.folder / "captions.jsonl", "w")
        self._sentences = _private_file(self.folder / "sentences.jsonl", "w")

    def audio(self, data: bytes) -> None:
        self._take(len(data))
        self._wav.writeframes(data)
        self._audio_file.flush()

    def video(self, frame: Video) -> None:
        """A frame as it arrived: encoded bytes as they are, pixels (from WebRTC) as raw `rgb24`."""
        image = frame.image
        if isinstance(image, EncodedImage):
            extension = image.fmt if image.fmt in IMAGE_EXTENSIONS else "bin"
            data, width, height = image.data, image.width, image.height
        else:
            extension, data, (height, width) = "rgb24", image.tobytes(), image.shape[:2]
        self._take(len(data))
        with _private_file(self.folder / "video" / f"{frame.timestamp_ms}.{extension}") as handle:
            handle.write(data)
        self._line(
            self._frames, {"timestamp_ms": frame.timestamp_ms, "format": extension, "width": width, "height": height}
        )

    def caption(self, caption: Caption, role: str = "") -> None:
        """A caption as it arrived; `role` "clinician" for the clinician's words (the patient's carry none)."""
        line = {"start_ms": caption.start_ms, "end_ms": caption.end_ms, "text": caption.text}
        self._line(self._captions, {**line, "role": role} if role else line)

    def sentence(self, sentence: ScoredSentence) -> None:
        self._line(self._sentences, MessageToDict(sentence_update(sentence), preserving_proto_field_name=True))

    def took(self, item: Input) -> None:
        """Record an input the session accepted (as an observer); the end is not recorded."""
        if isinstance(item, Audio):
            self._guarded(self.audio, item.pcm)
        elif isinstance(item, Video):
            self._guarded(self.video, item)
        elif isinstance(item, Caption):
            self._guarded(self.caption, item)
        elif isinstance(item, ClinicianCaption):
            self._guarded(self.caption, item.caption, "clinician")

    async def scored(self, sentence: ScoredSentence) -> None:
        self._guarded(self.sentence, sentence)

    def _guarded(self, write: Callable[..., None], *args: object) -> None:
        """A write while following the session: after a failure nothing more; a failure closes the recording."""
        if self._failed:
            return
        try:
            write(*args)
        except OSError as error:
            self._failed = True
            self.close()
            if self._on_failure is not None:
                self._on_failure(error)

    def close(self) -> None:
        """Finish the files (idempotent; errors on the way are ignored: the data is already written)."""
        for handle in (self._wav, self._audio_file, self._frames, self._captions, self._sentences):
            with contextlib.suppress(OSError):
                handle.close()

    def _take(self, size: int) -> None:
        """Count `size` bytes about to be written against the budget (RecordFull when there is no room)."""
        self._budget.take(self.bytes_written, size)
        self.bytes_written += size

    def _line(self, handle: IO, value: dict) -> None:
        line = json.dumps(value, ensure_ascii=False) + "\n"
        self._take(len(line.encode()))
        handle.write(line)
        handle.flush()


def record_failed(metrics: Metrics, session_id: str, error: OSError) -> None:
    """Count and log (once, without media or text) a session's recording that failed: it is no longer recorded."""
    metrics.errors_total.labels(code="record").inc()
    log.warning("session %s is no longer recorded: %s", session_id, error.strerror or type(error).__name__)
