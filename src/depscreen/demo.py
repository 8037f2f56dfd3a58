"""`depscreen demo`: start a server, stream the bundled GRID sample interview through the client, show scores."""

from __future__ import annotations

import argparse
import sys

from depscreen.clients import cli as client_cli
from depscreen.localserver import start_local_server
from depscreen.sample import sample_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=50051)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as possible")
    parser.add_argument("--json", action="store_true", help="print server messages as JSON lines")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    print(f"starting the server on {args.host}:{args.grpc_port} (metrics on :{args.http_port}/metrics) ...")
    try:
        server = start_local_server(
            "--log-level", "WARNING", host=args.host, grpc_port=args.grpc_port, http_port=args.http_port
        )
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        parser = argparse.ArgumentParser(prog="depscreen")
        client_cli.register(parser.add_subparsers())
        stream_args = parser.parse_args(
            ["stream", str(sample_path()), "--server", server.grpc_target, "--speed", str(args.speed)]
            + (["--json"] if args.json else [])
        )
        return client_cli.run_stream(stream_args)
    finally:
        server.stop()
