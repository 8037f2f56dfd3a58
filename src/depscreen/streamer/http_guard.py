"""HTTP connection hygiene: at most `max_http_connections` open at once (more are closed on arrival).

aiohttp accepts every connection and keeps it until its keep-alive timer fires; the server sets that timer to
`http_read_timeout_s`, which closes a connection whose request headers have not all arrived that long after it
opened (or after its last answer), and bounds the number open with the protocol factory below, so a flood of
idle or slow connections (1,500 held 40 s, one for over 180 s, before) cannot exhaust file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def limit_connections(server: web.Server, limit: int) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory for `loop.create_server` that serves like `server` up to `limit` open connections."""
    refused = 0

    def factory() -> asyncio.BaseProtocol:
        nonlocal refused
        if len(server.connections) >= limit:
            refused += 1
            if refused == 1 or refused % 1000 == 0:
                log.warning("HTTP connections at max_http_connections=%d: refused %d so far", limit, refused)
            return _Refused()
        return server()

    return factory
