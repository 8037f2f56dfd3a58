"""The `depscreen` command: one argparse tree whose subcommands live beside the code they drive."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """All subcommands: engine (segment, train), streamer (serve), clients (stream, export, replay, plot), demo,
    bench."""
    from depscreen import bench, demo
    from depscreen.clients import cli as client_cli
    from depscreen.clients import handoff_cli
    from depscreen.engine import cli as engine_cli
    from depscreen.streamer import cli as streamer_cli

    parser = argparse.ArgumentParser(prog="depscreen", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (engine_cli, streamer_cli, client_cli, handoff_cli, demo, bench):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
