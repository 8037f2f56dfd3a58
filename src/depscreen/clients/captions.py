"""SRT and WebVTT caption files parsed into `Caption(start_ms, end_ms, text)` messages on the audio clock."""

from __future__ import annotations

import html
import re
from pathlib import Path

from depscreen.v1 import screening_pb2

_TIMESTAMP = re.compile(r"(?:(?P<hours>\d+):)?(?P<minutes>\d{1,2}):(?P<seconds>\d{2})[,.](?P<millis>\d{3})")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
_VTT_SKIPPED_BLOCKS = ("NOTE", "STYLE", "REGION")


class CaptionError(ValueError):
    """A caption file that cannot be read or parsed; the message names the file and line."""


def read_captions(path: str | Path) -> list[screening_pb2.Caption]:
    """Parse an SRT or WebVTT file (told apart by the `WEBVTT` header), sorted by start time."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise CaptionError(f"cannot read captions {path}: {getattr(error, 'strerror', None) or error}") from error
    return parse_captions(text, name=str(path))


def parse_captions(text: str, *, name: str = "<captions>") -> list[screening_pb2.Caption]:
    """Parse SRT or WebVTT text into captions sorted by start time; cues without text are left out.

    Tolerates a byte-order mark, CRLF or CR line ends, a missing final blank line, WebVTT headers, NOTE,
    STYLE and REGION blocks, cue settings, markup tags and HTML entities. A cue's lines are joined with single spaces.
    Timestamps are `HH:MM:SS,mmm` or `MM:SS.mmm` (either decimal mark). Raises `CaptionError` naming the
    line of a malformed timing line or of a block that has none.
    """
    lines = text.removeprefix("\ufeff").splitlines()
    webvtt = bool(lines) and lines[0].startswith("WEBVTT")
    captions: list[screening_pb2.Caption] = []
    for first, block in _blocks(lines):
        if webvtt and (first == 1 or block[0].split(" ", 1)[0] in _VTT_SKIPPED_BLOCKS):
            continue
        timing = next((offset for offset, line in enumerate(block[:2]) if "-->" in line), None)
        if timing is None:
            raise CaptionError(f"{name}:{first}: expected a timing line 'start --> end', got {block[0]!r}")
        start_ms, end_ms = _timing(block[timing], name, first + timing)
        words = html.unescape(" ".join(" ".join(_TAG.sub("", line).split()) for line in block[timing + 1 :]))
        if words:
            captions.append(screening_pb2.Caption(start_ms=start_ms, end_ms=end_ms, text=words))
    captions.sort(key=lambda caption: caption.start_ms)
    return captions


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Runs of non-blank lines with the 1-based line number of each run's first line."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not current:
                blocks.append((number, current))
            current.append(line)
        else:
            current = []
    return blocks


def _timing(line: str, name: str, number: int) -> tuple[int, int]:
    start, _, rest = line.partition("-->")
    fields = rest.split()
    start_ms = _milliseconds(start.strip(), name, number)
    end_ms = _milliseconds(fields[0] if fields else "", name, number)
    if end_ms < start_ms:
        raise CaptionError(f"{name}:{number}: cue ends before it starts in {line.strip()!r}")
    return start_ms, end_ms


def _milliseconds(stamp: str, name: str, number: int) -> int:
    match = _TIMESTAMP.fullmatch(stamp)
    if match is None or int(match["seconds"]) > 59 or (match["hours"] is not None and int(match["minutes"]) > 59):
        raise CaptionError(f"{name}:{number}: malformed timestamp {stamp!r} (expected HH:MM:SS,mmm or MM:SS.mmm)")
    hours = int(match["hours"] or 0)
    return ((hours * 60 + int(match["minutes"])) * 60 + int(match["seconds"])) * 1000 + int(match["millis"])
