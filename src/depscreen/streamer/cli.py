"""`depscreen serve`: run the gRPC + HTTP server until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from depscreen.streamer.logs import configure_logging
from depscreen.streamer.server import serve
from depscreen.streamer.settings import SettingsError, add_arguments, settings_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve")
    add_arguments(parser)
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        if not settings.model.is_file():
            raise ValueError(f"model checkpoint {settings.model} does not exist: pass --model PATH to a .pt file")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings))
    except SettingsError as error:
        logging.getLogger(__name__).critical("not starting: %s", error)
        return 2
    return 0
