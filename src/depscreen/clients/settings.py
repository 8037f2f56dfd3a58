"""`ClientSettings`: the client's liveness and reconnection settings, with their documented defaults."""

from __future__ import annotations

from dataclasses import dataclass

from depscreen.keepalive import keepalive_arguments


@dataclass(frozen=True)
class ClientSettings:
    """How a `ScreeningClient` notices a dead server or link and how it reconnects (README, "Client API").

    A hung server or a black-holed link is noticed within `keepalive_time_s + keepalive_timeout_s` (25 s) by
    gRPC keepalive pings; a server that still answers pings but stopped answering the session, by
    `reply_timeout_s`.
    """

    keepalive_time_s: float = 15.0
    """Seconds between gRPC keepalive pings on the channel (sent while a call is open, with or without data;
    the server must permit pings this often: `depscreen serve` does)."""
    keepalive_timeout_s: float = 10.0
    """Seconds a keepalive ping may go unanswered before the connection is closed as dead (the call then
    fails with UNAVAILABLE, which a resumable session survives)."""
    reply_timeout_s: float = 45.0
    """Seconds without any message from the server, while the client is sending, after which the call is
    cancelled as stalled (and, when resumable, resumed). Sentences end at most every 15 s of speech, so only
    a long silence streamed without a pause in sending can outlast it: that costs one harmless resume."""
    reconnect_s: float = 120.0
    """How long a resumable session keeps reconnecting without a working stream before it gives up."""
    first_backoff_s: float = 0.2
    """Cap of the first wait before reconnecting; the cap doubles per failed attempt up to `max_backoff_s`,
    and each wait is drawn uniformly below its cap (full jitter), so clients of a dead replica spread out."""
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("keepalive_time_s", "keepalive_timeout_s", "reply_timeout_s", "first_backoff_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ClientSettings.{name} must be positive, got {getattr(self, name)}")
        if not self.reconnect_s >= 0:
            raise ValueError(f"ClientSettings.reconnect_s must be 0 or more, got {self.reconnect_s}")
        if not self.max_backoff_s >= self.first_backoff_s:
            raise ValueError(
                f"ClientSettings.max_backoff_s ({self.max_backoff_s}) must be at least first_backoff_s "
                f"({self.first_backoff_s})"
            )

    def channel_options(self) -> list[tuple[str, int]]:
        """The gRPC channel arguments that turn the keepalive settings on."""
        return keepalive_arguments(self.keepalive_time_s, self.keepalive_timeout_s, without_calls=False)
