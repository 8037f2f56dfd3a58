"""WhipClient: stream a media file over WebRTC to a WHIP endpoint (RFC 9725) and receive the screening updates
that come back on its `depscreen` data channel, as the same ServerMessages the gRPC client yields."""

from __future__ import annotations

import asyncio
import email.message
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from google.protobuf.json_format import ParseDict

from depscreen.v1 import screening_pb2

from .errors import MediaError, WhipError
from .tls import https_context

DATA_CHANNEL_LABEL = "depscreen"
"""The data channel the server sends its updates on (JSON of each ServerMessage, proto field names)."""
AUDIO_RATE_HZ = 48_000
AUDIO_FRAME_SAMPLES = 960
"""20 ms audio frames, one Opus packet each."""
HTTP_TIMEOUT_S = 30.0
"""Longest wait for an answer to the offer (the server gathers its ICE candidates first) or to DELETE."""
_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[\w-]+(?:=(?:"[^"]*"|[^;,]*))?)*)')
_LINK_PARAM = re.compile(r';\s*([\w-]+)(?:=(?:"([^"]*)"|([^;,]*)))?')
SUMMARY_TIMEOUT_S = 30.0
"""After DELETE, how long to wait for the summary on the data channel."""


class WhipClient:
    """Client of a depscreen WHIP endpoint, e.g. `http://127.0.0.1:8080/whip`.

    With a `token`, every request carries `Authorization: Bearer <token>`. `ice_servers` are the STUN/TURN
    servers for this side's candidates (none by default: host candidates only); the servers an endpoint
    advertises in its answer (`Link: <url>; rel="ice-server"`, RFC 9725 section 4.6) are added to them for the
    client's next sessions (aiortc gathers its candidates before the offer goes out, so they cannot apply to the
    connection being answered). For an https:// endpoint,
    `tls_ca` is the CA bundle to trust (default: the system's) and `tls_cert`/`tls_key` a client certificate
    for servers that require mTLS.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
    ) -> None:
        self.url = url
        self.ice_servers = list(ice_servers)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._https = https_context(tls_ca, tls_cert, tls_key)

    async def stream_file(
        self,
        path: str | Path,
        *,
        video: bool = True,
        session_id: str = "",
        language: str = "en",
        disable_asr: bool = False,
    ) -> AsyncIterator[screening_pb2.ServerMessage]:
        """Send the file's audio (and video) in real time as WebRTC tracks and yield every server message.

        When the media ends the session is deleted, and the summary that comes back ends the iteration.
        Raises MediaError for a file that cannot be read or has no audio, WhipError for a refused request,
        a failed connection or a summary that never came.
        """
        media = FileMedia(path, video=video)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        updates: asyncio.Queue[screening_pb2.ServerMessage | BaseException | None] = asyncio.Queue()
        media_ended = asyncio.Event()
        channel = pc.createDataChannel(DATA_CHANNEL_LABEL)
        channel.on("message", lambda text: updates.put_nowait(_server_message(text)))

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc.connectionState == "failed":
                updates.put_nowait(WhipError("the WebRTC connection failed (no ICE route to the server)"))

        audio = media.track("audio")
        audio.on("ended", media_ended.set)
        pc.addTransceiver(audio, direction="sendonly")
        if media.has_video:
            pc.addTransceiver(media.track("video"), direction="sendonly")
        ender: asyncio.Task | None = None
        try:
            await pc.setLocalDescription(await pc.createOffer())
            resource, answer = await self._offer(pc.localDescription.sdp, session_id, language, disable_asr)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            ender = asyncio.get_running_loop().create_task(self._delete_when_ended(media_ended, resource, updates))
            deleted = False
            while True:
                timeout = SUMMARY_TIMEOUT_S if deleted else None
                try:
                    item = await asyncio.wait_for(updates.get(), timeout)
                except TimeoutError:
                    raise WhipError(f"no summary within {SUMMARY_TIMEOUT_S:g} s of ending the session") from None
                if item is None:
                    deleted = True
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
                    if item.WhichOneof("kind") == "summary":
                        return
        finally:
            if ender is not None:
                ender.cancel()
                await asyncio.wait([ender])
            await pc.close()
            media.close()

    async def _offer(self, sdp: str, session_id: str, language: str, disable_asr: bool) -> tuple[str, str]:
        """POST the offer; returns the session resource URL and the SDP answer."""
        query = {"language": language}
        if session_id:
            query["session_id"] = session_id
        if disable_asr:
            query["asr"] = "off"
        url = f"{self.url}{'&' if '?' in self.url else '?'}{urllib.parse.urlencode(query)}"
        status, headers, body = await asyncio.to_thread(self._request, "POST", url, sdp.encode(), "application/sdp")
        location = headers.get("Location")
        if status != 201 or not location:
            raise WhipError(f"POST {self.url} answered {status} without a session Location", status)
        known = {url for server in self.ice_servers for url in _urls(server)}
        self.ice_servers += [s for s in ice_servers_from_links(headers.get_all("Link") or ()) if s.urls not in known]
        return urllib.parse.urljoin(self.url, location), body

    async def _delete_when_ended(
        self,
        media_ended: asyncio.Event,
        resource: str,
        updates: asyncio.Queue[screening_pb2.ServerMessage | BaseException | None],
    ) -> None:
        """Once the media has ended, DELETE the session; then mark the queue (None) or pass the failure on."""
        await media_ended.wait()
        try:
            await asyncio.to_thread(self._request, "DELETE", resource, None, None)
        except WhipError as error:
            updates.put_nowait(error)
            return
        updates.put_nowait(None)

    def _request(
        self, method: str, url: str, body: bytes | None, content_type: str | None
    ) -> tuple[int, email.message.Message, str]:
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=self._https) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            reason = error.read().decode(errors="replace").strip() or error.reason
            raise WhipError(f"{method} {url} failed: {error.code} {reason}", error.code) from None
        except (urllib.error.URLError, OSError) as error:
            raise WhipError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None


def ice_servers_from_links(links: Iterable[str]) -> list[RTCIceServer]:
    """The STUN/TURN servers in `Link` header values with `rel="ice-server"` (several links may share one value),
    with the TURN username and credential they carry; other links are ignored."""
    servers = []
    for value in links:
        for match in _LINK.finditer(value):
            params = {
                name.lower(): quoted or bare.strip() for name, quoted, bare in _LINK_PARAM.findall(match.group(2))
            }
            if params.get("rel") != "ice-server":
                continue
            username, credential = params.get("username"), params.get("credential")
            servers.append(RTCIceServer(match.group(1), username=username, credential=credential))
    return servers


def _urls(server: RTCIceServer) -> list[str]:
    return [server.urls] if isinstance(server.urls, str) else list(server.urls)


def _server_message(text: str) -> screening_pb2.ServerMessage | WhipError:
    try:
        return ParseDict(json.loads(text), screening_pb2.ServerMessage())
    except (ValueError, TypeError) as error:
        return WhipError(f"the server sent an update that is not a ServerMessage: {error}")


class FileMedia:
    """A media file decoded on demand for an audio and (optionally) a video track, paced in real time.

    Frames are decoded in file order when a track asks for its next one; frames of the other kind wait in a
    queue bounded by how the file interleaves its streams. Audio becomes 20 ms frames of 48 kHz mono s16.
    """

    def __init__(self, path: str | Path, *, video: bool = True) -> None:
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"cannot open {self.path}: {getattr(error, 'strerror', None) or error}") from error
        if not self._container.streams.audio:
            self._container.close()
            raise MediaError(f"{self.path} has no audio stream")
        streams = [self._container.streams.audio[0]]
        start = streams[0].start_time
        self._origin_s = Fraction(start * streams[0].time_base) if start is not None else Fraction(0)
        if video and self._container.streams.video:
            streams.append(self._container.streams.video[0])
        self.has_video = len(streams) == 2
        self._frames = self._decode(streams)
        self._waiting: dict[str, deque[av.AudioFrame | av.VideoFrame]] = {"audio": deque(), "video": deque()}
        self._started_at: float | None = None

    def track(self, kind: str) -> MediaStreamTrack:
        """The paced track of `kind` ("audio" or "video")."""
        return _FileTrack(self, kind)

    def close(self) -> None:
        self._container.close()

    def next_frame(self, kind: str) -> av.AudioFrame | av.VideoFrame | None:
        """The next frame of `kind`, or None at the end of the file."""
        waiting = self._waiting[kind]
        while not waiting:
            frame = next(self._frames, None)
            if frame is None:
                return None
            self._waiting["audio" if isinstance(frame, av.AudioFrame) else "video"].append(frame)
        return waiting.popleft()

    async def wait_until(self, media_s: float) -> None:
        """Sleep until `media_s` of the media is due (real time since the first frame was sent)."""
        now = time.monotonic()
        if self._started_at is None:
            self._started_at = now - media_s
        delay = self._started_at + media_s - now
        if delay > 0:
            await asyncio.sleep(delay)

    def _decode(self, streams: list) -> Iterator[av.AudioFrame | av.VideoFrame]:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE_HZ, frame_size=AUDIO_FRAME_SAMPLES)
        samples = 0
        try:
            for packet in self._container.demux(streams):
                for frame in packet.decode():
                    if isinstance(frame, av.AudioFrame):
                        for out in resampler.resample(frame):
                            out.pts, out.time_base = samples, Fraction(1, AUDIO_RATE_HZ)
                            samples += out.samples
                            yield out
                    elif frame.pts is not None and frame.pts * frame.time_base >= self._origin_s:
                        frame.pts -= round(self._origin_s / frame.time_base)  # on the audio clock
                        yield frame
            for out in resampler.resample(None):
                out.pts, out.time_base = samples, Fraction(1, AUDIO_RATE_HZ)
                samples += out.samples
                yield out
        except av.FFmpegError as error:
            raise MediaError(f"cannot decode {self.path}: {error}") from error


class _FileTrack(MediaStreamTrack):
    """One kind of a FileMedia's frames, each released at its media time; the track ends with the file."""

    def __init__(self, media: FileMedia, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._media = media

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = self._media.next_frame(self.kind)
        if frame is None:
            self.stop()
            raise MediaStreamError
        await self._media.wait_until(float(frame.pts * frame.time_base))
        return frame
