"""ServerSettings: the one typed configuration of `depscreen serve`, from flags or DEPSCREEN_* variables.

Each field's default is documented here and in the README's configuration table. A flag wins over its
environment variable (`--grpc-port` ↔ `DEPSCREEN_GRPC_PORT`), which wins over the default.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from depscreen.engine.features.asr import AsrCapacity
from depscreen.engine.features.asr_backends import asr_models
from depscreen.engine.media import DEFAULT_VIDEO_FPS
from depscreen.engine.runtime.checkpoint import DEFAULT_MODEL
from depscreen.engine.runtime.device import DEVICE_CHOICES
from depscreen.engine.vad import VAD_NAMES
from depscreen.streamer.cors import parse_origins

AUTH_MODES = ("auto", "tokens", "jwt", "none")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """A setting that cannot be used as given (a file missing, unreadable or malformed, or a startup the
    settings make unsafe); the message says what to fix."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything an operator can set; `help` metadata feeds the CLI and the README table."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind both ports to"})
    grpc_port: int = field(default=50051, metadata={"help": "gRPC port (0 picks a free one)"})
    http_port: int = field(default=8080, metadata={"help": "HTTP port for /metrics and /healthz (0 picks one)"})
    model: Path = field(
        default=DEFAULT_MODEL, metadata={"help": "model checkpoint (.pt); default: the EATD-trained screening model"}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda", "choices": DEVICE_CHOICES})
    asr: str = field(
        default="whisper",
        metadata={
            "help": "speech recognition when no captions: whisper (tiny.en for English, multilingual base for "
            "Mandarin and other languages) | none | a comma-separated list of tiny.en, base"
        },
    )
    asr_max_batch: int = field(
        default=8,
        metadata={
            "help": "most decodings of different sessions the speech recogniser runs as one model call (1 = each "
            "alone); only decodings of equal window and prompt length share a call"
        },
    )
    asr_batch_wait_ms: float = field(
        default=10.0,
        metadata={
            "help": "longest a ready decoding waits for others to share its speech recogniser call, and only while "
            "another session's decoding is being prepared (ms)"
        },
    )
    vad: str = field(
        default="webrtc",
        metadata={
            "help": "voice-activity detector of the segmenter: webrtc | silero (fewer noises taken for speech, "
            "~9 CPU ms per audio second)",
            "choices": VAD_NAMES,
        },
    )
    workers: int = field(
        default=0, metadata={"help": "threads for decoding, features and the model (0 = one per core)"}
    )
    max_sessions: int = field(default=64, metadata={"help": "concurrent sessions; more get RESOURCE_EXHAUSTED"})
    max_message_bytes: int = field(
        default=4 * 1024 * 1024, metadata={"help": "largest client message accepted (bytes)"}
    )
    max_chunk_ms: int = field(default=5000, metadata={"help": "longest audio chunk accepted in one message (ms)"})
    video_fps: float = field(
        default=DEFAULT_VIDEO_FPS, metadata={"help": "video frames analysed per second per session"}
    )
    max_batch: int = field(default=32, metadata={"help": "most sentences (of different sessions) per model step"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest a sentence waits for its batch to fill (ms)"})
    park_after_s: float = field(
        default=300.0, metadata={"help": "a session idle this long gives its model-state slot back until it speaks"}
    )
    stall_timeout_s: float = field(
        default=30.0,
        metadata={
            "help": "a stream that sends nothing (not even `start`) for this long of the server's running time is "
            "ended: kept for resuming when resumable, else finished (0 = never)"
        },
    )
    keepalive_time_s: float = field(
        default=15.0,
        metadata={"help": "the server pings a client connection silent this long, to notice a dead one (s)"},
    )
    keepalive_timeout_s: float = field(
        default=10.0,
        metadata={"help": "a connection whose ping is not answered within this long is closed and its streams end"},
    )
    keepalive_min_ping_interval_s: float = field(
        default=5.0,
        metadata={
            "help": "shortest interval at which clients may ping (with or without streams); a client pinging "
            "faster has its connection closed (too_many_pings)"
        },
    )
    shutdown_grace_s: float = field(
        default=45.0,
        metadata={
            "help": "on SIGTERM or SIGINT, how long live streams get to end (resumable ones to resume elsewhere) "
            "before the server exits; the chart's terminationGracePeriodSeconds (60) less its preStop sleep (10) "
            "and a 5 s margin"
        },
    )
    max_speed: float = field(
        default=8.0, metadata={"help": "media accepted per session at most this many times real time (0 = no limit)"}
    )
    burst_s: float = field(default=30.0, metadata={"help": "media a session may send ahead of max_speed (s)"})
    video_sparse_backlog: float = field(
        default=1.0, metadata={"help": "CPU tasks waiting per worker above which video is sampled at half rate"}
    )
    video_drop_backlog: float = field(
        default=2.0, metadata={"help": "CPU tasks waiting per worker above which video frames are dropped"}
    )
    asr_skip_backlog: float = field(
        default=3.0, metadata={"help": "CPU tasks waiting per worker above which sentences get no ASR"}
    )
    reject_backlog: float = field(
        default=4.0, metadata={"help": "CPU tasks waiting per worker above which new sessions are refused"}
    )
    ice_servers: str = field(
        default="",
        metadata={
            "help": "comma-separated STUN/TURN URLs for WebRTC (stun:HOST:PORT, turn:HOST:PORT?transport=udp), "
            "used by the server's peers and advertised to WHIP clients in Link headers; empty = host candidates only"
        },
    )
    max_sdp_bytes: int = field(
        default=65536,
        metadata={"help": "largest WHIP offer or trickle-ICE body accepted (bytes); larger get 413 before any parsing"},
    )
    max_ice_candidates: int = field(
        default=50,
        metadata={
            "help": "remote ICE candidates one WebRTC session may give (its offer and trickle PATCHes together); "
            "more get 400 before the WebRTC stack sees them (its checks grow with the square of the count)"
        },
    )
    webrtc_host: str = field(
        default="",
        metadata={
            "help": "comma-separated local IP addresses WebRTC's UDP sockets bind to, the only host candidates an "
            "SDP answer lists; empty = host when it is one non-loopback address, else every interface (browsers "
            "and aiortc leave loopback out of ICE)"
        },
    )
    webrtc_allow_networks: str = field(
        default="",
        metadata={
            "help": "comma-separated CIDR ranges (10.0.0.0/8) of non-public addresses whose remote ICE candidates "
            "get connectivity checks; empty = public addresses only: candidates in private, loopback, link-local "
            "or other non-global ranges, and mDNS names, are dropped"
        },
    )
    turn_username: str = field(default="", metadata={"help": "username for the TURN servers in ice_servers"})
    turn_credential: str = field(default="", metadata={"help": "password for the TURN servers in ice_servers"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG | INFO | WARNING | ERROR"})
    log_format: str = field(
        default="text",
        metadata={
            "help": "text | json (one object per line with session_id, token_fingerprint and code fields)",
            "choices": LOG_FORMATS,
        },
    )
    auth: str = field(
        default="auto",
        metadata={
            "help": "auto (tokens when auth_tokens is set, JWTs when jwt_jwks or jwt_jwks_url is set, else open on "
            "loopback only) "
            "| tokens | jwt | none (open to anyone: only behind a proxy that authenticates)",
            "choices": AUTH_MODES,
        },
    )
    auth_tokens: str = field(
        default="", metadata={"help": "file of bearer tokens, one per line (reloaded when it changes)"}
    )
    jwt_jwks: str = field(
        default="", metadata={"help": "JWKS file with the public keys (RS256/ES256) JWTs are signed with"}
    )
    jwt_jwks_url: str = field(
        default="",
        metadata={
            "help": "the identity provider's JWKS URL (https; http only on loopback) with the keys JWTs are signed "
            "with, cached 300 s and fetched again sooner when a token names a key it lacks (rotation)"
        },
    )
    jwt_issuer: str = field(default="", metadata={"help": "the `iss` a JWT must carry"})
    jwt_audience: str = field(default="", metadata={"help": "the `aud` a JWT must carry"})
    max_sessions_per_token: int = field(
        default=-1,
        metadata={
            "help": "concurrent sessions one token (JWT subject, client certificate) may hold; more get "
            "RESOURCE_EXHAUSTED (-1 = half of max_sessions, at least 1; 0 = no limit)"
        },
    )
    min_audio_speed: float = field(
        default=0.5,
        metadata={
            "help": "seconds of audio a session must send per second it waits for its client to hold its slot: one "
            "that falls audio_grace_s behind this rate is ended with DEADLINE_EXCEEDED (0 = no floor)"
        },
    )
    audio_grace_s: float = field(
        default=15.0,
        metadata={"help": "how far (s) a session may fall behind min_audio_speed, from its start, before it is ended"},
    )
    max_session_s: float = field(
        default=14400.0,
        metadata={
            "help": "longest a session may last; then it is finished and ended with RESOURCE_EXHAUSTED (0 = no limit)"
        },
    )
    max_video_fps: float = field(
        default=30.0,
        metadata={"help": "video frames a client may send per second of audio (2 s burst); more end the stream"},
    )
    max_captions_per_s: float = field(
        default=10.0,
        metadata={"help": "captions a client may send per second of audio (2 s burst); more end the stream"},
    )
    tls_cert: str = field(default="", metadata={"help": "PEM certificate chain: serve gRPC and HTTP over TLS"})
    tls_key: str = field(default="", metadata={"help": "PEM private key of tls_cert"})
    tls_client_ca: str = field(
        default="", metadata={"help": "PEM CA bundle: require client certificates it signed (mTLS) on both ports"}
    )
    state_store: str = field(
        default="",
        metadata={
            "help": "where resumable sessions are checkpointed after every sentence: sqlite://PATH (embedded; "
            "sqlite:///var/lib/depscreen/sessions.db) or redis://HOST:PORT/DB (shared by replicas); empty = no "
            "session is resumable"
        },
    )
    resume_ttl_s: float = field(
        default=3600.0,
        metadata={"help": "a resumable session's checkpoint and token expire this long after its last sentence (s)"},
    )
    finished_retention_s: float = field(
        default=300.0,
        metadata={
            "help": "a resumable session that ended with `end` keeps its summary this long, for a client whose "
            "stream broke before the summary reached it to resume and take it (s; 0 = deleted at `end`)"
        },
    )
    resume_key_file: str = field(
        default="",
        metadata={
            "help": "file with the key (at least 16 bytes) that signs resume tokens; empty = a key generated and "
            "kept in the state store"
        },
    )
    http_read_timeout_s: float = field(
        default=10.0,
        metadata={
            "help": "an HTTP connection whose request headers have not all arrived this long after it opened (or "
            "after its last answer) is closed, and a WHIP body not read within this long gets 408"
        },
    )
    max_http_connections: int = field(
        default=512, metadata={"help": "HTTP connections open at once; more are closed as they arrive"}
    )
    cors_origins: str = field(
        default="",
        metadata={
            "help": "comma-separated web origins (https://app.example.org) whose pages may call /whip from the "
            "browser; empty = none (same-origin pages and native clients need nothing)"
        },
    )
    clinician_text: str = field(
        default="off",
        metadata={
            "help": "on = each answer's question carries the clinician's words (the clinician's captions, else ASR "
            "of the clinician's channel); off = question spans only, and clinician captions are not used",
            "choices": ("off", "on"),
        },
    )
    record: str = field(
        default="",
        metadata={
            "help": "folder to record every session into (received audio, video frames, captions, and the sentences "
            "sent back); empty = nothing of a session reaches disk. Health data: consent and retention are yours"
        },
    )

    record_session_bytes: int = field(
        default=2 * 1024**3,
        metadata={"help": "most bytes one stream's recording may take; then its recording stops (0 = no limit)"},
    )
    record_total_bytes: int = field(
        default=64 * 1024**3,
        metadata={
            "help": "most bytes the record folder may hold (counted from its size at start); then recordings stop "
            "and new sessions go unrecorded (0 = no limit)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name}={port} is not a TCP port (0-65535)")
        asr_models(self.asr)
        if self.asr_max_batch < 1:
            raise ValueError(f"asr_max_batch={self.asr_max_batch} must be at least 1 (1 = no batching)")
        if not 0 <= self.asr_batch_wait_ms <= 1000:
            raise ValueError(f"asr_batch_wait_ms={self.asr_batch_wait_ms} is not between 0 and 1000 ms")
        if self.vad not in VAD_NAMES:
            raise ValueError(f"vad={self.vad!r} is not one of {', '.join(VAD_NAMES)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format={self.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device={self.device!r} is not one of {', '.join(DEVICE_CHOICES)}")
        for name in (
            "max_sessions",
            "max_message_bytes",
            "max_chunk_ms",
            "max_sdp_bytes",
            "max_ice_candidates",
            "max_http_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.1 <= self.video_fps <= 30:
            raise ValueError(f"video_fps={self.video_fps} is outside 0.1-30")
        for name in ("max_wait_ms", "park_after_s", "stall_timeout_s", "max_speed", "burst_s", "shutdown_grace_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("keepalive_time_s", "keepalive_timeout_s", "keepalive_min_ping_interval_s"):
            if getattr(self, name) < 0.001:
                raise ValueError(f"{name} must be at least 0.001 s")
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        thresholds = (self.video_sparse_backlog, self.video_drop_backlog, self.asr_skip_backlog, self.reject_backlog)
        if not (thresholds[0] >= 0 and list(thresholds) == sorted(thresholds)):
            raise ValueError(
                "backlog thresholds must grow: video_sparse_backlog <= video_drop_backlog <= asr_skip_backlog "
                "<= reject_backlog"
            )
        for url in self.ice_url_list:
            if url.split(":", 1)[0] not in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"ice_servers entry {url!r} is not a stun:, stuns:, turn: or turns: URL")
            if url.startswith("turn") and not (self.turn_username and self.turn_credential):
                raise ValueError(f"ice_servers entry {url!r} is a TURN server: set turn_username and turn_credential")
        parse_origins(self.cors_origins)
        _ = self.webrtc_local_addresses, self.webrtc_networks  # parsed now: a bad entry stops the start
        self._check_security()

    def _check_security(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth={self.auth!r} is not one of {', '.join(AUTH_MODES)}")
        mode = self.auth_mode
        if self.auth in ("none", "jwt") and self.auth_tokens:
            raise ValueError(f"auth={self.auth} but auth_tokens is set: drop one of them")
        jwks = self.jwt_jwks or self.jwt_jwks_url
        if self.auth in ("none", "tokens") and jwks:
            raise ValueError(f"auth={self.auth} but jwt_jwks or jwt_jwks_url is set: drop one of them")
        if self.auth == "auto" and self.auth_tokens and jwks:
            raise ValueError("both auth_tokens and jwt_jwks are set: choose one (or set auth=tokens or auth=jwt)")
        if self.jwt_jwks and self.jwt_jwks_url:
            raise ValueError("both jwt_jwks (a file) and jwt_jwks_url are set: choose one source of keys")
        if self.jwt_jwks_url:
            url = urlsplit(self.jwt_jwks_url)
            if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and is_loopback(url.hostname))):
                raise ValueError(
                    f"jwt_jwks_url={self.jwt_jwks_url!r} is not an https:// URL: keys fetched over plain http could be "
                    "replaced on the way (http:// is accepted only for a loopback address)"
                )
        if mode == "tokens" and not self.auth_tokens:
            raise ValueError("auth=tokens needs auth_tokens (a file of tokens, one per line)")
        if mode == "jwt" and not (jwks and self.jwt_issuer and self.jwt_audience):
            raise ValueError(
                "JWT authentication needs all of jwt_jwks, jwt_issuer and jwt_audience (or jwt_jwks_url for jwt_jwks)"
            )
        if (self.jwt_issuer or self.jwt_audience) and mode != "jwt":
            raise ValueError("jwt_issuer/jwt_audience are set but JWTs are not checked: set jwt_jwks too")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both tls_cert and tls_key")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mTLS) needs TLS itself: set tls_cert and tls_key")
        if self.max_sessions_per_token < -1:
            raise ValueError("max_sessions_per_token must be -1 (half of max_sessions), 0 (no limit) or a count")
        if self.max_session_s < 0:
            raise ValueError("max_session_s must not be negative (0 = no limit)")
        if not 0 <= self.min_audio_speed <= 1:
            raise ValueError(f"min_audio_speed={self.min_audio_speed} is outside 0-1 (0 = no floor; 1 = real time)")
        if self.http_read_timeout_s <= 0:
            raise ValueError("http_read_timeout_s must be positive")
        if self.audio_grace_s <= 0:
            raise ValueError("audio_grace_s must be positive")
        if self.state_store and not self.state_store.startswith(("sqlite://", "redis://", "rediss://")):
            raise ValueError(f"state_store={self.state_store!r} is not sqlite://PATH or redis://HOST:PORT/DB")
        if self.resume_ttl_s <= 0:
            raise ValueError("resume_ttl_s must be positive")
        if self.finished_retention_s < 0:
            raise ValueError("finished_retention_s must be 0 (delete at `end`) or positive")
        if self.resume_key_file and not self.state_store:
            raise ValueError("resume_key_file is set but no state_store: set state_store to make sessions resumable")
        for name in ("record_session_bytes", "record_total_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 = no limit)")
        if self.max_captions_per_s <= 0:
            raise ValueError("max_captions_per_s must be positive")
        if self.max_video_fps < self.video_fps:
            raise ValueError(f"max_video_fps={self.max_video_fps} is below video_fps={self.video_fps}: raise it")

    @property
    def auth_mode(self) -> str:
        """`auth` with `auto` resolved: tokens, jwt, none (explicitly open) or open (nothing configured)."""
        if self.auth != "auto":
            return self.auth
        if self.auth_tokens:
            return "tokens"
        return "jwt" if self.jwt_jwks or self.jwt_jwks_url else "open"

    @property
    def token_session_limit(self) -> int:
        """`max_sessions_per_token` resolved: -1 becomes half of `max_sessions` (at least 1); 0 = no limit."""
        if self.max_sessions_per_token == -1:
            return max(1, self.max_sessions // 2)
        return self.max_sessions_per_token

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def asr_capacity(self) -> AsrCapacity:
        """The recogniser's calls at once (one per worker) and its batching."""
        return AsrCapacity(self.worker_count, self.asr_max_batch, self.asr_batch_wait_ms)

    @property
    def cors_origin_set(self) -> frozenset[str]:
        """The origins of `cors_origins`, lower-cased."""
        return parse_origins(self.cors_origins)

    @property
    def webrtc_local_addresses(self) -> tuple[str, ...] | None:
        """The addresses WebRTC gathers on: `webrtc_host`, else `host` when it is one address other than
        loopback (unspecified and names such as localhost resolve to every interface); None = every interface."""
        if not self.webrtc_host.strip():
            try:
                host = ipaddress.ip_address(self.host.strip("[]"))
            except ValueError:
                return None
            return None if host.is_unspecified or host.is_loopback else (str(host),)
        addresses = []
        for entry in (part.strip() for part in self.webrtc_host.split(",")):
            try:
                address = ipaddress.ip_address(entry.strip("[]"))
            except ValueError:
                raise ValueError(
                    f"webrtc_host entry {entry!r} is not an IP address (203.0.113.7, 2001:db8::7)"
                ) from None
            if address.is_unspecified:
                raise ValueError(f"webrtc_host entry {entry!r} means every interface: leave webrtc_host empty instead")
            addresses.append(str(address))
        return tuple(addresses)

    @property
    def webrtc_networks(self) -> tuple[IpNetwork, ...]:
        """`webrtc_allow_networks` parsed."""
        networks = []
        for entry in (part.strip() for part in self.webrtc_allow_networks.split(",") if part.strip()):
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError as error:
                raise ValueError(f"webrtc_allow_networks entry {entry!r} is not a CIDR range: {error}") from None
        return tuple(networks)

    @property
    def ice_url_list(self) -> list[str]:
        """`ice_servers` split into URLs."""
        return [url.strip() for url in self.ice_servers.split(",") if url.strip()]


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine (127.0.0.0/8, ::1, localhost): binding it keeps ports local."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def env_name(name: str) -> str:
    return "DEPSCREEN_" + name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field, defaulting to its DEPSCREEN_* variable or the field default."""
    for f in fields(ServerSettings):
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        kind = type(default) if default is not None else str
        parser.add_argument(
            flag,
            type=kind,
            default=os.environ.get(env_name(f.name), default),
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (env {env_name(f.name)}; default {default})",
        )


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Build settings from parsed flags (values from the environment arrive as strings and are converted)."""
    values = {}
    for f in fields(ServerSettings):
        kind = type(f.default)
        values[f.name] = kind(getattr(args, f.name))
    return ServerSettings(**values)
