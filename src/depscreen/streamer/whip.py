"""The WHIP endpoint (RFC 9725) on the HTTP port: `POST /whip` opens a WebRTC session, `PATCH` trickles ICE,
`DELETE` ends it.

`POST /whip` takes an SDP offer (`Content-Type: application/sdp`) with an audio track, optionally a video
track, and a data channel labelled `depscreen`; the query may carry the other `SessionStart` fields
(`session_id`, `language`, `asr=off`). It answers `201 Created` with the SDP answer, the session resource in
`Location` and the configured STUN/TURN servers in `Link: <url>; rel="ice-server"` headers. Errors are plain
text reasons: 400 an offer that cannot be used (or more than `max_ice_candidates` ICE candidates in a session's
offer and trickles together), 401 a missing or refused bearer token (when the server checks tokens: the same
verifier as gRPC), 404 an unknown session (or another caller's: only the principal that opened a session may
trickle to it or end it), 413 a body over `max_sdp_bytes`, 415 a body that is not SDP, 422 an ICE restart (not
supported: open a new session), 500 an answer that would list a host address outside `webrtc_host` (`ice.py`:
refused, not sent), 503 (with `Retry-After`) a server at capacity or shutting down. Browsers on
other origins need their origin in `cors_origins` (`cors.py`).

Negotiation is bounded before the WebRTC stack sees anything: the body is read up to `max_sdp_bytes`, and the
ICE candidates and m= sections are counted on its lines before it is parsed, so no request can make aiortc's
candidate pairing (whose cost grows with the square of the count) hold the event loop. Then the ICE policy
(`ice.py`) drops the candidates whose addresses the operator does not allow (counted in
`depscreen_dropped_ice_candidates_total`), and the answer lists host candidates on `webrtc_host` only.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import SessionDescription, candidate_from_sdp
from multidict import CIMultiDict

from depscreen.streamer.admission import SessionHub
from depscreen.streamer.auth import AuthError, Verifier, authenticate, certificate_principal
from depscreen.streamer.ice import CANDIDATE, IcePolicy, is_candidate_line
from depscreen.streamer.interview import Opening
from depscreen.streamer.protocol import RETRY_AFTER_S, ErrorKind, ProtocolError
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.transport import Transport
from depscreen.streamer.webrtc import (
    DATA_CHANNEL_LABEL,
    PCM_CHANNELS,
    PCM_RATE_HZ,
    ExposureError,
    OfferError,
    WhipPeer,
)

log = logging.getLogger(__name__)

SDP = "application/sdp"
TRICKLE_ICE = "application/trickle-ice-sdpfrag"
MAX_MEDIA_SECTIONS = 8
"""m= sections an offer may have: a session uses three (audio, video, data channel)."""
READ_CHUNK_BYTES = 65536


class WhipEndpoint(Transport):
    """The `/whip` routes and the WebRTC sessions they opened (`end_all()` and `close_all()` on shutdown)."""

    def __init__(self, hub: SessionHub, *, verifier: Verifier | None = None) -> None:
        """`verifier`: when given, every request needs `Authorization: Bearer <token>` it accepts."""
        super().__init__(hub)
        self._verifier = verifier
        self._peers: dict[str, WhipPeer] = {}
        self._ice_servers = ice_servers(hub.settings)
        self._ice = IcePolicy.from_settings(hub.settings)
        self._ice.check_local()

    @property
    def peers(self) -> int:
        """Peer connections open now (a finished session's connection lingers until its peer hangs up)."""
        return len(self._peers)

    @property
    def lingering(self) -> int:
        return self.peers

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/whip", self._post)
        app.router.add_patch("/whip/{resource}", self._patch)
        app.router.add_delete("/whip/{resource}", self._delete)

    async def end_all(self, reason: str) -> None:
        """Finish every session (last sentence and summary on its data channel), then hang up as `end` does."""
        await asyncio.gather(*(peer.end(reason) for peer in list(self._peers.values())))

    async def close_all(self) -> None:
        """Close every peer connection without a summary (server shutdown)."""
        for peer in list(self._peers.values()):
            await peer.close()

    async def _post(self, request: web.Request) -> web.Response:
        principal = await self._authorize(request)
        if request.content_type != SDP:
            raise web.HTTPUnsupportedMediaType(text=f"send the SDP offer with Content-Type: {SDP}")
        offer = await read_body(request, self.hub.settings.max_sdp_bytes, self.hub.settings.http_read_timeout_s)
        try:
            ice_ufrag = check_offer(offer, self.hub.settings.max_ice_candidates)
        except OfferError as error:
            self._count("INVALID_ARGUMENT")
            raise web.HTTPBadRequest(text=str(error)) from None
        try:
            live = await self.hub.open(session_start(request), principal)
        except ProtocolError as error:
            self._count(error.kind.name)
            if error.kind in (ErrorKind.RESOURCE_EXHAUSTED, ErrorKind.UNAVAILABLE):
                retry_after = f"{error.retry_after_s or RETRY_AFTER_S:.0f}"
                raise web.HTTPServiceUnavailable(text=str(error), headers={"Retry-After": retry_after}) from None
            raise web.HTTPBadRequest(text=str(error)) from None
        configuration = RTCConfiguration(iceServers=self._ice_servers)
        peer = WhipPeer(self.hub, live, configuration, self._ice, self._forget)
        peer.remote_ice_ufrag = ice_ufrag
        peer.remote_candidates = count_candidates(offer)
        self._peers[peer.resource_id] = peer
        try:
            answer = await peer.answer(self._screened(offer, peer))
        except OfferError as error:
            await peer.close()
            self._count("INVALID_ARGUMENT")
            raise web.HTTPBadRequest(text=str(error)) from None
        except ExposureError as error:
            await peer.close()
            log.error("WebRTC session %s refused: %s", live.session_id, error)
            raise web.HTTPInternalServerError(text=f"the server cannot answer safely: {error}") from None
        except BaseException:
            await peer.close()
            raise
        headers = CIMultiDict({"Location": f"/whip/{peer.resource_id}"})
        for link in link_headers(self.hub.settings):
            headers.add("Link", link)
        return web.Response(status=201, text=answer, content_type=SDP, headers=headers)

    async def _patch(self, request: web.Request) -> web.Response:
        peer = self._peer(request, await self._authorize(request))
        if request.content_type != TRICKLE_ICE:
            raise web.HTTPUnsupportedMediaType(text=f"send trickled ICE candidates with Content-Type: {TRICKLE_ICE}")
        fragment = await read_body(request, self.hub.settings.max_sdp_bytes, self.hub.settings.http_read_timeout_s)
        ufrags = {line.strip()[len("a=ice-ufrag:") :] for line in fragment.splitlines() if "a=ice-ufrag:" in line}
        if request.headers.get("If-Match") == "*" or ufrags - {peer.remote_ice_ufrag}:
            raise web.HTTPUnprocessableEntity(text="ICE restarts are not supported: DELETE this session, offer anew")
        limit = self.hub.settings.max_ice_candidates
        total = peer.remote_candidates + count_candidates(fragment)
        if total > limit:
            self._count("INVALID_ARGUMENT")
            raise web.HTTPBadRequest(
                text=f"this session would have {total} remote ICE candidates; the limit is max_ice_candidates={limit}:"
                " send fewer (a host, a server-reflexive and a relay candidate per network suffice)"
            )
        peer.remote_candidates = total
        for candidate in trickled_candidates(self._screened(fragment, peer)):
            try:
                await peer.add_candidate(candidate)
            except ValueError as error:
                raise web.HTTPBadRequest(text=f"cannot add the candidate: {error}") from None
        return web.Response(status=204)

    async def _delete(self, request: web.Request) -> web.Response:
        peer = self._peer(request, await self._authorize(request))
        await peer.end("the client deleted the session")
        return web.Response(text="session ended; its summary was sent on the data channel\n")

    def _peer(self, request: web.Request, principal: str | None) -> WhipPeer:
        """The peer of the request's resource, if `principal` opened it: another caller gets the same 404 as
        for a resource that does not exist, so it learns nothing of other callers' sessions."""
        peer = self._peers.get(request.match_info["resource"])
        if peer is None or peer.live.principal != principal:
            raise web.HTTPNotFound(text="no such WHIP session: it ended, or it never existed")
        return peer

    async def _authorize(self, request: web.Request) -> str | None:
        """The request's principal (None on an open server; under mTLS without tokens, the client certificate's
        common name); 401 without an accepted bearer token. Checked in a thread: a JWKS URL may be fetched."""
        try:
            principal = await asyncio.to_thread(authenticate, self._verifier, request.headers.get("Authorization"))
        except AuthError as error:
            challenge = {"WWW-Authenticate": 'Bearer realm="depscreen"'}
            raise web.HTTPUnauthorized(text=str(error), headers=challenge) from None
        if principal is None and self.hub.settings.tls_client_ca and request.transport is not None:
            certificate = request.transport.get_extra_info("peercert") or {}
            names = [value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"]
            principal = certificate_principal(names[0] if names else None)
        return principal

    def _screened(self, sdp: str, peer: WhipPeer) -> str:
        """`sdp` without the remote candidates the ICE policy drops, counted (and logged without addresses)."""
        kept, dropped = self._ice.screened(sdp)
        if dropped:
            self.hub.metrics.dropped_ice_candidates_total.inc(dropped)
            log.debug(
                "WebRTC session %s: %d remote ICE candidates dropped (not public, not in webrtc_allow_networks)",
                peer.live.session_id,
                dropped,
            )
        return kept

    def _forget(self, peer: WhipPeer) -> None:
        self._peers.pop(peer.resource_id, None)

    def _count(self, code: str) -> None:
        self.hub.metrics.errors_total.labels(code=code).inc()


async def read_body(request: web.Request, limit: int, timeout_s: float) -> str:
    """The request's body as text, read no further than `limit` bytes (413 beyond, naming `max_sdp_bytes`) and
    for no longer than `timeout_s` (408 after, naming `http_read_timeout_s`)."""
    too_large = web.HTTPRequestEntityTooLarge(
        max_size=limit,
        actual_size=request.content_length or limit + 1,
        text=f"the body is larger than max_sdp_bytes={limit} bytes: send a smaller offer (fewer candidates), or "
        "raise max_sdp_bytes",
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.read(READ_CHUNK_BYTES):
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the body did not arrive within http_read_timeout_s={timeout_s:g} s: send it at once"
        ) from None
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the body is not UTF-8 text: send SDP") from None


def count_candidates(sdp: str) -> int:
    """The `a=candidate:` lines of an offer or trickle fragment, counted without parsing anything."""
    return sum(1 for line in sdp.splitlines() if is_candidate_line(line))


def check_offer(sdp: str, max_candidates: int) -> str:
    """The offer's ICE username fragment; OfferError unless it sends audio and opens a data channel, and it has
    at most `max_candidates` ICE candidates and `MAX_MEDIA_SECTIONS` m= sections (counted before parsing)."""
    candidates = count_candidates(sdp)
    if candidates > max_candidates:
        raise OfferError(
            f"the offer has {candidates} ICE candidates; the limit is max_ice_candidates={max_candidates}: send "
            "fewer (a host, a server-reflexive and a relay candidate per network suffice)"
        )
    sections = sum(1 for line in sdp.splitlines() if line.lstrip().startswith("m="))
    if sections > MAX_MEDIA_SECTIONS:
        raise OfferError(
            f"the offer has {sections} m= sections; at most {MAX_MEDIA_SECTIONS} are accepted: send one audio, "
            "at most one video and the data channel"
        )
    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, LookupError, TypeError) as error:
        raise OfferError(f"the body is not an SDP offer: {error}") from error
    kinds = [media.kind for media in description.media]
    if not kinds:
        raise OfferError("the body is not an SDP offer (no m= section)")
    if not any(m.kind == "audio" and m.direction in ("sendonly", "sendrecv") for m in description.media):
        raise OfferError("the offer sends no audio: add a microphone track (sendonly)")
    if "application" not in kinds:
        raise OfferError(f"the offer has no data channel: create one labelled {DATA_CHANNEL_LABEL!r} for the updates")
    return description.media[0].ice.usernameFragment if description.media[0].ice else ""


def session_start(request: web.Request) -> Opening:
    """The session's opening: the decoder's audio format, and the query's session_id, language and asr=off."""
    query = request.query
    asr = query.get("asr", "on")
    if asr not in ("on", "off"):
        raise web.HTTPBadRequest(text=f"asr={asr!r} is not one of on, off")
    return Opening(
        sample_rate_hz=PCM_RATE_HZ,
        channels=PCM_CHANNELS,
        session_id=query.get("session_id", ""),
        language=query.get("language", "en"),
        disable_asr=asr == "off",
    )


def trickled_candidates(fragment: str) -> list[RTCIceCandidate | None]:
    """The ICE candidates of a trickle-ice-sdpfrag body (RFC 8840), each tagged with its m= section; None
    stands for `a=end-of-candidates`."""
    candidates: list[RTCIceCandidate | None] = []
    mid: str | None = None
    index = -1
    for line in fragment.splitlines():
        line = line.strip()
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif is_candidate_line(line):
            try:
                candidate = candidate_from_sdp(line[len(CANDIDATE) :])
            except (ValueError, IndexError) as error:
                raise web.HTTPBadRequest(text=f"cannot parse {line!r}: {error}") from None
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = max(index, 0)
            candidates.append(candidate)
        elif line == "a=end-of-candidates":
            candidates.append(None)
    return candidates


def ice_servers(settings: ServerSettings) -> list[RTCIceServer]:
    """The configured STUN/TURN servers, for the server's own peer connections (none by default)."""
    servers = []
    for url in settings.ice_url_list:
        if url.startswith("turn"):
            servers.append(RTCIceServer(url, username=settings.turn_username, credential=settings.turn_credential))
        else:
            servers.append(RTCIceServer(url))
    return servers


def link_headers(settings: ServerSettings) -> list[str]:
    """One `Link` value per configured STUN/TURN server (RFC 9725 section 4.6)."""
    links = []
    for url in settings.ice_url_list:
        link = f'<{url}>; rel="ice-server"'
        if url.startswith("turn"):
            link += (
                f'; username="{settings.turn_username}"; credential="{settings.turn_credential}"'
                '; credential-type="password"'
            )
        links.append(link)
    return links
