"""`SyncScreeningClient`: the live-source client for threaded code, running the async client on its own loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from depscreen.v1 import screening_pb2 as pb

from .session import ScreeningClient, Session
from .settings import ClientSettings
from .updates import Update

T = TypeVar("T")


class SyncScreeningClient:
    """`ScreeningClient` for threads: `with SyncScreeningClient(target) as client:` then
    `with client.session(...) as s:`, `s.send_audio(pcm)`, `for update in s.updates():`. Its calls block;
    they may come from any thread (a capture thread sending, another reading updates)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self._client = ScreeningClient(
            target, token=token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, settings=settings
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="depscreen-client", daemon=True)

    def __enter__(self) -> SyncScreeningClient:
        self._thread.start()
        self._run(self._client.__aenter__())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def session(
        self,
        *,
        sample_rate_hz: int = 16_000,
        channels: int = 1,
        language: str = "en",
        session_id: str = "",
        disable_asr: bool = False,
        resume: bool = True,
        channel_roles: Sequence[str] = (),
    ) -> SyncSession:
        """A session for `with` (see `ScreeningClient.session`)."""
        session = self._client.session(
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            language=language,
            session_id=session_id,
            disable_asr=disable_asr,
            resume=resume,
            channel_roles=channel_roles,
        )
        return SyncSession(session, self._run)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


class SyncSession:
    """A `Session` whose methods block (see `Session` for what each does)."""

    def __init__(self, session: Session, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._session = session
        self._run = run

    def __enter__(self) -> SyncSession:
        self._run(self._session.__aenter__())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._run(self._session.__aexit__(kind, error, trace))

    def send_audio(self, pcm: bytes | bytearray | memoryview) -> None:
        self._run(self._session.send_audio(pcm))

    def send_frame(
        self,
        image: bytes,
        *,
        format: pb.ImageFormat.ValueType | str,
        timestamp_ms: float | None = None,
        width: int = 0,
        height: int = 0,
    ) -> None:
        self._run(self._session.send_frame(image, format=format, timestamp_ms=timestamp_ms, width=width, height=height))

    def send_caption(self, text: str, *, start_ms: float, end_ms: float, role: str = "patient") -> None:
        self._run(self._session.send_caption(text, start_ms=start_ms, end_ms=end_ms, role=role))

    def end(self) -> None:
        self._run(self._session.end())

    def updates(self) -> Iterator[Update]:
        """Every update as it arrives (blocking between them); the session's error is raised here."""
        updates = self._session.updates()

        async def next_update() -> Update | None:
            return await anext(updates, None)

        while (update := self._run(next_update())) is not None:
            yield update
