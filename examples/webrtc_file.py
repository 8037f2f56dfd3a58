"""Stream a media file over WebRTC (WHIP) from Python and print the estimate as it updates.

The audio (and video, unless --no-video) goes out as WebRTC tracks in real time; the updates come back on the
`depscreen` data channel as the same messages the gRPC client gets. Needs the [webrtc] extra
(`pip install 'depscreen[webrtc]'`):

    python examples/webrtc_file.py http://127.0.0.1:8080/whip interview.mp4 [--token TOKEN] [--no-video]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from depscreen.clients import ScreeningError, WhipClient


async def screen(url: str, path: str, token: str | None, video: bool) -> None:
    async for message in WhipClient(url, token=token).stream_file(path, video=video):
        kind = message.WhichOneof("kind")
        if kind == "accepted":
            print(f"accepted {message.accepted.session_id} (protocol {message.accepted.protocol_version})")
        elif kind == "sentence":
            print(f"sentence {message.sentence.index}: p={message.sentence.estimate.probability:.2f}")
        elif kind == "summary":
            summary = message.summary
            print(f"summary: {summary.sentences} sentences, p={summary.estimate.probability:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server's WHIP endpoint, http(s)://HOST:PORT/whip")
    parser.add_argument("media", help="an audio or video file (anything FFmpeg decodes)")
    parser.add_argument("--token", default=os.environ.get("DEPSCREEN_TOKEN"), help="bearer token, if required")
    parser.add_argument("--no-video", dest="video", action="store_false", help="send the audio only")
    args = parser.parse_args()
    try:
        asyncio.run(screen(args.url, args.media, args.token, args.video))
    except ScreeningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
