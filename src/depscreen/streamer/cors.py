"""Cross-origin access to the WHIP endpoint for web apps served from other origins (`cors_origins`).

A telehealth web app at https://clinic.example.org that streams a patient's camera and microphone to
depscreen's `/whip` makes cross-origin requests: the browser sends an `OPTIONS` preflight (the offer carries
`Authorization` and `Content-Type: application/sdp`) and reads the answer's `Location` and `Link` headers only
when the server allows its origin. Only the origins listed are allowed, each exactly (no wildcard: a
screening server should know which apps stream to it); an empty list allows none and adds no headers.
Requests without an `Origin` header (native clients, `depscreen stream --webrtc`) are unaffected.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

WHIP_PATHS = re.compile(r"/whip(/[^/]+)?")
"""The paths that are cross-origin: `/whip` and `/whip/{id}`, exactly."""
ALLOWED_METHODS = "POST, PATCH, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"
EXPOSED_HEADERS = "Location, Link, ETag"
PREFLIGHT_MAX_AGE_S = 600
"""How long a browser may reuse a preflight's answer."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_origins(value: str) -> frozenset[str]:
    """The comma-separated origins of `cors_origins`; ValueError names one that is not `scheme://host[:port]`."""
    origins = set()
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
            raise ValueError(
                f"cors_origins entry {entry!r} is not an origin: give scheme://host[:port], e.g. https://app.example.org"
            )
        origins.add(entry.lower())
    return frozenset(origins)


def cors_middleware(origins: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware that answers preflights to `/whip` and `/whip/{id}` (no other path) and labels their
    answers for allowed origins."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not WHIP_PATHS.fullmatch(request.path):
            return await handler(request)
        allowed = origin.lower() in origins
        if request.method == "OPTIONS":
            if not allowed:
                raise web.HTTPForbidden(text=f"origin {origin} may not use this endpoint: add it to cors_origins")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                    "Vary": "Origin",
                },
            )
        try:
            response = await handler(request)
        except web.HTTPException as error:
            if allowed:
                _label(error, origin)
            raise
        if allowed:
            _label(response, origin)
        return response

    return cors


def _label(response: web.StreamResponse, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    response.headers["Vary"] = "Origin"
