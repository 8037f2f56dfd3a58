"""Stream a live source from asyncio: audio is pushed as it is captured and the estimate printed as it updates.

The "capture" here reads a 16-bit PCM WAV file in 100 ms chunks (standard library only; a real application
pushes what its microphone or its call platform hands it). Needs only the core install (`pip install depscreen`):

    python examples/live_push.py 127.0.0.1:50051 interview.wav [--token TOKEN] [--realtime]

Exit status: 0 when the session ended with its summary, 75 when the server was full (try again after the wait
it printed), 1 for any other refusal or break.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import wave

from depscreen.clients import (
    Accepted,
    Reconnecting,
    RefusedError,
    ScreeningClient,
    ScreeningError,
    SentenceUpdate,
    Session,
    Summary,
)

CHUNK_MS = 100


async def capture(session: Session, path: str, realtime: bool) -> None:
    """Push the file's audio as a live source would, 100 ms at a time, then say the interview is over."""
    with wave.open(path) as audio:
        frames = audio.getframerate() * CHUNK_MS // 1000
        while data := audio.readframes(frames):
            await session.send_audio(data)
            if realtime:
                await asyncio.sleep(CHUNK_MS / 1000)
    await session.end()


async def screen(target: str, path: str, token: str | None, realtime: bool) -> None:
    with wave.open(path) as audio:
        if audio.getsampwidth() != 2:
            raise SystemExit(f"{path}: needs 16-bit PCM, got {audio.getsampwidth() * 8}-bit samples")
        rate, channels = audio.getframerate(), audio.getnchannels()
    async with (
        ScreeningClient(target, token=token) as client,
        client.session(sample_rate_hz=rate, channels=channels, language="en") as session,
    ):
        sender = asyncio.create_task(capture(session, path, realtime))
        async for update in session.updates():
            match update:
                case Accepted():
                    print(f"accepted {update.session_id} (server {update.server_version})")
                    for notice in update.notices:
                        print(f"  notice [{notice.code}] {notice}")
                case SentenceUpdate():
                    print(f"sentence {update.index}: p={update.probability:.2f} ({update.interval.words()})")
                case Reconnecting():
                    print(f"stream broke ({update.error}); reconnecting in {update.wait_s:.1f} s")
                case Summary():
                    print(f"summary: {update.sentences} sentences, p={update.probability:.2f}")
        await sender


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="the server's gRPC address, HOST:PORT")
    parser.add_argument("wav", help="a 16-bit PCM WAV file, 8-48 kHz, mono or stereo")
    parser.add_argument("--token", default=os.environ.get("DEPSCREEN_TOKEN"), help="bearer token, if required")
    parser.add_argument("--realtime", action="store_true", help="pace the audio as a live source would")
    args = parser.parse_args()
    try:
        asyncio.run(screen(args.target, args.wav, args.token, args.realtime))
    except RefusedError as error:
        print(f"refused: {error.details()} (retry after {error.retry_after_s or 10:g} s)", file=sys.stderr)
        return 75
    except ScreeningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
