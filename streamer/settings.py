"""ServerSettings: the one typed configuration of `depscreen serve`, from flags or DEPSCREEN_* variables.

Each field's default is documented here and in the README's configuration table. A flag wins over its
environment variable (`--grpc-port` ↔ `DEPSCREEN_GRPC_PORT`), which wins over the default.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.runtime.device import DEVICE_CHOICES


@dataclass(frozen=True)
class ServerSettings:
    """Everything an operator can set; `help` metadata feeds the CLI and the README table."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind both ports to"})
    grpc_port: int = field(default=50051, metadata={"help": "gRPC port (0 picks a free one)"})
    http_port: int = field(default=8080, metadata={"help": "HTTP port for /metrics and /healthz (0 picks one)"})
    model: Path = field(default=DEMO_MODEL, metadata={"help": "model checkpoint (.pt); default: the demo model"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda", "choices": DEVICE_CHOICES})
    asr: str = field(default="whisper", metadata={"help": "speech recognition when no captions: whisper | none"})
    workers: int = field(
        default=0, metadata={"help": "threads for decoding, features and the model (0 = one per core)"}
    )
    max_sessions: int = field(default=64, metadata={"help": "concurrent sessions; more get RESOURCE_EXHAUSTED"})
    max_message_bytes: int = field(
        default=4 * 1024 * 1024, metadata={"help": "largest client message accepted (bytes)"}
    )
    max_chunk_ms: int = field(default=5000, metadata={"help": "longest audio chunk accepted in one message (ms)"})
    video_fps: float = field(default=5.0, metadata={"help": "video frames analysed per second per session"})
    log_level: str = field(default="INFO", metadata={"help": "DEBUG | INFO | WARNING | ERROR"})

    def __post_init__(self) -> None:
        for name in ("grpc_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name}={port} is not a TCP port (0-65535)")
        if self.asr not in ("whisper", "none"):
            raise ValueError(f"asr={self.asr!r} is not one of whisper, none")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device={self.device!r} is not one of {', '.join(DEVICE_CHOICES)}")
        for name in ("max_sessions", "max_message_bytes", "max_chunk_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.1 <= self.video_fps <= 30:
            raise ValueError(f"video_fps={self.video_fps} is outside 0.1-30")

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


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
