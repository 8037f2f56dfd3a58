"""What the server tells probes and balancers: gRPC health per service, and a retry hint on refused sessions.

Two health services answer on the gRPC port. The whole server (`""`) is SERVING from the end of startup until
the server begins shutting down (SIGTERM, SIGINT: then every service is NOT_SERVING): liveness and startup
probes ask it, because a restart would not help a replica that is merely busy. `depscreen.v1.Screening` is
SERVING only while the server admits new sessions, NOT_SERVING while it holds `max_sessions` or its backlog is
over `reject_backlog`: readiness probes and load balancers ask it, so new interviews go to replicas that will
take them. A refused session's `RESOURCE_EXHAUSTED` carries a
`google.rpc.RetryInfo` in its status details (the `grpc-status-details-bin` trailer) with the wait to retry after.
"""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2
from grpc_status import rpc_status

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServingHealth:
    """The gRPC health servicer with the whole server's status and the Screening service's admission status."""

    def __init__(self, service_name: str) -> None:
        self.servicer = health.aio.HealthServicer()
        self.service_name = service_name
        self._updates: set[asyncio.Task] = set()

    async def start(self, admitting: bool) -> None:
        """Mark the server SERVING, and the Screening service as `admitting` says."""
        await self.servicer.set("", SERVING)
        await self.servicer.set(self.service_name, SERVING if admitting else NOT_SERVING)

    def admitting(self, admitting: bool) -> None:
        """The Screening service's status follows admission (call on the event loop, on every change).

        Updates run in order; once the servicer has entered graceful shutdown they are ignored."""
        status = SERVING if admitting else NOT_SERVING
        update = asyncio.get_running_loop().create_task(self.servicer.set(self.service_name, status))
        self._updates.add(update)
        update.add_done_callback(self._updates.discard)


def retry_trailers(code: grpc.StatusCode, message: str, retry_after_s: float) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a `google.rpc.Status` with a `RetryInfo` detail (read it with
    `grpc_status.rpc_status.from_call`)."""
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(round(retry_after_s * 1000))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return tuple(rpc_status.to_status(status).trailing_metadata)
