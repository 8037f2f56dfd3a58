"""A `depscreen serve` subprocess on loopback, started and awaited (for the demo, the benchmark and tests)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

READY_TIMEOUT_S = 180.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LocalServer:
    process: subprocess.Popen
    host: str
    grpc_port: int
    http_port: int

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.http_url}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_local_server(
    *flags: str, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0, output: IO | None = None
) -> LocalServer:
    """Start `depscreen serve` (free ports when 0) and return once /healthz answers."""
    grpc_port = grpc_port or free_port(host)
    http_port = http_port or free_port(host)
    command = [
        sys.executable, "-m", "depscreen.cli", "serve", "--host", host,
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), *flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if output else None)
    server = LocalServer(process, host, grpc_port, http_port)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{server.http_url}/healthz", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server was not ready after {READY_TIMEOUT_S:.0f} s")


def read_counter(exposition: str, sample: str) -> float:
    """Value of one sample line (`name{labels}`) of a Prometheus text exposition; 0 when absent."""
    for line in exposition.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def sample_path() -> Path:
    """The bundled GRID sample interview (CC BY 4.0, see clients/samples/README.md)."""
    from depscreen.clients import cli as client_cli

    return Path(client_cli.__file__).resolve().parent / "samples" / "grid_interview.mp4"
