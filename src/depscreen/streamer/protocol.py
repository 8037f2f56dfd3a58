"""The stream protocol's rules: the checks on a session's opening and on a resume point, and every error that
ends a stream (`ProtocolError`, with a transport-neutral `ErrorKind`: the gRPC service ends the stream with the
status of the same name, WHIP answers with an HTTP status)."""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from depscreen.engine.language import primary_language
from depscreen.engine.media import MAX_CHANNELS, MAX_INPUT_RATE, MIN_INPUT_RATE
from depscreen.streamer.interview import Opening
from depscreen.streamer.stall import StreamEnd
from depscreen.streamer.state_store import StoreError

if TYPE_CHECKING:  # annotations only: the typed core loads no model library (tests/test_imports.py)
    from depscreen.streamer.resume import SessionSnapshot
    from depscreen.streamer.settings import ServerSettings

log = logging.getLogger(__name__)

MAX_SESSION_ID_CHARS = 128
RETRY_AFTER_S = 10.0
"""Suggested wait before a refused session is offered again (gRPC `RetryInfo`, WHIP `Retry-After`)."""


class ErrorKind(enum.Enum):
    """Why a stream ends, in no transport's terms; named like the gRPC status each maps to (and like the
    `code` label of `depscreen_errors_total`)."""

    INVALID_ARGUMENT = "the client sent something malformed or out of range"
    FAILED_PRECONDITION = "the request does not fit the session's state (order, resume)"
    RESOURCE_EXHAUSTED = "a limit was reached (capacity, quota, rate, session time)"
    DEADLINE_EXCEEDED = "the client sent nothing for too long"
    UNAVAILABLE = "the server cannot serve it now (shutting down, store down): retry"
    ABORTED = "the session was resumed on another stream: this one is stale and stops"
    UNAUTHENTICATED = "the caller's credentials were refused"


class ProtocolError(Exception):
    """A client broke the protocol, or the server refuses it: the stream ends with `kind` and this message.
    `retry_after_s`: the refusal is temporary (the server is full) and the client may try again after about
    that long."""

    def __init__(self, kind: ErrorKind, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


def check_opening(start: Opening, resumable: bool = False) -> None:
    """The opening request, validated (its fields named as in the wire's `start`); ProtocolError says what is
    wrong with it. A resume token is refused unless the session is `resumable`."""
    rate, channels = start.sample_rate_hz, start.channels
    if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            f"start.audio.sample_rate_hz={rate} is not supported: use {MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            f"start.audio.channels={channels} is not supported: send mono (1) or stereo (2)",
        )
    if len(start.session_id) > MAX_SESSION_ID_CHARS:
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            f"start.session_id has {len(start.session_id)} characters; the limit is {MAX_SESSION_ID_CHARS}",
        )
    if any(not character.isprintable() for character in start.session_id):
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            "start.session_id contains control or other unprintable characters: use printable text",
        )
    try:
        primary_language(start.language)
    except ValueError as error:
        raise ProtocolError(ErrorKind.INVALID_ARGUMENT, f"start.{error}") from None
    if start.resume_token and not resumable:
        raise ProtocolError(
            ErrorKind.FAILED_PRECONDITION,
            "start.resume_token was given, but this server keeps no resumable sessions: start a new one",
        )


def check_resume_point(start: Opening, snapshot: SessionSnapshot) -> None:
    """Refuse (FAILED_PRECONDITION) a resume whose client holds more sentence updates than the snapshot
    covers: the store failed to take the later snapshots, and the client no longer keeps the media to re-send."""
    if start.received_sentences is not None and start.received_sentences > snapshot.next_index:
        raise ProtocolError(
            ErrorKind.FAILED_PRECONDITION,
            f"start.received_sentences={start.received_sentences}, but the session's last snapshot is after "
            f"sentence {snapshot.next_index} (the state store missed the later ones): the session cannot be "
            "resumed; start a new session (without the token)",
        )


def store_unavailable(error: StoreError) -> ProtocolError:
    """The error that refuses a resume when the state store cannot be reached."""
    log.warning("the state store failed: %s", error)
    return ProtocolError(
        ErrorKind.UNAVAILABLE, "the server cannot reach its state store for resumable sessions: retry later"
    )


def session_time_exceeded(limit_s: float) -> ProtocolError:
    """The error that ends a session that reached `max_session_s` (after its summary was sent)."""
    return ProtocolError(
        ErrorKind.RESOURCE_EXHAUSTED,
        f"the session reached its limit of {limit_s:g} s and was finished: start a new session to go on",
    )


def before_start(why: StreamEnd, stall_timeout_s: float) -> ProtocolError:
    """The error that ends a stream that sent no `start` before it stalled or the server began shutting down."""
    if why is StreamEnd.SHUTDOWN:
        return shutting_down(resumable=False)
    return ProtocolError(
        ErrorKind.DEADLINE_EXCEEDED,
        f"no `start`: no message for {stall_timeout_s:g} s; send `start` (SessionStart with the audio format) first",
    )


def stalled(stall_timeout_s: float, resumable: bool) -> ProtocolError:
    """The error that ends a stream silent for `stall_timeout_s` of the server's running time."""
    if resumable:
        return ProtocolError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"no message for {stall_timeout_s:g} s: the stream was ended and the session kept at its last sentence; "
            "resume it with its token (send audio continuously, silence included, and `end` when the interview "
            "is over)",
        )
    return ProtocolError(
        ErrorKind.DEADLINE_EXCEEDED,
        f"no message for {stall_timeout_s:g} s: the session was finished (send audio continuously, silence "
        "included, and `end` when the interview is over)",
    )


def starved(settings: ServerSettings, resumable: bool) -> ProtocolError:
    """The error that ends a session whose audio fell `audio_grace_s` behind `min_audio_speed`."""
    kept = (
        "the session was kept at its last sentence; resume it with its token"
        if resumable
        else "the session was finished"
    )
    return ProtocolError(
        ErrorKind.DEADLINE_EXCEEDED,
        f"the stream sent less than {settings.min_audio_speed:g} s of audio per second for {settings.audio_grace_s:g}"
        f" s (min_audio_speed, audio_grace_s), too little to hold a session slot: {kept} (send the audio as it is "
        "recorded, silence included)",
    )


def shutting_down(resumable: bool) -> ProtocolError:
    """The error that ends a live stream when the server shuts down (SIGTERM, SIGINT)."""
    if resumable:
        return ProtocolError(
            ErrorKind.UNAVAILABLE,
            "the server is shutting down: the session was kept at its last sentence; resume it with its token "
            "(another replica will take it)",
        )
    return ProtocolError(
        ErrorKind.UNAVAILABLE,
        "the server is shutting down: the session was finished (summary sent); start a new one, another replica "
        "will take it",
    )
