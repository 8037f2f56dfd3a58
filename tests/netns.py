"""A throwaway network namespace for the WebRTC tests, and ways to run code inside it.

aiortc leaves loopback out of ICE, so a server and its peers need another interface. The namespace gets its
own loopback and a veth pair with private addresses on both ends, all inside it: nothing is added to this
machine's interfaces, and traffic never leaves the namespace. Code joins it per thread (`setns` moves only
the calling thread; threads and processes it starts inherit the namespace).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
VETH_ADDRESSES = ("10.213.0.1/24", "10.213.0.2/24")
PEER_NETWORK = "10.213.0.0/24"
"""The veth pair's private network: a server in the namespace must allow ICE checks to it (`--webrtc-allow-networks`)
for its peers' host candidates to be used."""
PEER_FLAGS = ("--webrtc-allow-networks", PEER_NETWORK)


def namespaces_available() -> str | None:
    """None when this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "creating a network namespace needs root (CI runs the tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


class NetworkNamespace:
    """`with NetworkNamespace() as ns:` a namespace with loopback and a veth pair up, deleted on exit."""

    def __init__(self) -> None:
        self.name = f"depscreen-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> NetworkNamespace:
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b")
            for device, address in zip(("veth-a", "veth-b"), VETH_ADDRESSES, strict=True):
                _ip("-n", self.name, "addr", "add", address, "dev", device)
                _ip("-n", self.name, "link", "set", device, "up")
        except BaseException:
            _ip("netns", "delete", self.name)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        _ip("netns", "delete", self.name)

    def enter_current_thread(self) -> None:
        """Move the calling thread (only it) into the namespace."""
        fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns into {self.name}: {os.strerror(errno)}")
        finally:
            os.close(fd)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `fn(*args, **kwargs)` in a new thread inside the namespace and return its result (or raise its
        error); processes it starts live in the namespace."""
        result: Future[T] = Future()

        def target() -> None:
            try:
                self.enter_current_thread()
                result.set_result(fn(*args, **kwargs))
            except BaseException as error:
                result.set_exception(error)

        thread = threading.Thread(target=target, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        return result.result()


class NamespaceLoop:
    """An asyncio event loop running in its own thread inside a namespace; `call()` runs coroutines on it."""

    def __init__(self, namespace: NetworkNamespace) -> None:
        self.loop = asyncio.new_event_loop()
        self._namespace = namespace
        self._thread = threading.Thread(target=self._serve, name=f"netns-loop-{namespace.name}")
        self._entered: Future[None] = Future()

    def __enter__(self) -> NamespaceLoop:
        self._thread.start()
        self._entered.result()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 300.0) -> T:
        """Run `coroutine` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def _serve(self) -> None:
        try:
            self._namespace.enter_current_thread()
        except BaseException as error:
            self._entered.set_exception(error)
            return
        asyncio.set_event_loop(self.loop)
        self._entered.set_result(None)
        self.loop.run_forever()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def idle_health(http_url: str, deadline_s: float) -> dict:
    """/healthz once the server has freed every session and WebRTC peer (or when `deadline_s` has passed)."""
    deadline = time.monotonic() + deadline_s
    while True:
        with urllib.request.urlopen(f"{http_url}/healthz", timeout=5) as reply:
            health = json.loads(reply.read())
        if (health["sessions_active"] == 0 and health["webrtc_peers"] == 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.2)
