"""A `depscreen serve` subprocess on loopback, started and awaited (for the demo, the benchmark and tests)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
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
    http_ssl: ssl.SSLContext | None = field(default=None, repr=False)
    """Client context for a server whose HTTP port speaks TLS (`--tls-cert`); None for plain HTTP."""

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.http_ssl is not None else "http"
        return f"{scheme}://{self.host}:{self.http_port}"

    def get(self, path: str, timeout_s: float = 5.0) -> bytes:
        """The body of a GET on the HTTP port."""
        with urllib.request.urlopen(f"{self.http_url}{path}", timeout=timeout_s, context=self.http_ssl) as response:
            return response.read()

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_local_server(
    *flags: str,
    host: str = "127.0.0.1",
    grpc_port: int = 0,
    http_port: int = 0,
    output: IO | None = None,
    http_ssl: ssl.SSLContext | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> LocalServer:
    """Start `depscreen serve` (free ports when 0) and return once /healthz answers (over TLS with `http_ssl`,
    for a server given `--tls-cert`); `cwd` and `env` are the process's working directory and environment."""
    grpc_port = grpc_port or free_port(host)
    http_port = http_port or free_port(host)
    command = [
        sys.executable, "-m", "depscreen.cli", "serve", "--host", host,
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), *flags,
    ]  # fmt: skip
    stderr = subprocess.STDOUT if output else None
    process = subprocess.Popen(command, stdout=output, stderr=stderr, cwd=cwd, env=env)
    server = LocalServer(process, host, grpc_port, http_port, http_ssl)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            server.get("/healthz", timeout_s=1)
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
