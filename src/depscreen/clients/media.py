"""Media files to outgoing stream messages: 16 kHz PCM chunks (mono, or one channel per role with a channel
mapping), sampled JPEG frames and captions, paced."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
from av.audio.resampler import AudioResampler

from depscreen.v1 import screening_pb2

from .errors import MediaError

SAMPLE_RATE_HZ = 16_000
"""Rate of the PCM the client sends; the stream's `start` message announces it (one channel, or one per role)."""
BYTES_PER_MS = SAMPLE_RATE_HZ * 2 // 1000
"""s16le mono bytes per millisecond of audio (32); each channel of a role-mapped file adds as much."""
LAYOUTS = {1: "mono", 2: "stereo"}
"""The channel layouts a file's audio is decoded to: mono (every channel mixed), or stereo kept apart."""
JPEG_PIXEL_FORMAT = "yuvj420p"
JPEG_QSCALE = 3
"""Quantiser of the JPEG frames (FFmpeg's mjpeg, 1 best .. 31 worst): about libjpeg's quality 80."""


@dataclass(frozen=True, slots=True)
class TimedMessage:
    """An outgoing message and the media time (ms) at which a live source would have it ready to send.

    Audio chunks are ready when their last sample has been captured (the chunk's end); a video frame or a
    caption goes out right after the audio chunk that reaches its timestamp, so it shares that chunk's time.
    """

    media_ms: float
    message: screening_pb2.ClientMessage


class MediaSource:
    """An opened media file whose audio, sampled video frames and captions become time-ordered messages.

    Opening checks that the file can be read and has an audio stream, so a bad file fails before any
    connection is made. `messages()` then decodes lazily: only what sits between the audio and video read
    positions of the demuxer is buffered, never the whole file.

    Video timestamps are on the audio clock: a frame's presentation time minus the audio stream's start.
    Frames without a presentation time are skipped.
    """

    def __init__(
        self, path: str | Path, *, video: bool = True, video_fps: float = 5.0, channels: int | None = None
    ) -> None:
        """`channels`: None mixes the file's channels to mono; 1 or 2 keeps them apart (for a session whose
        `start` maps each channel to a role) and refuses (MediaError) a file with another channel count."""
        if video_fps <= 0:
            raise ValueError(f"video_fps must be positive, got {video_fps}")
        if channels is not None and channels not in LAYOUTS:
            raise ValueError(f"channels must be None (mixed to mono), 1 or 2 (kept apart), got {channels}")
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as error:
            raise MediaError(f"cannot open {self.path}: {_reason(error)}") from error
        if not self._container.streams.audio:
            self._container.close()
            raise MediaError(f"{self.path} has no audio stream")
        self._audio = self._container.streams.audio[0]
        self.channels = channels or 1
        found = self._audio.codec_context.channels
        if channels is not None and found != channels:
            self._container.close()
            raise MediaError(
                f"{self.path} has {found} audio channel(s), but {channels} role(s) were mapped to its channels: "
                "give one role per channel of the file"
            )
        has_video = video and bool(self._container.streams.video)
        self._video = self._container.streams.video[0] if has_video else None
        self._frame_interval = Fraction(1) / Fraction(video_fps)
        self._jpeg: av.VideoCodecContext | None = None
        start = self._audio.start_time
        self._origin = Fraction(start * self._audio.time_base) if start is not None else Fraction(0)

    @property
    def has_video(self) -> bool:
        """Whether frames will be sent (the file has a video stream and video was asked for)."""
        return self._video is not None

    def __enter__(self) -> MediaSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder; a running `messages()` generator stops working."""
        self._container.close()

    def messages(
        self, *, chunk_ms: int = 100, captions: Iterable[screening_pb2.Caption] = ()
    ) -> Iterator[TimedMessage]:
        """The file's messages in media time order; see `interleave`."""
        return interleave(
            self._decoded(), chunk_ms=chunk_ms, captions=captions, video=self.has_video, channels=self.channels
        )

    def _decoded(self) -> Iterator[bytes | screening_pb2.VideoFrame]:
        """16 kHz PCM (mono, or the file's channels interleaved) and video frames in demuxer order; every decoded
        frame is reported (to move the video read position) but only those on the `video_fps` grid carry a JPEG
        image."""
        resampler = AudioResampler(format="s16", layout=LAYOUTS[self.channels], rate=SAMPLE_RATE_HZ)
        streams = [self._audio] if self._video is None else [self._audio, self._video]
        next_frame_s = Fraction(0)
        try:
            for packet in self._container.demux(streams):
                for frame in packet.decode():
                    if isinstance(frame, av.AudioFrame):
                        for out in resampler.resample(frame):
                            yield out.to_ndarray().tobytes()
                    elif frame.pts is not None:
                        seconds = Fraction(frame.pts * frame.time_base) - self._origin
                        message = screening_pb2.VideoFrame(timestamp_ms=max(0, round(seconds * 1000)))
                        if seconds >= next_frame_s:
                            self._encode(frame, message)
                            next_frame_s = (seconds // self._frame_interval + 1) * self._frame_interval
                        yield message
            for out in resampler.resample(None):
                yield out.to_ndarray().tobytes()
        except av.FFmpegError as error:
            raise MediaError(f"cannot decode {self.path}: {_reason(error)}") from error

    def _encode(self, frame: av.VideoFrame, message: screening_pb2.VideoFrame) -> None:
        if self._jpeg is None or (self._jpeg.width, self._jpeg.height) != (frame.width, frame.height):
            self._jpeg = av.CodecContext.create("mjpeg", "w")
            self._jpeg.width, self._jpeg.height = frame.width, frame.height
            self._jpeg.pix_fmt = JPEG_PIXEL_FORMAT
            self._jpeg.time_base = self._frame_interval
            self._jpeg.qmin = self._jpeg.qmax = JPEG_QSCALE
        packets = self._jpeg.encode(frame.reformat(format=JPEG_PIXEL_FORMAT))
        if len(packets) != 1:
            raise MediaError(f"cannot encode a {frame.width}x{frame.height} frame of {self.path} as JPEG")
        message.image = bytes(packets[0])
        message.format = screening_pb2.JPEG
        message.width, message.height = frame.width, frame.height


def interleave(
    decoded: Iterable[bytes | screening_pb2.VideoFrame],
    *,
    chunk_ms: int = 100,
    captions: Iterable[screening_pb2.Caption] = (),
    video: bool = True,
    channels: int = 1,
) -> Iterator[TimedMessage]:
    """Audio chunks of `chunk_ms` (the last one shorter) with frames and captions merged in by media time.

    `decoded` is 16 kHz PCM of `channels` interleaved channels and video frames in decoding order; a frame
    without an image only reports how far the video has been decoded. A frame or caption is sent once the
    audio sent so far has reached its timestamp (a caption's timestamp is its `start_ms`); those left after
    the last audio chunk follow it, in time order. While `video` is on, an audio chunk waits until the video
    has been decoded up to its end, so a frame never follows audio past its timestamp by more than one chunk.
    """
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
    bytes_per_ms = BYTES_PER_MS * channels
    chunk_bytes = chunk_ms * bytes_per_ms
    timed = _TimedQueue(sorted(captions, key=lambda caption: caption.start_ms))
    pcm = bytearray()
    sent_bytes = 0
    video_horizon_ms = float("-inf") if video else float("inf")
    for item in decoded:
        if isinstance(item, bytes):
            pcm += item
        else:
            video_horizon_ms = item.timestamp_ms
            if item.image:
                timed.frames.append(item)
        while len(pcm) >= chunk_bytes and (sent_bytes + chunk_bytes) / bytes_per_ms <= video_horizon_ms:
            sent_bytes += chunk_bytes
            yield _audio_message(bytes(pcm[:chunk_bytes]), sent_bytes / bytes_per_ms)
            del pcm[:chunk_bytes]
            yield from timed.release(sent_bytes / bytes_per_ms)
    for start in range(0, len(pcm), chunk_bytes):
        chunk = bytes(pcm[start : start + chunk_bytes])
        sent_bytes += len(chunk)
        yield _audio_message(chunk, sent_bytes / bytes_per_ms)
        yield from timed.release(sent_bytes / bytes_per_ms)
    yield from timed.release(float("inf"), media_ms=sent_bytes / bytes_per_ms)


class _TimedQueue:
    """Video frames and captions waiting for the audio to reach their timestamps."""

    def __init__(self, captions: list[screening_pb2.Caption]) -> None:
        self.frames: deque[screening_pb2.VideoFrame] = deque()
        self.captions = deque(captions)

    def release(self, audio_ms: float, *, media_ms: float | None = None) -> Iterator[TimedMessage]:
        """Everything due by `audio_ms` of sent audio, oldest first, stamped with `media_ms` (default
        `audio_ms`)."""
        stamp = audio_ms if media_ms is None else media_ms
        while True:
            frame_ms = self.frames[0].timestamp_ms if self.frames else None
            caption_ms = self.captions[0].start_ms if self.captions else None
            if caption_ms is not None and caption_ms <= audio_ms and (frame_ms is None or caption_ms < frame_ms):
                yield TimedMessage(stamp, screening_pb2.ClientMessage(caption=self.captions.popleft()))
            elif frame_ms is not None and frame_ms <= audio_ms:
                yield TimedMessage(stamp, screening_pb2.ClientMessage(video=self.frames.popleft()))
            else:
                return


def _audio_message(data: bytes, media_ms: float) -> TimedMessage:
    return TimedMessage(media_ms, screening_pb2.ClientMessage(audio=screening_pb2.AudioChunk(data=data)))


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)


class Pacer:
    """Releases messages at `t0 + media_time / speed` on a clock: speed 1 is real time, 0 as fast as possible.

    `clock` (seconds) and `sleep` are injectable so that tests can pace on a virtual clock.
    """

    def __init__(
        self,
        speed: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be 0 (as fast as possible) or positive, got {speed}")
        self.speed = speed
        self._clock = clock
        self._sleep = sleep

    async def pace(self, messages: Iterable[TimedMessage]) -> AsyncIterator[screening_pb2.ClientMessage]:
        """Yield each message no earlier than its media time, scaled by `speed`, after the first one."""
        t0: float | None = None
        for timed in messages:
            if self.speed > 0:
                if t0 is None:
                    t0 = self._clock()
                delay = t0 + timed.media_ms / 1000 / self.speed - self._clock()
                if delay > 0:
                    await self._sleep(delay)
            yield timed.message


class AudioSendLog:
    """When each audio chunk left the client, to measure the round trip of a sentence update.

    The round trip of a sentence is the time from sending the audio chunk that holds the sentence's last
    sample (`end_ms`) to receiving its update; it includes the server's wait for the pause that closes
    the sentence, which `SentenceUpdate.latency_ms` does not.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, channels: int = 1) -> None:
        """`channels`: interleaved channels of the audio sent (a role-mapped stream has one per role)."""
        self._clock = clock
        self._bytes_per_ms = BYTES_PER_MS * channels
        self._sent_ms: list[float] = []
        self._sent_at: list[float] = []
        self._audio_bytes = 0

    def record(self, message: screening_pb2.ClientMessage) -> None:
        """Note the send time of an audio chunk; other messages are ignored."""
        if message.WhichOneof("kind") == "audio":
            self._audio_bytes += len(message.audio.data)
            self._sent_ms.append(self._audio_bytes / self._bytes_per_ms)
            self._sent_at.append(self._clock())

    def round_trip_ms(self, media_ms: float) -> float | None:
        """Milliseconds since the audio reaching `media_ms` was sent, or None when it has not been sent."""
        index = bisect.bisect_left(self._sent_ms, media_ms)
        if index == len(self._sent_ms):
            return None
        return (self._clock() - self._sent_at[index]) * 1000
