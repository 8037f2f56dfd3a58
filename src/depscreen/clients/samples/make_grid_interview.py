"""Build the demo interview `grid_interview.mp4`: all GRID clips joined with a pause between answers.

Every `*.mpg` clip in `--grid` (sorted by name) is decoded and re-encoded into one file: 360x288 video at
25 fps (H.264 when this `av` build can encode it, else MPEG-4 part 2) and mono 16 kHz AAC audio. Each clip's
audio is padded with silence to the length of its video so that lips and voice stay in sync, and between
clips the speaker's last frame is held for `--gap` seconds of silence, like a pause between answers.

    python src/depscreen/clients/samples/make_grid_interview.py --grid ../shared/data/video/grid
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.resampler import AudioResampler

REPO = Path(__file__).resolve().parents[4]
DEFAULT_GRID = REPO.parent / "shared" / "data" / "video" / "grid"
DEFAULT_OUT = Path(__file__).resolve().parent / "grid_interview.mp4"

WIDTH, HEIGHT = 360, 288
FPS = 25
SAMPLE_RATE_HZ = 16_000
SAMPLES_PER_VIDEO_FRAME = SAMPLE_RATE_HZ // FPS
AUDIO_FRAME_SAMPLES = 1024
"""Samples per AAC frame."""


def video_codec_name() -> str:
    """H.264 (libx264) where the `av` build has the encoder, else MPEG-4 part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def decode_clip(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """One clip's frames as RGB arrays and its audio as 16 kHz mono float32 samples."""
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
    with av.open(str(path)) as container:
        streams = [container.streams.video[0], container.streams.audio[0]]
        for packet in container.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    audio.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
    audio.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    if any(frame.shape != (HEIGHT, WIDTH, 3) for frame in frames):
        raise ValueError(f"{path.name}: expected {WIDTH}x{HEIGHT} video")
    return frames, np.concatenate(audio).astype(np.float32)


def interview_timeline(clips: list[Path], gap_frames: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(video frame, the audio samples that play during it) for the whole interview, in order."""
    for number, clip in enumerate(clips):
        frames, audio = decode_clip(clip)
        padded = np.zeros(len(frames) * SAMPLES_PER_VIDEO_FRAME, dtype=np.float32)
        kept = min(len(audio), len(padded))
        padded[:kept] = audio[:kept]
        for index, frame in enumerate(frames):
            start = index * SAMPLES_PER_VIDEO_FRAME
            yield frame, padded[start : start + SAMPLES_PER_VIDEO_FRAME]
        if number < len(clips) - 1:
            silence = np.zeros(SAMPLES_PER_VIDEO_FRAME, dtype=np.float32)
            for _ in range(gap_frames):
                yield frames[-1], silence


def write_interview(clips: list[Path], out: Path, gap_s: float, crf: int) -> None:
    """Encode the joined clips into one mp4 at `out`."""
    with av.open(str(out), mode="w", options={"movflags": "+faststart"}) as container:
        video = container.add_stream(video_codec_name(), rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.gop_size = 2 * FPS
        if video.codec_context.name == "libx264":
            video.codec_context.options = {"crf": str(crf), "preset": "slow"}
        else:
            video.codec_context.bit_rate = 300_000
        audio = container.add_stream("aac", rate=SAMPLE_RATE_HZ, layout="mono")
        audio.codec_context.bit_rate = 32_000

        pending = np.zeros(0, dtype=np.float32)
        audio_pts = 0
        for number, (image, samples) in enumerate(interview_timeline(clips, round(gap_s * FPS))):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, FPS)
            container.mux(video.encode(frame))
            pending = np.concatenate([pending, samples])
            while len(pending) >= AUDIO_FRAME_SAMPLES:
                container.mux(audio.encode(_audio_frame(pending[:AUDIO_FRAME_SAMPLES], audio_pts)))
                audio_pts += AUDIO_FRAME_SAMPLES
                pending = pending[AUDIO_FRAME_SAMPLES:]
        if len(pending):
            container.mux(audio.encode(_audio_frame(pending, audio_pts)))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def _audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE_HZ, pts, Fraction(1, SAMPLE_RATE_HZ)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=DEFAULT_GRID, help="folder with the GRID *.mpg clips")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the mp4 to write")
    parser.add_argument("--gap", type=float, default=0.8, help="seconds of silence between clips")
    parser.add_argument("--crf", type=int, default=23, help="H.264 constant rate factor (higher = smaller)")
    args = parser.parse_args(argv)
    clips = sorted(args.grid.glob("*.mpg"))
    if not clips:
        print(f"error: no *.mpg clips in {args.grid}", file=sys.stderr)
        return 2
    write_interview(clips, args.out, args.gap, args.crf)
    print(f"{args.out}: {len(clips)} clips, {args.out.stat().st_size / 1e6:.2f} MB, {video_codec_name()} + aac")
    return 0


if __name__ == "__main__":
    sys.exit(main())
