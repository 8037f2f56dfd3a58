"""The `depscreen` command: one argparse tree whose subcommands live beside the code they drive.

Only the module of the command being run is imported (`depscreen --help` imports none), so `depscreen stream`
works with the client alone (the core distribution) and never loads the engine; a command whose extra is
missing says which one to install.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass

SERVER_EXTRA_MODULE = "torch"
"""A module only the [server] extra installs: when it is missing, the server-side commands are listed as such."""


@dataclass(frozen=True)
class Command:
    module: str
    """The module whose `register` adds the subcommand (imported only when the command is run)."""
    summary: str
    """The line `depscreen --help` shows for it."""
    extra: str = ""
    """The extra it needs beyond the client ("server": the engine, the feature models, the server; "train": those
    and training's own packages; "plot": matplotlib); "" = the client alone, whose commands name their own."""

    @property
    def needs_server(self) -> bool:
        return self.extra in ("server", "train")


COMMANDS = {
    "segment": Command("depscreen.engine.cli", "cut a media file into sentences with the live segmenter", "server"),
    "train": Command("depscreen.engine.cli", "train a checkpoint (synthetic demo, or a labelled dataset)", "train"),
    "eval": Command("depscreen.engine.cli", "score a labelled dataset sentence by sentence with a checkpoint", "train"),
    "calibrate": Command(
        "depscreen.engine.cli",
        "fit the estimate's interval for an existing checkpoint from held-out estimates",
        "train",
    ),
    "serve": Command("depscreen.streamer.cli", "run the screening server (gRPC + /metrics + /healthz)", "server"),
    "stream": Command("depscreen.clients.cli", "stream a media file to a screening server"),
    "export": Command("depscreen.clients.handoff_cli", "export a screened session for another system"),
    "replay": Command("depscreen.clients.handoff_cli", "re-send a recorded session to a screening server"),
    "plot": Command("depscreen.clients.handoff_cli", "draw a session's estimate over the interview as a PNG", "plot"),
    "demo": Command("depscreen.demo", "serve + stream the bundled sample interview with a live view", "server"),
    "bench": Command(
        "depscreen.bench",
        "benchmark the model step, server latency, stage CPU (`bench load`: many sessions; `bench asr`: ASR)",
        "server",
    ),
}
"""Every subcommand: where it lives and what it does."""
EXIT_MISSING_EXTRA = 2


class MissingCommandError(ImportError):
    """A command whose module cannot be imported because an optional dependency is not installed."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command`'s subcommand only (its module imported), or, for no or an unknown command,
    the list of every subcommand without importing any (the server-side ones marked when the [server] extra
    is missing)."""
    parser = argparse.ArgumentParser(prog="depscreen", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    if command not in COMMANDS:
        for name, entry in COMMANDS.items():
            subparsers.add_parser(name, help=entry.summary)
        if importlib.util.find_spec(SERVER_EXTRA_MODULE) is None:
            unavailable = [name for name, entry in COMMANDS.items() if entry.needs_server]
            parser.epilog = f"not installed: {', '.join(unavailable)} (pip install 'depscreen[server]')"
        return parser
    try:
        importlib.import_module(COMMANDS[command].module).register(subparsers)
    except ModuleNotFoundError as error:
        if (error.name or "").startswith("depscreen"):
            raise
        raise MissingCommandError(
            f"`depscreen {command}` needs the server's dependencies (missing module {error.name}): "
            f"pip install 'depscreen[{COMMANDS[command].extra or 'server'}]'"
        ) from None
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        parser = build_parser(command)
    except MissingCommandError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_MISSING_EXTRA)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ModuleNotFoundError as error:
        extra = COMMANDS[args.command].extra
        if not extra or (error.name or "").startswith("depscreen"):
            raise
        print(
            f"error: `depscreen {args.command}` needs the [{extra}] extra (missing module {error.name}): "
            f"pip install 'depscreen[{extra}]'",
            file=sys.stderr,
        )
        code = EXIT_MISSING_EXTRA
    sys.exit(code)


if __name__ == "__main__":
    main()
