"""WhipPeer: one WebRTC peer whose decoded tracks feed a LiveSession and whose data channel carries its updates.

The transport only moves media, like the gRPC service: decoded Opus audio becomes `Audio` chunks (s16le stereo
at 48 kHz, what aiortc's decoder yields), video becomes `Video` frames of RGB pixels on the audio clock
(sampled at `video_fps` before any conversion; handed to the session as arrays, never re-encoded), and every
update goes out on the data channel labelled `depscreen` as the JSON of its gRPC `ServerMessage`
(`MessageToDict(message, preserving_proto_field_name=True)`), so both transports' clients read one format. One
task feeds the session (the loop all transports share, `transport.py`), so its messages are applied one at a
time, in arrival order. Every track is read until
it ends, the ones the session does not use included: aiortc queues decoded frames without bound.

Lifecycle: `end()` (WHIP DELETE, every track ended, no media for `stall_timeout_s`, or audio `audio_grace_s`
behind `min_audio_speed`) finishes the
interview, sends the last sentence and the summary, frees the session's slot, then hangs up once the peer
has closed or after `HANG_UP_GRACE_S`. A connection that fails or closes, or a data channel the peer closes,
ends the session at once (nobody is left to read a summary). `close()` releases everything, exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from collections.abc import Callable, Coroutine
from fractions import Fraction

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcicetransport import RTCIceCandidate
from google.protobuf.json_format import MessageToDict

from depscreen.streamer.admission import SessionHub
from depscreen.streamer.convert import accepted_message, model_info_message
from depscreen.streamer.ice import IcePolicy, gathering_on
from depscreen.streamer.interview import Audio, Input, Video
from depscreen.streamer.protocol import ProtocolError
from depscreen.streamer.session import LiveSession
from depscreen.streamer.stall import SLICE_S, MessageWait, Silence, StreamEnd, audio_floor
from depscreen.streamer.transport import session_updates
from depscreen.v1 import screening_pb2 as pb

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "depscreen"
"""Label of the data channel the client creates in its offer; updates go out on it."""
PCM_RATE_HZ = 48_000
PCM_CHANNELS = 2
"""The audio format announced in the session's `start`: what aiortc's Opus decoder produces."""
AUDIO_CHUNK_MS = 100
"""Decoded 20 ms Opus frames are gathered into chunks of this length, one pipeline call each."""
SHED_VIDEO_AT = 20
"""Messages waiting for the session at which new video frames are dropped before conversion (audio never is)."""
RTP_HALF_RANGE = 2**31
HANG_UP_GRACE_S = 5.0
"""After the summary, how long the peer has to read it and close before the server closes the connection."""


class OfferError(ValueError):
    """An SDP offer this endpoint cannot answer; the message says what to change."""


class ExposureError(RuntimeError):
    """An answer that would list a host candidate outside `webrtc_host`: refused rather than sent."""


class WhipPeer:
    """An RTCPeerConnection bound to one admitted LiveSession: `answer()` the offer, later `end()` or `close()`."""

    def __init__(
        self,
        hub: SessionHub,
        live: LiveSession,
        configuration: RTCConfiguration,
        ice: IcePolicy,
        on_closed: Callable[[WhipPeer], None],
    ) -> None:
        self.resource_id = secrets.token_urlsafe(18)
        self.remote_ice_ufrag = ""
        self.remote_candidates = 0
        """Remote ICE candidates given so far (offer and trickles), against `max_ice_candidates`."""
        self.hub = hub
        self.live = live
        self.pc = RTCPeerConnection(configuration)
        self._ice = ice
        self._on_closed = on_closed
        self._messages: asyncio.Queue[Input | None] = asyncio.Queue()
        self._outbox: list[str] = []
        self._channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task] = set()
        self._feeder: asyncio.Task | None = None
        self._closing: asyncio.Task | None = None
        self._peer_gone = asyncio.Event()
        self._ending = False
        self._has_audio = False
        self._has_video = False
        self._feeding_tracks = 0
        self._media = asyncio.Event()
        """Set by every media frame received; the stall watch clears it (twice a second at most)."""
        self._audio_ms = 0.0
        self._video_origin: tuple[float, Fraction] | None = None
        self._video_clock = RtpClock()
        self._next_video_ms = 0.0
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)
        self._send(accepted_message(live.welcome(), model_info_message(hub.parts.screener)))

    @property
    def closed(self) -> bool:
        return self._closing is not None

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer (its candidates screened by the ICE policy already) and return the SDP
        answer, all local candidates gathered on the policy's addresses; OfferError when aiortc cannot use the
        offer, ExposureError when the answer would list another host address."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            with gathering_on(self._ice.local):
                await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, LookupError, TypeError) as error:
            raise OfferError(f"the SDP offer cannot be used: {error}") from error
        stray = self._ice.stray_host_candidates(self.pc.localDescription.sdp)
        if stray:
            raise ExposureError(
                f"the answer would list {len(stray)} host candidates outside webrtc_host: this aioice version no "
                "longer gathers through get_host_addresses; install the aioice version pyproject.toml allows"
            )
        self._feeder = self._spawn(self._feed(), "feed")
        self._spawn(self._watch_stall(), "stall")
        return self.pc.localDescription.sdp

    async def add_candidate(self, candidate: RTCIceCandidate | None) -> None:
        """A trickled remote ICE candidate, or None for end-of-candidates."""
        await self.pc.addIceCandidate(candidate)

    async def end(self, reason: str) -> None:
        """Finish the interview (last sentence, summary on the data channel), free its slot, then hang up."""
        if not self._ending:
            log.info("WebRTC session %s ends: %s", self.live.session_id, reason)
            self._ending = True
            self._messages.put_nowait(None)
            self._spawn(self._hang_up(), "hang-up")
        if self._feeder is not None and not self._feeder.done():
            await asyncio.wait([self._feeder])

    async def close(self) -> None:
        """Stop everything now: tasks, tracks, connection and the session's slot (idempotent)."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(), name="webrtc-close")
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.pc.close()
        finally:
            self.live.close()
            self._on_closed(self)

    def _spawn(self, coroutine: Coroutine[object, object, None], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"webrtc-{name}-{self.resource_id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("WebRTC session %s task failed", self.live.session_id, exc_info=task.exception())
            if not self.closed:
                self._spawn(self.close(), "close")

    # Events from aiortc (plain callbacks: the work goes to tracked tasks).

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._has_audio:
            self._has_audio = True
            self._feeding_tracks += 1
            self._spawn(self._read_audio(track), "audio")
        elif track.kind == "video" and not self._has_video:
            self._has_video = True
            self._feeding_tracks += 1
            self._spawn(self._read_video(track), "video")
        else:
            self._spawn(self._discard(track), f"extra-{track.kind}")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("close", self._on_channel_close)
        for text in self._outbox:
            channel.send(text)
        self._outbox.clear()

    def _on_channel_close(self) -> None:
        self._peer_gone.set()
        if not self.closed:
            log.info("WebRTC session %s: the peer closed the data channel", self.live.session_id)
            self._spawn(self.close(), "close")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state in ("failed", "closed"):
            self._peer_gone.set()
            if not self.closed:
                log.info("WebRTC session %s: connection %s", self.live.session_id, state)
                self._spawn(self.close(), "close")

    # Media in.

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        chunk_bytes = PCM_RATE_HZ * PCM_CHANNELS * 2 * AUDIO_CHUNK_MS // 1000
        pcm = bytearray()
        converter: av.AudioResampler | None = None
        try:
            while True:
                frame = await track.recv()
                self._media.set()
                if self._ending:
                    continue
                if not _is_session_format(frame):
                    converter = converter or av.AudioResampler(format="s16", layout="stereo", rate=PCM_RATE_HZ)
                    frames = converter.resample(frame)
                else:
                    frames = [frame]
                for out in frames:
                    pcm += out.to_ndarray().tobytes()
                    self._audio_ms += out.samples * 1000 / PCM_RATE_HZ
                while len(pcm) >= chunk_bytes:
                    self._messages.put_nowait(Audio(bytes(pcm[:chunk_bytes])))
                    del pcm[:chunk_bytes]
        except MediaStreamError:
            if pcm and not self._ending:
                self._messages.put_nowait(Audio(bytes(pcm)))
        await self._track_ended()

    async def _read_video(self, track: MediaStreamTrack) -> None:
        interval_ms = 1000.0 / self.hub.settings.video_fps
        try:
            while True:
                frame = await track.recv()
                self._media.set()
                if self._ending or not self._audio_ms:
                    continue  # video before the first audio has no place on the audio clock
                timestamp_ms = self._video_timestamp_ms(frame)
                if timestamp_ms < self._next_video_ms:
                    continue
                self._next_video_ms = timestamp_ms + interval_ms
                if self._messages.qsize() >= SHED_VIDEO_AT:
                    self.live.shed_video_frame()
                    continue
                pixels = await self.hub.run(_rgb, frame, self.hub.settings.max_message_bytes)
                if not self._ending:
                    self._messages.put_nowait(Video(timestamp_ms, pixels))
        except MediaStreamError:
            pass
        await self._track_ended()

    async def _discard(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            return

    def _video_timestamp_ms(self, frame: av.VideoFrame) -> int:
        """The frame's time on the audio clock: its pts relative to the first video frame, which is placed at
        the audio received when it arrived (RTP clocks of different tracks share no origin)."""
        if frame.pts is None or frame.time_base is None:
            return round(self._audio_ms)
        pts = Fraction(self._video_clock.unwrap(frame.pts)) * frame.time_base
        if self._video_origin is None:
            self._video_origin = (self._audio_ms, pts)
        origin_ms, origin_pts = self._video_origin
        return max(0, round(origin_ms + float(pts - origin_pts) * 1000))

    async def _track_ended(self) -> None:
        self._feeding_tracks -= 1
        if self._feeding_tracks == 0 and not self.closed:
            await self.end("every track ended")

    async def _watch_stall(self) -> None:
        """End the session after `stall_timeout_s` without media, or once its audio falls `audio_grace_s` behind
        `min_audio_speed` (a peer that never connects, or sends next to nothing), counted in time the server was
        running (`stall.MessageWait`, as a gRPC stream's): a server woken from a pause takes the media that waited
        in its sockets first. The server's shutdown ends WebRTC sessions itself (`WhipEndpoint.end_all`)."""
        settings = self.hub.settings
        wait = MessageWait(
            Silence(settings.stall_timeout_s), asyncio.Event(), self.hub.clock, audio_floor(settings), SLICE_S / 2
        )
        fed_ms = self._audio_ms
        while not self._ending:
            self._media.clear()
            heard = asyncio.ensure_future(self._media.wait())
            try:
                why = await wait.next(heard, lambda: None)
            finally:
                heard.cancel()
            if why is StreamEnd.STALLED:
                await self.end(f"no media for {settings.stall_timeout_s:g} s")
                return
            if why is StreamEnd.STARVED:
                self.hub.metrics.starved_sessions_total.inc()
                await self.end(f"less than {settings.min_audio_speed:g} s of audio per second")
                return
            if wait.starvation is not None and self._audio_ms != fed_ms:
                wait.starvation.took_audio((self._audio_ms - fed_ms) / 1000)
                fed_ms = self._audio_ms

    # Session.

    async def _feed(self) -> None:
        """Apply the queued messages to the session in order; after the end marker, finish it and free its slot."""
        try:
            async for message in session_updates(self.live, self._messages.get):
                self._send(message)
        except ProtocolError as error:
            self.hub.metrics.errors_total.labels(code=error.kind.name).inc()
            log.info("WebRTC session %s ended by protocol error %s: %s", self.live.session_id, error.kind.name, error)
            self._spawn(self.close(), "close")
        finally:
            self.live.close()

    async def _hang_up(self) -> None:
        if self._feeder is not None:
            await asyncio.wait([self._feeder])
        if self._channel is None or self._channel.readyState != "open":
            self._spawn(self.close(), "close")  # nobody is listening for the summary
            return
        try:
            await asyncio.wait_for(self._peer_gone.wait(), HANG_UP_GRACE_S)
        except TimeoutError:
            log.info("WebRTC session %s: the peer did not close within %g s", self.live.session_id, HANG_UP_GRACE_S)
        self._spawn(self.close(), "close")

    def _send(self, message: pb.ServerMessage) -> None:
        text = json.dumps(MessageToDict(message, preserving_proto_field_name=True))
        if self._channel is None:
            self._outbox.append(text)
        elif self._channel.readyState == "open":
            self._channel.send(text)


class RtpClock:
    """Unwraps 32-bit RTP timestamps (aiortc's frame pts) into a monotonic count: senders start at a random
    value, so a wrap can come minutes into a session."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._wraps = 0

    def unwrap(self, timestamp: int) -> int:
        if self._last is not None:
            if timestamp > self._last + RTP_HALF_RANGE and self._wraps:
                return timestamp + (self._wraps - 1) * 2 * RTP_HALF_RANGE  # a late frame from before the wrap
            if timestamp < self._last - RTP_HALF_RANGE:
                self._wraps += 1
        self._last = timestamp
        return timestamp + self._wraps * 2 * RTP_HALF_RANGE


def _is_session_format(frame: av.AudioFrame) -> bool:
    return frame.format.name == "s16" and frame.layout.name == "stereo" and frame.sample_rate == PCM_RATE_HZ


def _rgb(frame: av.VideoFrame, max_bytes: int) -> np.ndarray:
    """The frame's RGB pixels `[H, W, 3]`, scaled down (aspect kept) when they would take more than `max_bytes`
    (the limit a gRPC client's frame has)."""
    width, height = frame.width, frame.height
    if width * height * 3 > max_bytes:
        scale = math.sqrt(max_bytes / (width * height * 3))
        width, height = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    return np.ascontiguousarray(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
