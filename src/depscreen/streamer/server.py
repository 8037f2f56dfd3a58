"""The server: gRPC (Screening, health checking, reflection) and HTTP (/metrics, /healthz, /readyz, WHIP, the
page) on one event loop.

Read top to bottom: decide who may connect (`auth.verifier_for`, which refuses an open server on an address
other than loopback) and read the TLS files, load the model and feature extractors once, make the worker pool,
start gRPC (with keepalive pings both ways: `grpc_options`), start HTTP, mark the service SERVING; `stop()`
undoes it in reverse.

`shutdown()` (what SIGTERM and SIGINT do in `serve`) is the graceful way: every health service NOT_SERVING
(and /healthz 503) first, new streams and WHIP offers refused with UNAVAILABLE, live streams ended after the
message they are handling (resumable ones keep their snapshot and are told to resume; WebRTC sessions get
their summary), all within `shutdown_grace_s`; then `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import torch
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from depscreen.engine.runtime.batcher import BatcherSettings, MicroBatcher
from depscreen.engine.runtime.screener import Screener
from depscreen.engine.runtime.state_pool import StatePool
from depscreen.engine.runtime.threads import one_thread_per_call
from depscreen.keepalive import keepalive_arguments
from depscreen.streamer import page, tls
from depscreen.streamer.admission import SessionHub
from depscreen.streamer.auth import verifier_for
from depscreen.streamer.clock import Clock, SystemClock
from depscreen.streamer.cors import cors_middleware
from depscreen.streamer.health import ServingHealth
from depscreen.streamer.http_guard import limit_connections
from depscreen.streamer.metrics import Metrics
from depscreen.streamer.parts import ServerParts, load_parts
from depscreen.streamer.record import RecordBudget, folder_bytes, prepare_record_folder
from depscreen.streamer.resume import Resumer, read_key_file
from depscreen.streamer.service import ScreeningService
from depscreen.streamer.settings import ServerSettings, SettingsError
from depscreen.streamer.state_store import StoreError, open_store
from depscreen.streamer.transport import Transport
from depscreen.streamer.whip import WhipEndpoint
from depscreen.v1 import screening_pb2, screening_pb2_grpc

if TYPE_CHECKING:
    from depscreen.streamer.tracing import Tracing

log = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAME = screening_pb2.DESCRIPTOR.services_by_name["Screening"].full_name
STOP_GRACE_S = 1.0
"""How long `stop()` lets RPCs still running (health watches, streams past the shutdown grace) finish."""


class Server:
    """One depscreen server process; `await start()`, then `await stop()`."""

    def __init__(
        self,
        settings: ServerSettings,
        tracing: Tracing | None = None,
        clock: Clock | None = None,
        parts: ServerParts | None = None,
    ) -> None:
        """`tracing`: where session spans go; None: as the OTEL_* variables say (`open_tracing`). `clock`: what
        session time limits and pacing are measured on (the system's, unless a test brings a virtual one).
        `parts`: the model, extractors and recogniser the sessions run on; None: loaded at start as `settings`
        say (`parts.load_parts`), as a test brings its own (`tests/fakes.py`)."""
        self.settings = settings
        self.parts = parts
        self.tracing = tracing
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.grpc_port = 0
        self.http_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._http_listener: asyncio.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.hub: SessionHub | None = None
        self.transports: list[Transport] = []
        """The ways into the server (gRPC, WHIP), each ended and closed on shutdown."""
        self._batcher: MicroBatcher | None = None
        self._lag_task: asyncio.Task | None = None
        self._resumer: Resumer | None = None
        self.health = ServingHealth(SERVICE_NAME)

    async def start(self) -> None:
        s = self.settings
        verifier = verifier_for(s)  # first: a server that must not start fails before loading anything
        grpc_credentials, http_ssl = tls.grpc_credentials(s), tls.http_context(s)
        if s.state_store:
            self._resumer = await asyncio.get_running_loop().run_in_executor(None, open_resumer, s)
        record_budget = None
        if s.record:
            used = await asyncio.get_running_loop().run_in_executor(None, open_record_folder, Path(s.record))
            record_budget = RecordBudget(s.record_session_bytes, s.record_total_bytes, used)
        self.tracing = self.tracing or open_tracing(os.environ)
        # Sessions run in parallel on the worker threads; one torch thread each keeps them from contending.
        torch.set_num_threads(1)
        self._executor = ThreadPoolExecutor(max_workers=s.worker_count, thread_name_prefix="depscreen-worker")
        loop = asyncio.get_running_loop()
        if self.parts is None:
            self.parts = await loop.run_in_executor(self._executor, load_parts, s, self.metrics)
        screener = self.parts.screener
        one_thread_per_call()
        self._batcher = self._start_batcher(screener)
        self.hub = SessionHub(
            s,
            self.parts,
            self._batcher,
            self.metrics,
            self._executor,
            resumer=self._resumer,
            on_admission=self.health.admitting,
            tracing=self.tracing,
            clock=self.clock,
            record_budget=record_budget,
        )
        self.metrics.describe_server(
            version("depscreen"), screener.facts.model_id, screener.device.type, screener.kernels, s.max_sessions
        )
        self._lag_task = loop.create_task(self._watch_event_loop_lag(), name="depscreen-loop-lag")

        screening = await self._start_grpc(ScreeningService(self.hub, verifier), grpc_credentials)
        whip = WhipEndpoint(self.hub, verifier=verifier)
        await self._start_http(whip, http_ssl)
        self.transports = [screening, whip]

        await self.health.start(self.hub.admitting)
        log.info(
            "serving %s on %s:%d (gRPC) and :%d (HTTP) %s, model %s on %s (%s kernels)",
            SERVICE_NAME,
            s.host,
            self.grpc_port,
            self.http_port,
            ("over mTLS" if s.tls_client_ca else "over TLS") if s.tls_cert else "in plaintext",
            screener.facts.model_id,
            screener.device,
            screener.kernels,
        )

    def _start_batcher(self, screener: Screener) -> MicroBatcher:
        """The micro-batcher stepping every session's sentences, over a state pool sized for the settings."""
        s = self.settings
        pool = StatePool(screener.model, max(s.max_sessions, s.max_batch))
        batcher = MicroBatcher(
            screener,
            pool,
            self._run,
            BatcherSettings(
                max_batch=s.max_batch,
                max_wait_ms=s.max_wait_ms,
                park_after_s=s.park_after_s,
                snapshots=bool(s.state_store),
            ),
            on_batch=self._observe_batch,
        )
        batcher.start()
        return batcher

    async def _start_grpc(
        self, screening: ScreeningService, credentials: grpc.ServerCredentials | None
    ) -> ScreeningService:
        """Serve `screening`, health checking and reflection on the gRPC port (TLS with `credentials`)."""
        s = self.settings
        self._grpc = grpc.aio.server(options=grpc_options(s))
        screening_pb2_grpc.add_ScreeningServicer_to_server(screening, self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc)
        address = f"[{s.host}]:{s.grpc_port}" if ":" in s.host else f"{s.host}:{s.grpc_port}"
        if credentials is None:
            self.grpc_port = self._grpc.add_insecure_port(address)
        else:
            self.grpc_port = self._grpc.add_secure_port(address, credentials)
        await self._grpc.start()
        return screening

    async def _start_http(self, whip: WhipEndpoint, http_ssl: ssl.SSLContext | None) -> None:
        """Serve /metrics, /healthz, /readyz, `whip` and the page on the HTTP port (TLS with `http_ssl`)."""
        s = self.settings
        origins = s.cors_origin_set
        app = web.Application(middlewares=[cors_middleware(origins)] if origins else [])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        whip.add_routes(app)
        page.add_routes(app)
        self._http = web.AppRunner(app, access_log=None, keepalive_timeout=s.http_read_timeout_s)
        await self._http.setup()
        assert self._http.server is not None
        self._http_listener = await asyncio.get_running_loop().create_server(
            limit_connections(self._http.server, s.max_http_connections),
            s.host,
            s.http_port,
            ssl=http_ssl,
            reuse_address=True,
        )
        self.http_port = self._http_listener.sockets[0].getsockname()[1]

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _observe_batch(self, size: int, wall_s: float, cpu_s: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.observe_stage("model", wall_s, cpu_s)

    async def _watch_event_loop_lag(self, interval_s: float = 0.25) -> None:
        """Measure how late the loop wakes a timer: the time it was too busy to serve gRPC I/O."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.metrics.event_loop_lag.observe(max(0.0, loop.time() - expected))

    async def shutdown(self) -> None:
        """Stop gracefully within `shutdown_grace_s`: NOT_SERVING first, new streams refused, live streams
        ended (resumable ones to be resumed elsewhere, WebRTC ones with their summary), then `stop()`."""
        began = time.monotonic()
        deadline = began + self.settings.shutdown_grace_s
        live = self.hub.active if self.hub is not None else 0
        log.warning("shutting down: %d sessions live, ending them within %g s", live, self.settings.shutdown_grace_s)
        await self.health.servicer.enter_graceful_shutdown()
        if self.hub is not None:
            self.hub.shutdown.set()
            ending = (transport.end_all("the server is shutting down") for transport in self.transports)
            await _within(asyncio.gather(*ending), deadline - time.monotonic())
            while (self.hub.active or self._lingering) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        left = self.hub.active if self.hub is not None else 0
        await self.stop(max(0.0, min(STOP_GRACE_S, deadline - time.monotonic())))
        log.warning(
            "stopped %.2f s after the shutdown began: %d of %d sessions ended in time, %d cut at the end of the grace",
            time.monotonic() - began,
            live - left,
            live,
            left,
        )

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop at once: RPCs still running after `grace_s` are cancelled, WebRTC peers closed without a summary."""
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
        for transport in self.transports:
            await transport.close_all()
        for task in (self._lag_task,):
            if task is not None:
                task.cancel()
        if self._batcher is not None:
            await self._batcher.stop()
        if self._http_listener is not None:
            self._http_listener.close()
        if self._http is not None:
            await self._http.cleanup()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._resumer is not None:
            self._resumer.store.close()
        if self.tracing is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)

    @property
    def _lingering(self) -> int:
        return sum(transport.lingering for transport in self.transports)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def _healthz(self, _request: web.Request) -> web.Response:
        assert self.hub is not None
        shutting_down = self.hub.shutdown.is_set()
        body = {
            "status": "shutting down" if shutting_down else "ok",
            "model_id": self.hub.parts.screener.facts.model_id,
            "device": self.hub.parts.screener.device.type,
            "sessions_active": self.hub.active,
            "webrtc_peers": sum(t.peers for t in self.transports if isinstance(t, WhipEndpoint)),
        }
        status = 503 if shutting_down else 200
        return web.Response(text=json.dumps(body), status=status, content_type="application/json")

    async def _readyz(self, _request: web.Request) -> web.Response:
        """Readiness over HTTP, as the Screening health service: 503 while new sessions would be refused."""
        assert self.hub is not None
        admitting = self.hub.admitting
        body = {"status": "ok" if admitting else "full", "sessions_active": self.hub.active}
        return web.Response(status=200 if admitting else 503, text=json.dumps(body), content_type="application/json")


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """gRPC server options: message limits, and keepalive: the server pings a connection from which nothing
    arrived for `keepalive_time_s` (with or without streams) and closes one whose ping is not answered within
    `keepalive_timeout_s` (both the keepalive and the ping timeout: gRPC core checks the latter), which ends its
    streams as broken; it accepts client pings at most every `keepalive_min_ping_interval_s`, streams or not
    (faster ones get the connection closed: too_many_pings)."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", 1024 * 1024),
        *keepalive_arguments(settings.keepalive_time_s, settings.keepalive_timeout_s, without_calls=True),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", round(settings.keepalive_min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


async def _within(work: Awaitable[None], timeout_s: float) -> None:
    """Await `work`, giving up (cancelling it) after `timeout_s`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(work, max(0.0, timeout_s))


def open_record_folder(root: Path) -> int:
    """Check that sessions can be recorded into `root` (SettingsError says why not), and say loudly that they will;
    the bytes it holds already."""
    try:
        prepare_record_folder(root)
    except OSError as error:
        raise SettingsError(
            f"record {root}: cannot write there ({error.strerror}); give a writable folder, or leave record empty "
            "to record nothing"
        ) from None
    log.warning("recording every session into %s: audio, video and transcripts will be written to disk", root)
    return folder_bytes(root)


def open_resumer(settings: ServerSettings) -> Resumer:
    """The state store and token key of a server with `state_store` set; SettingsError says what to fix."""
    try:
        store = open_store(settings.state_store)
        key = read_key_file(settings.resume_key_file) if settings.resume_key_file else store.server_key()
    except (StoreError, ValueError) as error:
        raise SettingsError(str(error)) from None
    log.info("sessions are resumable for %g s after their last sentence", settings.resume_ttl_s)
    return Resumer(store, key, settings.resume_ttl_s, settings.finished_retention_s)


def open_tracing(environ: Mapping[str, str]) -> Tracing | None:
    """Traces as the standard OTEL_* variables configure them: exported over OTLP/gRPC when
    OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set or OTEL_TRACES_EXPORTER=otlp, else (and with
    OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true) None; also None, with a warning, without the `otel`
    extra. SettingsError for an exporter or protocol depscreen does not ship."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if disabled or exporter == "none":
        return None
    if exporter not in ("", "otlp"):
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER={exporter}: depscreen exports traces over OTLP only; set otlp or none"
        )
    if not (exporter == "otlp" or endpoint):
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol.strip().lower() != "grpc":
        raise SettingsError(
            f"OTLP protocol {protocol}: depscreen exports traces over OTLP/gRPC only; set "
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc (a collector's port 4317)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        from depscreen.streamer.tracing import Tracing
    except ImportError:
        log.warning("OTEL_* variables ask for traces, but the otel extra is missing (pip install 'depscreen[otel]')")
        return None
    log.info("exporting session traces over OTLP/gRPC to %s", endpoint or "localhost:4317")
    return Tracing(OTLPSpanExporter(), version("depscreen"))


async def serve(settings: ServerSettings) -> None:
    """Run a server until SIGTERM or SIGINT, then shut it down gracefully (`Server.shutdown`)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(number: int) -> None:
        if not stopping.is_set():
            log.warning("%s received", signal.Signals(number).name)
            stopping.set()

    server = Server(settings)
    await server.start()
    for number in signals:
        loop.add_signal_handler(number, on_signal, number)
    try:
        await stopping.wait()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)
        await server.shutdown()
        # Everything is closed and snapshotted: spare the exit a full garbage collection of the loaded models
        # and libraries, which took from 5 s to over a minute on a busy machine.
        gc.freeze()
