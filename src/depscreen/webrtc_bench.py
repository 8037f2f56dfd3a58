"""What a WebRTC session costs the server beyond a gRPC one: decoding its Opus and VP8, per session-second.

A gRPC client sends PCM and a few JPEG frames; a WHIP peer sends Opus at 50 packets/s and VP8 at the camera's
frame rate, and every video frame must be decoded (inter-frame coding) though only `video_fps` of them are
analysed. `decode_cost` encodes a media file the way a browser would (aiortc's Opus and VP8 encoders), then
times aiortc's decoders and the RGB conversion of the analysed frames on one thread, in CPU milliseconds per
second of media, which is what `depscreen bench load --transport webrtc` adds per session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)


@dataclass(frozen=True)
class DecodeCost:
    """CPU milliseconds per second of media for each step of a WebRTC session's ingest."""

    media_s: float
    video_fps: float
    frame_size: str
    opus_decode_ms_per_s: float
    vp8_decode_ms_per_s: float
    rgb_convert_ms_per_s: float

    @property
    def total_ms_per_s(self) -> float:
        return self.opus_decode_ms_per_s + self.vp8_decode_ms_per_s + self.rgb_convert_ms_per_s


def decode_cost(path: Path, *, video_fps: float = 5.0, frame_size: tuple[int, int] | None = None) -> DecodeCost:
    """Encode `path`'s first audio and video streams to Opus and VP8, then time decoding them (see module).

    `frame_size` (width, height) scales the video first, to cost a camera bigger than the file's frames.
    """
    audio_frames, video_frames = _decoded(path, frame_size)
    opus = _encoded(OPUS, audio_frames)
    vp8 = _encoded(VP8, video_frames)
    media_s = sum(frame.samples for frame in audio_frames) / 48_000

    audio_decoder = get_decoder(OPUS)
    start = time.thread_time()
    for data, timestamp in opus:
        audio_decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    opus_s = time.thread_time() - start

    video_decoder = get_decoder(VP8)
    decoded = []
    start = time.thread_time()
    for data, timestamp in vp8:
        decoded += video_decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    vp8_s = time.thread_time() - start

    interval = Fraction(90_000) / Fraction(video_fps)
    due = None
    start = time.thread_time()
    for frame in decoded:
        if due is None or frame.pts >= due:
            frame.reformat(format="rgb24").to_ndarray()
            due = frame.pts + interval
    rgb_s = time.thread_time() - start
    if not video_frames:
        vp8_s = rgb_s = 0.0  # nothing was decoded: only the timer's own cost was measured

    size = f"{video_frames[0].width}x{video_frames[0].height}" if video_frames else "no video"
    return DecodeCost(
        media_s=media_s,
        video_fps=video_fps,
        frame_size=size,
        opus_decode_ms_per_s=opus_s * 1000 / media_s,
        vp8_decode_ms_per_s=vp8_s * 1000 / media_s,
        rgb_convert_ms_per_s=rgb_s * 1000 / media_s,
    )


def _decoded(path: Path, frame_size: tuple[int, int] | None) -> tuple[list[av.AudioFrame], list[av.VideoFrame]]:
    """48 kHz stereo 20 ms audio frames and the video frames of a file, timestamped as aiortc's tracks are."""
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48_000, frame_size=960)
    audio, video = [], []
    with av.open(str(path)) as container:
        streams = [*container.streams.audio[:1], *container.streams.video[:1]]
        for frame in container.decode(*streams):
            if isinstance(frame, av.AudioFrame):
                audio += resampler.resample(frame)
            elif frame.pts is not None:
                pts = round(frame.pts * frame.time_base * 90_000)
                if frame_size is not None:
                    frame = frame.reformat(width=frame_size[0], height=frame_size[1])
                frame.pts, frame.time_base = pts, Fraction(1, 90_000)
                video.append(frame)
    for index, frame in enumerate(audio):
        frame.pts, frame.time_base = index * 960, Fraction(1, 48_000)
    return audio, video


def _encoded(codec: RTCRtpCodecParameters, frames: list) -> list[tuple[bytes, int]]:
    """Each frame as the receiver's jitter buffer hands it to the decoder: its RTP payloads, depayloaded."""
    encoder = get_encoder(codec)
    encoded = []
    for frame in frames:
        payloads, timestamp = encoder.encode(frame)
        if payloads:
            encoded.append((b"".join(depayload(codec, payload) for payload in payloads), timestamp))
    return encoded


def describe(cost: DecodeCost) -> str:
    """A markdown table row set for bench reports."""
    return "\n".join(
        [
            "| WebRTC ingest step | CPU ms per session-second |",
            "| --- | --- |",
            f"| Opus decode (48 kHz stereo) | {cost.opus_decode_ms_per_s:.2f} |",
            f"| VP8 decode ({cost.frame_size}, every frame) | {cost.vp8_decode_ms_per_s:.2f} |",
            f"| RGB conversion ({cost.video_fps:g} fps analysed) | {cost.rgb_convert_ms_per_s:.2f} |",
            f"| total | {cost.total_ms_per_s:.2f} |",
        ]
    )
