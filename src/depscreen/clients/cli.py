"""`depscreen stream FILE`: stream a media file to a screening server and show its updates live or as JSON."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import aclosing
from typing import TYPE_CHECKING

from google.protobuf.json_format import MessageToDict

from depscreen.v1 import screening_pb2

from .captions import CaptionError
from .errors import MediaError, MissingExtraError, SessionInputError, StatusError, WhipError
from .session import ROLES, ScreeningClient
from .tls import TlsFileError

if TYPE_CHECKING:
    from .live import LiveState
    from .media import AudioSendLog

EXIT_RPC_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `stream` subcommand."""
    parser = subparsers.add_parser(
        "stream",
        description="Stream an audio or video file as a live interview and show the running estimate.",
    )
    parser.add_argument("file", help="media file: wav, flac, mp3, mp4, mpg (anything av can open)")
    add_session_arguments(parser)
    parser.add_argument(
        "--webrtc",
        metavar="URL",
        help="stream over WebRTC to this WHIP endpoint instead (http://HOST:HTTP_PORT/whip), in real time",
    )
    parser.add_argument("--captions", help="SRT or WebVTT captions to send with the audio")
    parser.add_argument("--no-video", dest="video", action="store_false", help="send audio (and captions) only")
    parser.add_argument("--video-fps", type=_positive_float, default=5.0, help="video frames sent per second")
    parser.add_argument("--language", default="en", help="BCP-47 language of the speech")
    parser.add_argument("--no-asr", dest="disable_asr", action="store_true", help="never run ASR (captions only)")
    parser.add_argument(
        "--channels",
        type=_roles,
        default=(),
        metavar="ROLE,ROLE",
        help="whose voice each channel of the file carries, in channel order (patient,clinician): the channels are "
        "sent apart and only the patient's is scored; default: the channels mixed, all the patient's",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=None,
        help="resume the session after a break (the default over gRPC, whenever the server has a state store)",
    )
    resume.add_argument(
        "--no-resume", dest="resume", action="store_false", help="let the first break end the session with its error"
    )
    parser.set_defaults(func=run_stream)


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that sends a session to a server: where, as whom, how fast, how shown."""
    parser.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the gRPC server")
    parser.add_argument(
        "--speed", type=_non_negative_float, default=1.0, help="1 = real time, 2 = twice as fast, 0 = no pacing"
    )
    parser.add_argument("--chunk-ms", type=_positive_int, default=100, help="audio chunk length in ms")
    parser.add_argument("--session-id", default="", help="session id to ask for (the server makes one if empty)")
    parser.add_argument("--json", action="store_true", help="print one JSON line per server message")
    parser.add_argument(
        "--token", default=os.environ.get("DEPSCREEN_TOKEN"), help="bearer token (default: $DEPSCREEN_TOKEN)"
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="PEM CA bundle the server's certificate chains to: use TLS")
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM client certificate, for servers that require mTLS")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")


def run_session(session: Coroutine[object, object, None], bad_input: tuple[type[Exception], ...] = ()) -> int:
    """Run a client session to its end and turn how it ended into the exit code: 0, `EXIT_RPC_ERROR` for a
    gRPC or WHIP error or a server that stopped answering, `EXIT_BAD_INPUT` for input that cannot be sent
    (media, captions, TLS files, a missing extra, and the command's own `bad_input` errors),
    `EXIT_INTERRUPTED` for Ctrl-C. Each error is printed on one line."""
    try:
        asyncio.run(session)
    except (MediaError, CaptionError, TlsFileError, MissingExtraError, SessionInputError, *bad_input) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StatusError, WhipError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RPC_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def run_stream(args: argparse.Namespace) -> int:
    """Run one streaming session; the exit code is 0, 1 for a gRPC or WHIP error, 2 for an unusable media or
    captions file or options WebRTC cannot honour (the live view opens with the first server message, so
    input errors come first)."""
    if args.webrtc and (args.captions or args.speed != 1.0):
        print("error: --captions and --speed work over gRPC only: WebRTC streams in real time", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.webrtc and args.channels:
        print("error: --channels works over gRPC only: a WebRTC session carries the patient alone", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.webrtc and args.resume:
        print("error: --resume works over gRPC only: a WebRTC session cannot be resumed", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.json and importlib.util.find_spec("rich") is None:  # the live view's, checked before sending
        print(
            "error: the live view needs the [cli] extra: pip install 'depscreen[cli]', or pass --json", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    if args.webrtc and (args.tls_ca or args.tls_cert) and not args.webrtc.startswith("https://"):
        print("error: --tls-ca/--tls-cert need an https:// WHIP URL", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_session(_stream(args))


def message_json(message: screening_pb2.ServerMessage) -> str:
    """One server message as a single JSON line (proto field names, enums by name)."""
    return json.dumps(MessageToDict(message, preserving_proto_field_name=True))


async def _stream(args: argparse.Namespace) -> None:
    send_log: AudioSendLog | None = None
    tls = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    if args.webrtc:
        from depscreen.clients import WhipClient

        stream = WhipClient(args.webrtc, token=args.token, **tls).stream_file(
            args.file,
            video=args.video,
            session_id=args.session_id,
            language=args.language,
            disable_asr=args.disable_asr,
        )
    else:
        try:
            from .media import AudioSendLog
        except ModuleNotFoundError as error:
            raise MissingExtraError("streaming a media file", "media", error.name or "av") from None
        send_log = AudioSendLog(channels=len(args.channels) or 1)
        stream = ScreeningClient(args.server, token=args.token, **tls).stream_file(
            args.file,
            speed=args.speed,
            chunk_ms=args.chunk_ms,
            captions=args.captions,
            video=args.video,
            video_fps=args.video_fps,
            session_id=args.session_id,
            language=args.language,
            disable_asr=args.disable_asr,
            on_send=send_log.record,
            resume=args.resume is not False,
            channel_roles=args.channels,
        )
    await show_updates(stream, as_json=args.json, send_log=send_log)


async def show_updates(
    stream: AsyncIterator[screening_pb2.ServerMessage], *, as_json: bool, send_log: AudioSendLog | None = None
) -> None:
    """Print a session's server messages as they come: one JSON line each, or the live view (which opens with
    the first message, so errors raised before it are printed plainly)."""
    async with aclosing(stream) as messages:
        if as_json:
            async for message in messages:
                print(message_json(message), flush=True)
            return
        from rich.console import Console
        from rich.live import Live

        from .live import LiveState, render

        state = LiveState()
        first = await anext(messages, None)
        if first is None:
            return
        _apply(state, first, send_log)
        with Live(render(state), console=Console(), auto_refresh=False) as live:
            async for message in messages:
                _apply(state, message, send_log)
                live.update(render(state), refresh=True)


def _apply(state: LiveState, message: screening_pb2.ServerMessage, send_log: AudioSendLog | None) -> None:
    """Update the view state, with the round trip of a sentence update measured now (gRPC only: WebRTC
    sends no per-chunk timing to measure it against)."""
    round_trip_ms = None
    if send_log is not None and message.WhichOneof("kind") == "sentence":
        round_trip_ms = send_log.round_trip_ms(message.sentence.end_ms)
    state.apply(message, round_trip_ms=round_trip_ms)


def _roles(text: str) -> tuple[str, ...]:
    roles = tuple(role.strip().lower() for role in text.split(","))
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)} is not a role: use {' or '.join(ROLES)} per channel")
    return roles


def _positive_int(text: str) -> int:
    value = int(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value
