"""The server's log lines: plain text, or one JSON object per line with the session's id, its caller's token
fingerprint and the status code that ended a stream as fields.

The JSON fields come from an allow-list (`FIELDS`): the message as the text format would print it, and the
session context bound with `bind_session` for the task that serves the session. Nothing a client sent as
content (audio, frames, captions, transcripts) is ever a field; the messages themselves carry protocol errors,
ids and counts only (`tests/test_privacy.py`).
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

from depscreen.streamer.auth import principal_fingerprint

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

FIELDS = ("session_id", "token_fingerprint", "code")
"""Fields a JSON line may carry beyond time, level, logger and message; `code` comes from a log call's
`extra={"code": ...}` (the gRPC status name that ended a stream, or OK)."""

_session: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("depscreen_log_session", default=None)


def bind_session(session_id: str, principal: str | None) -> None:
    """Tag every later log line of the current task (the one serving this session) with the session's id and
    the fingerprint of the token it was opened with (none on an open server)."""
    fields = {"session_id": session_id}
    fingerprint = principal_fingerprint(principal)
    if fingerprint is not None:
        fields["token_fingerprint"] = fingerprint
    _session.set(fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the allowed fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_session.get() or {})
        for name in FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, log_format: str) -> None:
    """Send the process's log records to stderr at `level`, as text or JSON lines (`log_format`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
