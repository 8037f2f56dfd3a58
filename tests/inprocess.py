"""A `Server` in this process on loopback, with the parts a test gives it (the fakes of `fakes.py`), on an event
loop of its own thread: gRPC and HTTP clients reach it as they reach a `depscreen serve` process, and it starts
in well under a second because it loads no feature model."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import urllib.request
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from depscreen.localserver import read_counter
from depscreen.streamer.parts import ServerParts
from depscreen.streamer.server import Server
from depscreen.streamer.settings import ServerSettings

T = TypeVar("T")


class ServerThread:
    """`with ServerThread(settings, parts) as server:` a started server; `server.log()` is what it logged."""

    def __init__(self, settings: ServerSettings, parts: ServerParts) -> None:
        self.server = Server(settings, parts=parts)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="depscreen-test-server", daemon=True)
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def __enter__(self) -> ServerThread:
        logger = logging.getLogger("depscreen")
        self._level = logger.level
        logger.addHandler(self._handler)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        self._thread.start()
        try:
            self.call(self.server.start(), timeout_s=120)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self.call(self.server.stop(), timeout_s=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()
            logger = logging.getLogger("depscreen")
            logger.removeHandler(self._handler)
            logger.setLevel(self._level)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 300.0) -> T:
        """Run `coroutine` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    def get(self, path: str, timeout_s: float = 5.0) -> bytes:
        with urllib.request.urlopen(f"{self.http_url}{path}", timeout=timeout_s) as response:
            return response.read()

    def metrics(self) -> str:
        return self.get("/metrics").decode()

    def counter(self, sample: str) -> float:
        return read_counter(self.metrics(), sample)

    def log(self) -> str:
        return self._log.getvalue()
