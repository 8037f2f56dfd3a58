"""Stream a patient and a clinician live as the two channels of one session: only the patient is scored, and each
answer names the clinician's question it follows and how long the patient took to answer.

A telehealth platform hands each participant's track apart; this "capture" reads two 16-bit PCM mono WAV files
of one sample rate (the patient's track and the clinician's, on one clock) in 100 ms chunks and interleaves them
into stereo, channel 0 the patient, channel 1 the clinician (standard library only). Needs only the core install
(`pip install depscreen`):

    python examples/two_voices.py 127.0.0.1:50051 patient.wav clinician.wav [--token TOKEN] [--realtime]

Exit status: 0 when the session ended with its summary, 75 when the server was full (try again after the wait
it printed), 2 when the input was refused (the message names the field), 1 for any other refusal or break.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import wave

from depscreen.clients import (
    Accepted,
    InvalidInputError,
    Reconnecting,
    RefusedError,
    ScreeningClient,
    ScreeningError,
    SentenceUpdate,
    Session,
    Summary,
    Update,
)

CHUNK_MS = 100
ROLES = ("patient", "clinician")
"""Whose voice each channel carries, in channel order."""


def interleave(patient: bytes, clinician: bytes) -> bytes:
    """Two mono 16-bit tracks as one stereo stream (patient left, clinician right); the shorter one is padded
    with silence."""
    length = max(len(patient), len(clinician))
    patient, clinician = patient.ljust(length, b"\0"), clinician.ljust(length, b"\0")
    stereo = bytearray(2 * length)
    stereo[0::4], stereo[1::4] = patient[0::2], patient[1::2]
    stereo[2::4], stereo[3::4] = clinician[0::2], clinician[1::2]
    return bytes(stereo)


def track_rate(path: str) -> int:
    """The sample rate of a 16-bit PCM mono WAV file (what each participant's track must be)."""
    with wave.open(path) as track:
        if track.getsampwidth() != 2 or track.getnchannels() != 1:
            raise SystemExit(
                f"{path}: needs one participant's track as 16-bit PCM mono, got {track.getnchannels()} channel(s) "
                f"of {track.getsampwidth() * 8}-bit samples"
            )
        return track.getframerate()


async def capture(session: Session, patient_path: str, clinician_path: str, realtime: bool) -> None:
    """Push both tracks as a live source would, 100 ms of stereo at a time, then say the interview is over."""
    with wave.open(patient_path) as patient, wave.open(clinician_path) as clinician:
        frames = patient.getframerate() * CHUNK_MS // 1000
        while True:
            left, right = patient.readframes(frames), clinician.readframes(frames)
            if not left and not right:
                break
            await session.send_audio(interleave(left, right))
            if realtime:
                await asyncio.sleep(CHUNK_MS / 1000)
    await session.end()


def answered(update: SentenceUpdate) -> str:
    """What the sentence answers: the clinician's question span and the patient's answer latency."""
    question = update.question
    if question is None:
        return "no question before it"
    words = f": {question.transcript!r}" if question.transcript else ""
    return (
        f"answers the question at {question.start_ms / 1000:.2f}-{question.end_ms / 1000:.2f} s{words} "
        f"after {update.answer_latency_ms} ms"
    )


def report(update: Update) -> None:
    """One update as the lines a newcomer reads."""
    match update:
        case Accepted():
            print(f"accepted {update.session_id} (server {update.server_version})")
            for notice in update.notices:
                print(f"  notice [{notice.code}] {notice}")
        case SentenceUpdate():
            print(f"sentence {update.index}: p={update.probability:.2f} ({update.interval.words()})")
            print(f"  {answered(update)}")
        case Reconnecting():
            print(f"stream broke ({update.error}); reconnecting in {update.wait_s:.1f} s")
        case Summary():
            print(
                f"summary: {update.sentences} sentences, p={update.probability:.2f}; "
                f"{update.message.clinician_sentences} clinician sentences"
            )


async def screen(target: str, patient: str, clinician: str, token: str | None, realtime: bool) -> None:
    rate = track_rate(patient)
    if track_rate(clinician) != rate:
        raise SystemExit(f"{clinician}: needs the patient track's sample rate, {rate} Hz")
    async with (
        ScreeningClient(target, token=token) as client,
        client.session(sample_rate_hz=rate, channels=2, channel_roles=ROLES, language="en") as session,
    ):
        sender = asyncio.create_task(capture(session, patient, clinician, realtime))
        try:
            async for update in session.updates():
                report(update)
        except BaseException:
            sender.cancel()  # the session is broken: stop capturing; its error is the one raised here
            await asyncio.gather(sender, return_exceptions=True)
            raise
        await sender


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="the server's gRPC address, HOST:PORT")
    parser.add_argument("patient", help="the patient's track: a 16-bit PCM mono WAV file, 8-48 kHz")
    parser.add_argument("clinician", help="the clinician's track: a 16-bit PCM mono WAV file, same rate")
    parser.add_argument("--token", default=os.environ.get("DEPSCREEN_TOKEN"), help="bearer token, if required")
    parser.add_argument("--realtime", action="store_true", help="pace the audio as a live source would")
    args = parser.parse_args()
    try:
        asyncio.run(screen(args.target, args.patient, args.clinician, args.token, args.realtime))
    except RefusedError as error:
        print(f"refused: {error.details()} (retry after {error.retry_after_s or 10:g} s)", file=sys.stderr)
        return 75
    except InvalidInputError as error:
        print(f"invalid input: {error}", file=sys.stderr)
        return 2
    except ScreeningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
