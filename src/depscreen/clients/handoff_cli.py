"""`depscreen export fhir`, `depscreen replay` and `depscreen plot`: a session's result handed on, or replayed."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from depscreen.v1 import screening_pb2 as pb

from .cli import EXIT_BAD_INPUT, add_session_arguments, run_session, show_updates
from .sentences import SentencesError, read_sentences
from .tls import TlsFileError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export`, `replay` and `plot` subcommands."""
    export = subparsers.add_parser("export")
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
        help="when the interview took place (default: the session's own span, from its accepted.started_at or a "
        "recording's start)",
    )
    fhir.add_argument(
        "--model-card-url",
        metavar="URL",
        help="absolute URL of the model card your organisation publishes (default: the one the server sent, which "
        "must then be absolute)",
    )
    fhir.add_argument(
        "--include-transcript", action="store_true", help="add each sentence's transcript as a note (health data)"
    )
    fhir.set_defaults(func=run_export_fhir)

    replay = subparsers.add_parser(
        "replay",
        description="Re-send what a `depscreen serve --record` stream folder holds (audio, video frames, captions) "
        "on its timestamps, as a new session, and show the updates like `depscreen stream`. This sends health data.",
    )
    replay.add_argument("recording", help="a stream folder, DIR/<session>/stream-<n> (or a session folder with one)")
    add_session_arguments(replay)
    replay.set_defaults(func=run_replay)

    plot = subparsers.add_parser(
        "plot",
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
            session,
            patient=args.patient,
            occurred=args.occurred,
            model_card_url=args.model_card_url,
            include_transcript=args.include_transcript,
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

    return run_session(show_updates(client.stream_messages(outgoing()), as_json=args.json), (RecordingError,))


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
