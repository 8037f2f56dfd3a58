"""The client's own errors: bad input refused before sending, a server that stopped answering, unusable media."""

from __future__ import annotations


class SessionInputError(ValueError):
    """Audio, a frame or a caption the server could not use (wrong sample width, a frame without its format):
    refused before anything is sent."""


class SessionClosedError(RuntimeError):
    """Something was sent on a session that has ended (after `end()`, or once its stream failed)."""


class ServerStalledError(ConnectionError):
    """The server sent nothing for `ClientSettings.reply_timeout_s` while the client was sending: it is hung or
    the link is down. A resumable session reconnects; otherwise this is raised."""


class MediaError(Exception):
    """A media file that is missing, cannot be decoded or has no audio stream to screen."""


class WhipError(Exception):
    """The WHIP endpoint refused a request (`status` is its HTTP status) or the WebRTC connection failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MissingExtraError(ImportError):
    """A feature needs an optional dependency group that is not installed; the message names the extra."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{feature} needs the [{extra}] extra (missing module {missing}): pip install 'depscreen[{extra}]'"
        )
        self.extra = extra
