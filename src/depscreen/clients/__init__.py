"""The depscreen client: `ScreeningClient` (asyncio) and `SyncScreeningClient` (threads) for live-source or file
sessions over gRPC, `WhipClient` for WebRTC (the [webrtc] extra), their typed updates and errors.

Importing this package needs only the core distribution (grpcio, protobuf): media files need the [media]
extra, WebRTC the [webrtc] extra, and the server's modules are never imported from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .captions import CaptionError
from .errors import (
    InvalidInputError,
    MediaError,
    MissingExtraError,
    RefusedError,
    ResumeLostError,
    ScreeningError,
    ServerStalledError,
    SessionClosedError,
    SessionInputError,
    StatusError,
    UnauthenticatedError,
    UnavailableError,
    WhipError,
)
from .session import ScreeningClient, Session
from .settings import ClientSettings
from .sync import SyncScreeningClient, SyncSession
from .tls import TlsFileError
from .updates import Accepted, Interval, Notice, Reconnecting, SentenceUpdate, Summary, Update

if TYPE_CHECKING:
    from .whip import WhipClient

__all__ = [
    "Accepted",
    "CaptionError",
    "ClientSettings",
    "Interval",
    "InvalidInputError",
    "MediaError",
    "MissingExtraError",
    "Notice",
    "Reconnecting",
    "RefusedError",
    "ResumeLostError",
    "ScreeningClient",
    "ScreeningError",
    "SentenceUpdate",
    "ServerStalledError",
    "Session",
    "SessionClosedError",
    "SessionInputError",
    "StatusError",
    "Summary",
    "SyncScreeningClient",
    "SyncSession",
    "TlsFileError",
    "UnauthenticatedError",
    "UnavailableError",
    "Update",
    "WhipClient",
    "WhipError",
]


def __getattr__(name: str) -> object:
    """`WhipClient` is imported on first use (and kept): it needs aiortc and PyAV (the [webrtc] extra)."""
    if name == "WhipClient":
        try:
            from .whip import WhipClient
        except ModuleNotFoundError as error:
            raise MissingExtraError("WhipClient", "webrtc", error.name or "aiortc") from None
        globals()["WhipClient"] = WhipClient
        return WhipClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
