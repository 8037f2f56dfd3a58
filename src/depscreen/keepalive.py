"""gRPC keepalive channel arguments, one list for both ends of a screening stream."""

from __future__ import annotations


def keepalive_arguments(time_s: float, timeout_s: float, *, without_calls: bool) -> list[tuple[str, int]]:
    """Ping the peer after `time_s` without anything received and close the connection when a ping stays
    unanswered for `timeout_s` (the HTTP/2 ping timeout too: with a frozen link gRPC core closes the
    connection on that one, not on the keepalive timeout alone); pings carry no data limit.
    `without_calls`: ping also while no call is open (the server does; a client pings only for its calls)."""
    return [
        ("grpc.keepalive_time_ms", round(time_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", round(timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", int(without_calls)),
        ("grpc.http2.max_pings_without_data", 0),
    ]
