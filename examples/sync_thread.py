"""Stream from threaded code: a capture thread pushes audio while the main thread reads the updates.

`SyncScreeningClient` runs the asyncio client on its own loop; every call blocks and may come from any thread.
The capture thread reads a 16-bit PCM WAV file in 100 ms chunks (standard library only). Needs only the core
install (`pip install depscreen`):

    python examples/sync_thread.py 127.0.0.1:50051 interview.wav [--token TOKEN]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import wave

from depscreen.clients import ScreeningError, SentenceUpdate, Summary, SyncScreeningClient, SyncSession

CHUNK_MS = 100


def capture(session: SyncSession, path: str, failures: list[BaseException]) -> None:
    """The capture thread: push the audio, then end the session (an error is kept for the main thread)."""
    try:
        with wave.open(path) as audio:
            frames = audio.getframerate() * CHUNK_MS // 1000
            while data := audio.readframes(frames):
                session.send_audio(data)
        session.end()
    except BaseException as error:  # handed to the main thread, which reports it
        failures.append(error)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="the server's gRPC address, HOST:PORT")
    parser.add_argument("wav", help="a 16-bit PCM WAV file, 8-48 kHz, mono or stereo")
    parser.add_argument("--token", default=os.environ.get("DEPSCREEN_TOKEN"), help="bearer token, if required")
    args = parser.parse_args()
    with wave.open(args.wav) as audio:
        rate, channels = audio.getframerate(), audio.getnchannels()
    failures: list[BaseException] = []
    try:
        with (
            SyncScreeningClient(args.target, token=args.token) as client,
            client.session(sample_rate_hz=rate, channels=channels) as session,
        ):
            sender = threading.Thread(target=capture, args=(session, args.wav, failures))
            sender.start()
            for update in session.updates():
                if isinstance(update, SentenceUpdate):
                    print(f"sentence {update.index}: p={update.probability:.2f} ({update.interval.words()})")
                elif isinstance(update, Summary):
                    print(f"summary: {update.sentences} sentences, p={update.probability:.2f}")
            sender.join()
    except ScreeningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if failures:
        print(f"error: the capture thread failed: {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
