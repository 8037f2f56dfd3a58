"""A real OTLP/gRPC trace receiver on loopback for tests: what a collector would get from the server."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every export request as received (`raw`, the wire bytes) and parsed (`spans`)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.stop(grace=None)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, _context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            self.raw.append(request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()

    def requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        with self._lock:
            return [trace_service_pb2.ExportTraceServiceRequest.FromString(raw) for raw in self.raw]

    def resources(self) -> dict[str, str]:
        """The string attributes of the resources the spans came from (service.name, ...)."""
        return {
            attribute.key: attribute.value.string_value
            for request in self.requests()
            for resource_spans in request.resource_spans
            for attribute in resource_spans.resource.attributes
        }

    def spans(self) -> list[trace_pb2.Span]:
        requests = self.requests()
        return [
            span
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def wait_for(self, name: str, timeout_s: float = 20.0) -> list[trace_pb2.Span]:
        """Every span received once one named `name` has arrived; AssertionError if none does in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            spans = self.spans()
            if any(span.name == name for span in spans):
                return spans
            time.sleep(0.1)
        raise AssertionError(f"no {name} span reached the receiver in {timeout_s:g} s")
