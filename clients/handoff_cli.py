"""`depscreen export fhir`, `depscreen replay` and `depscreen plot`: a session's result handed on, or replayed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import grpc

from depscreen.v1 import screening_pb2 as pb

from .cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_RPC_ERROR,
    _non_negative_float,
    _positive_int,
    show_updates,
)
from .sentences import SentencesError, read_sentences
from .tls import TlsFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export`, `replay` and `plot` subcommands."""
    export = subparsers.add_parser("export", help="export a screened session for another system")
    formats = export.add_subparsers(dest="format", required=True)
    fhir = formats.add_parser(
        "fhir",
        help="as a FHIR R4 RiskAssessment (JSON)",
        description="Write a session's final estimate as a FHIR RiskAssessment (R4B, also valid R4), validated "
        "with fhir.resources. No transcript goes in unless --include-transcript is given.",
    )
    _sentences_argument(fhir)
    fhir.add_argument("--out", metavar="FILE", help="where to write the JSON (default: standard output)")
    fhir.add_argument("--patient", metavar="REF", help="FHIR reference of the subject, such as Patient/123")
    fhir.add_argument(
        "--occurred",
        type=_moment,
        metavar="ISO8601",
        help="when the interview took place (default: a recording's start, else when FILE was last written)",
    )
    fhir.add_argument(
        "--include-transcript", action="store_true", help="add each sentence's transcript as a note (health data)"
    )
    fhir.set_defaults(func=run_export_fhir)

    replay = subparsers.add_parser(
        "replay",
        help="re-send a recorded session to a screening server",
        description="Re-send what a `depscreen serve --record` stream folder holds (audio, video frames, captions) "
        "on its timestamps, as a new session, and show the updates like `depscreen stream`. This sends health data.",
    )
    replay.add_argument("recording", help="a stream folder, DIR/<session>/stream-<n> (or a session folder with one)")
    replay.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the gRPC server")
    replay.add_argument(
        "--speed", type=_non_negative_float, default=1.0, help="1 = real time, 2 = twice as fast, 0 = no pacing"
    )
    replay.add_argument("--chunk-ms", type=_positive_int, default=100, help="audio chunk length in ms")
    replay.add_argument("--session-id", default="", help="session id to ask for (the server makes one if empty)")
    replay.add_argument("--json", action="store_true", help="print one JSON line per server message")
    replay.add_argument(
        "--token", default=os.environ.get("DEPSCREEN_TOKEN"), help="bearer token (default: $DEPSCREEN_TOKEN)"
    )
    replay.add_argument("--tls-ca", metavar="FILE", help="PEM CA bundle the server's certificate chains to: use TLS")
    replay.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate, for servers that require mTLS")
    replay.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    replay.set_defaults(func=run_replay)

    plot = subparsers.add_parser(
        "plot",
        help="draw a session's estimate over the interview as a PNG",
        description="Draw the estimate after each sentence, each modality's own estimate, the evidence and the "
        "speech spans (and the estimate's interval, when the data has one). No transcript is drawn.",
    )
    _sentences_argument(plot)
    plot.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write")
    plot.add_argument("--size", type=_size, default=(1200, 700), metavar="WxH", help="pixels (default 1200x700)")
    plot.set_defaults(func=run_plot)


def run_export_fhir(args: argparse.Namespace) -> int:
    """Write the RiskAssessment; 2 for an unusable sentences file or a missing `fhir` extra."""
    try:
        from .fhir import risk_assessment

        session = read_sentences(args.file)
        document = risk_assessment(
            session, patient=args.patient, occurred=args.occurred, include_transcript=args.include_transcript
        ).model_dump_json(indent=2)
    except (ImportError, ValueError) as error:  # ValueError: SentencesError, or pydantic's on invalid FHIR
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out is None:
        print(document)
        return 0
    return _write_private(Path(args.out), document.encode() + b"\n")


def run_plot(args: argparse.Namespace) -> int:
    """Draw the PNG; 2 for an unusable sentences file or an output that cannot be written."""
    from .plot import draw_png

    try:
        png = draw_png(read_sentences(args.file), args.size)
    except SentencesError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return _write_private(Path(args.out), png)


def run_replay(args: argparse.Namespace) -> int:
    """Replay one recorded stream as a new session; 1 for a gRPC error, 2 for a recording that cannot be
    replayed (checked before connecting, so the server sees nothing of it)."""
    from .media import Pacer
    from .replay import RecordingError, open_recording
    from .session import ScreeningClient

    try:
        recording = open_recording(args.recording)
        client = ScreeningClient(
            args.server, token=args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key
        )
    except (RecordingError, TlsFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    start = pb.SessionStart()
    start.CopyFrom(recording.start)
    start.session_id = args.session_id

    async def outgoing() -> AsyncIterator[pb.ClientMessage]:
        yield pb.ClientMessage(start=start)
        async for message in Pacer(args.speed).pace(recording.messages(chunk_ms=args.chunk_ms)):
            yield message
        yield pb.ClientMessage(end=pb.SessionEnd())

    try:
        asyncio.run(show_updates(client.stream_messages(outgoing()), as_json=args.json))
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_RPC_ERROR
    except RecordingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _sentences_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="SENTENCES.jsonl", help="`depscreen stream --json` output, or a recording's sentences.jsonl"
    )


def _write_private(path: Path, data: bytes) -> int:
    """Write `data` to a file only its owner can read (it describes a patient); 2 when that fails."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a file that was there keeps its mode otherwise
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    except OSError as error:
        print(f"error: cannot write {path}: {error.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-05-01T09:30:00+02:00, got {text}"
        ) from None


def _size(text: str) -> tuple[int, int]:
    from .plot import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
