"""The browser page at `/`: camera and microphone to the WHIP endpoint, the live estimate from its data channel.

Plain HTML, CSS and JavaScript in `static/`, served as files; the page runs no inline code, so its
Content-Security-Policy allows only this origin, and no page may frame it (`frame-ancestors 'none'`: a page
that holds camera and microphone must not be overlaid by another site's).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; frame-ancestors 'none'"
)


def add_routes(app: web.Application) -> None:
    """`/` (the page) and `/static/` (its script and style sheet)."""
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR)


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})
