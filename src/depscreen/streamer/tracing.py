"""OpenTelemetry traces of sessions without health data: one span per session, one child span per pipeline stage.

Needs the `otel` extra (`pip install 'depscreen[otel]'`); `server.open_tracing` turns it on when the standard
OTEL_* variables configure an exporter. Spans reach the exporter only through `AllowListProcessor`, which keeps
the attributes named in ALLOWED_ATTRIBUTES (ids, counts, durations, status names) and drops every other one,
every event attribute and every status description: whatever code might attach one day (a transcript, a
caption, a media byte, an exception message quoting them) never leaves the process.
"""

from __future__ import annotations

import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from depscreen.streamer.auth import principal_fingerprint

SESSION_SPAN = "depscreen.session"
"""The span of one session; its children are named after the `depscreen_stage_seconds` stages."""

ALLOWED_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "depscreen.session.id": str,
    "depscreen.token_fingerprint": str,
    "depscreen.resumed": bool,
    "depscreen.status": str,
    "depscreen.sentences": int,
    "depscreen.audio_seconds": float,
    "depscreen.stage": str,
    "depscreen.runs": int,
    "depscreen.busy_seconds": float,
}
"""The only attributes exported, each with the type its value must have."""
COALESCED_STAGES = frozenset({"decode", "vad", "features_video"})
"""Stages that run per audio chunk or video frame: traced as one span per sentence (from their first run to
their last, with `depscreen.runs` and `depscreen.busy_seconds`), not one span per run, which would be ~20
spans per second of interview."""


def allowed(attributes: Attributes) -> dict[str, object]:
    """The attributes on the allow-list whose values have the listed type; nothing else."""
    kept = {}
    for name, value in (attributes or {}).items():
        kind = ALLOWED_ATTRIBUTES.get(name)
        if kind is not None and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            kept[name] = value
    return kept


class AllowListProcessor(SpanProcessor):
    """Hands `inner` (the exporting processor) a copy of each ended span holding only allowed attributes."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=allowed(span.attributes),
                events=[Event(event.name, allowed(event.attributes), event.timestamp) for event in span.events],
                links=[Link(link.context, allowed(link.attributes)) for link in span.links],
                kind=span.kind,
                status=Status(span.status.status_code),
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Tracing:
    """The tracer of one server: spans go through the allow-list to `exporter` in batches (OTEL_BSP_*)."""

    def __init__(self, exporter: SpanExporter, version: str) -> None:
        resource = Resource.create({"service.name": "depscreen", "service.version": version})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(AllowListProcessor(BatchSpanProcessor(exporter)))
        self.tracer = self.provider.get_tracer("depscreen.streamer", version)

    def session(self, session_id: str, principal: str | None, resumed: bool) -> SessionTrace:
        return SessionTrace(self.tracer, session_id, principal, resumed)

    def shutdown(self) -> None:
        """Export what is pending, then stop."""
        self.provider.shutdown()


class SessionTrace:
    """The span of one session and its stage children; `end()` exactly once."""

    def __init__(self, tracer: trace.Tracer, session_id: str, principal: str | None, resumed: bool) -> None:
        self._tracer = tracer
        attributes: dict[str, str | bool] = {"depscreen.session.id": session_id, "depscreen.resumed": resumed}
        fingerprint = principal_fingerprint(principal)
        if fingerprint is not None:
            attributes["depscreen.token_fingerprint"] = fingerprint
        self._span = tracer.start_span(SESSION_SPAN, kind=SpanKind.SERVER, attributes=attributes)
        self._context = trace.set_span_in_context(self._span)
        self._lock = threading.Lock()  # stages end in worker threads, the model step on the event loop
        self._pending: dict[str, tuple[int, int, int, float]] = {}
        """Coalesced stages since the last sentence: first start, last end (ns), runs, busy seconds."""

    def stage(self, stage: str, seconds: float) -> None:
        """A stage that just took `seconds`: a child span, or (COALESCED_STAGES) part of the sentence's one span
        for that stage. The `model` stage closes a sentence: the coalesced spans are emitted first."""
        end = time.time_ns()
        start = end - int(seconds * 1e9)
        with self._lock:
            if stage in COALESCED_STAGES:
                first, _, runs, busy = self._pending.get(stage, (start, end, 0, 0.0))
                self._pending[stage] = (first, end, runs + 1, busy + seconds)
                return
            if stage == "model":
                self._flush()
        self._child(stage, start, end, 1, seconds)

    def _flush(self) -> None:
        for stage, (first, last, runs, busy) in self._pending.items():
            self._child(stage, first, last, runs, busy)
        self._pending.clear()

    def _child(self, stage: str, start: int, end: int, runs: int, busy_s: float) -> None:
        attributes = {"depscreen.stage": stage, "depscreen.runs": runs, "depscreen.busy_seconds": busy_s}
        span = self._tracer.start_span(stage, context=self._context, start_time=start, attributes=attributes)
        span.end(end_time=end)

    def end(self, status: str, sentences: int, audio_seconds: float) -> None:
        """End the session's span with the gRPC status name that ended the stream (an error unless OK) and its
        counts."""
        self._span.set_attributes(
            {"depscreen.status": status, "depscreen.sentences": sentences, "depscreen.audio_seconds": audio_seconds}
        )
        if status != "OK":
            self._span.set_status(Status(StatusCode.ERROR))
        with self._lock:
            self._flush()
        self._span.end()
