"""Read a session's sentence updates from `depscreen stream --json` output or a recording's `sentences.jsonl`.

Both are JSON lines. `stream --json` writes one server message per line (`{"accepted": …}`, `{"sentence": …}`,
`{"summary": …}`); a recording (`depscreen serve --record`) writes one bare `SentenceUpdate` per line, and its
`stream.json` beside it says which session, model and start time the updates belong to. Every problem is a
`SentencesError` naming the file and line. Fields this version does not know are kept out of the typed
messages. A sentence's interval is there when its estimate has `interval_low` or `interval_high` (JSON leaves
out a field at its default, so a missing one of the pair is 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from google.protobuf.json_format import ParseDict, ParseError

from depscreen.v1 import screening_pb2 as pb

STREAM_KINDS = ("accepted", "sentence", "summary")
"""The keys of a `stream --json` line (one server message each)."""
M = TypeVar("M", pb.SessionAccepted, pb.SessionSummary, pb.SentenceUpdate, pb.ModelInfo)
RECORDING_DESCRIPTION = "stream.json"
"""The file beside a recording's `sentences.jsonl` that describes its stream (`streamer/record.py`)."""


class SentencesError(ValueError):
    """A sentences file that cannot be read or holds something other than sentence updates; names file and line."""


@dataclass(frozen=True)
class SentencePoint:
    """One sentence update: its span on the audio clock, transcript, running estimate and optional interval."""

    index: int
    start_ms: int
    end_ms: int
    transcript: str
    transcript_source: str
    estimate: pb.Estimate
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class ScreenedSession:
    """What a sentences file tells about one session: its updates in index order and what it knows besides."""

    source: Path
    session_id: str
    model: pb.ModelInfo | None
    sentences: list[SentencePoint]
    summary: pb.SessionSummary | None
    started: datetime | None
    """When the session started: its first `accepted`'s `started_at`, or `stream.json` beside a file of bare
    updates; None when unknown (a file from a server before protocol 1.1)."""
    notice_codes: tuple[str, ...] = ()
    """The codes of the first `accepted`'s notices (e.g. `text_own_head`)."""

    @property
    def final(self) -> pb.Estimate:
        """The estimate after everything heard: the summary's, else the last sentence's."""
        if self.summary is not None and self.summary.HasField("estimate"):
            return self.summary.estimate
        return self.sentences[-1].estimate

    @property
    def final_interval(self) -> tuple[float, float] | None:
        """The last sentence's interval, if the data has one (a summary carries none)."""
        return self.sentences[-1].interval

    @property
    def finished(self) -> bool:
        """Whether the file shows the session ended (a summary arrived) rather than stopping mid-way."""
        return self.summary is not None


def read_sentences(path: str | Path) -> ScreenedSession:
    """Parse a sentences file of either kind (told apart line by line); SentencesError says what is wrong where."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SentencesError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from error
    if not text.strip():
        raise SentencesError(
            f"{path} is empty: expected the JSON lines of `depscreen stream --json` or a recording's sentences.jsonl"
        )
    session_id, model, summary, bare = "", None, None, False
    started: datetime | None = None
    notice_codes: tuple[str, ...] = ()
    by_index: dict[int, SentencePoint] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        value = _json_object(line, where)
        kinds = [kind for kind in STREAM_KINDS if kind in value]
        if len(kinds) == 1 and len(value) == 1:
            kind, body = kinds[0], value[kinds[0]]
            if kind == "accepted":
                accepted = _parse(body, pb.SessionAccepted(), where, kind)
                if not session_id:  # the first accepted: the session's start (a resumed stream's says nothing)
                    notice_codes = tuple(notice.code for notice in accepted.coded_notices)
                if started is None and accepted.HasField("started_at"):
                    started = accepted.started_at.ToDatetime(tzinfo=UTC)
                session_id = session_id or accepted.session_id
                model = model or (accepted.model if accepted.HasField("model") else None)
            elif kind == "summary":
                summary = _parse(body, pb.SessionSummary(), where, kind)
            else:
                point = _sentence(body, where)
                by_index[point.index] = point
        elif "estimate" in value:
            point = _sentence(value, where)
            by_index[point.index] = point
            bare = True
        else:
            raise SentencesError(
                f"{where}: neither a server message ({', '.join(STREAM_KINDS)}) nor a sentence update with an "
                f"estimate; got the keys {sorted(value)}"
            )
    if not by_index:
        raise SentencesError(f"{path} holds no sentence update: the session closed no sentence, so it has no estimate")
    description = path.parent / RECORDING_DESCRIPTION
    if bare and description.is_file():
        recorded = read_recording_description(description)
        session_id = session_id or str(recorded.get("session_id", ""))
        model = model or _recorded_model(recorded, description)
        started = started or _recorded_start(recorded, description)
    points = [by_index[i] for i in sorted(by_index)]
    return ScreenedSession(path, session_id, model, points, summary, started, notice_codes)


def read_recording_description(path: Path) -> dict:
    """A recording's `stream.json` as a dict; SentencesError when it is unreadable or not a JSON object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SentencesError(
            f"{path} is unreadable or truncated: {getattr(error, 'strerror', None) or error}"
        ) from error
    if not isinstance(value, dict):
        raise SentencesError(f"{path}: expected a JSON object describing the stream, got {type(value).__name__}")
    return value


def _json_object(line: str, where: str) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise SentencesError(
            f"{where}: not JSON ({error.msg} at column {error.colno}); is the line cut short?"
        ) from None
    if not isinstance(value, dict):
        raise SentencesError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _parse(body: object, message: M, where: str, kind: str) -> M:
    if not isinstance(body, dict):
        raise SentencesError(f"{where}: `{kind}` must be a JSON object, got {type(body).__name__}")
    try:
        return ParseDict(body, message, ignore_unknown_fields=True)
    except ParseError as error:
        raise SentencesError(f"{where}: not a valid `{kind}`: {error}") from None


def _sentence(body: object, where: str) -> SentencePoint:
    update = _parse(body, pb.SentenceUpdate(), where, "sentence")
    if not update.HasField("estimate"):
        raise SentencesError(f"{where}: the sentence update has no estimate")
    estimate = update.estimate
    for name, value in [("probability", estimate.probability), ("evidence", estimate.evidence)] + [
        (f"{pb.Modality.Name(m.modality).lower()} probability", m.probability) for m in estimate.modalities
    ]:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise SentencesError(f"{where}: estimate {name} {value:.6g} is outside 0..1")
    if update.end_ms < update.start_ms:
        raise SentencesError(f"{where}: the sentence ends ({update.end_ms} ms) before it starts ({update.start_ms} ms)")
    return SentencePoint(
        index=update.index,
        start_ms=update.start_ms,
        end_ms=update.end_ms,
        transcript=update.transcript,
        transcript_source=update.transcript_source,
        estimate=estimate,
        interval=_interval(body.get("estimate", {}), where),  # type: ignore[union-attr]
    )


def _interval(body: dict, where: str) -> tuple[float, float] | None:
    if "interval_low" not in body and "interval_high" not in body:
        return None
    low, high = body.get("interval_low", 0.0), body.get("interval_high", 0.0)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
        raise SentencesError(
            f"{where}: estimate interval_low and interval_high must both be numbers, got {low!r}, {high!r}"
        )
    if not 0.0 <= low <= high <= 1.0:  # type: ignore[operator]
        raise SentencesError(f"{where}: the estimate's interval [{low}, {high}] is not within 0..1 low to high")
    return float(low), float(high)  # type: ignore[arg-type]


def _recorded_model(recorded: dict, where: Path) -> pb.ModelInfo | None:
    if "model" not in recorded:
        return None
    return _parse(recorded["model"], pb.ModelInfo(), str(where), "model")


def _recorded_start(recorded: dict, where: Path) -> datetime | None:
    stamp = recorded.get("started_utc")
    if stamp is None:
        return None
    try:
        return datetime.fromisoformat(str(stamp))
    except ValueError:
        raise SentencesError(f"{where}: started_utc {stamp!r} is not an ISO 8601 time") from None
