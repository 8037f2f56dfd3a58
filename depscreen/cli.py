"""The `depscreen` command: one argparse tree whose subcommands live beside the code they drive.

Only the module of the command being run is imported, so `depscreen stream` works with the client alone (the
core distribution) and never loads the engine; a command whose extra is missing says which one to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "segment": "depscreen.engine.cli",
    "train": "depscreen.engine.cli",
    "eval": "depscreen.engine.cli",
    "serve": "depscreen.streamer.cli",
    "stream": "depscreen.clients.cli",
    "export": "depscreen.clients.handoff_cli",
    "replay": "depscreen.clients.handoff_cli",
    "plot": "depscreen.clients.handoff_cli",
    "demo": "depscreen.demo",
    "bench": "depscreen.bench",
}
"""Each subcommand and the module whose `register` adds it."""
EXIT_MISSING_EXTRA = 2


class MissingCommandError(ImportError):
    """A command whose module cannot be imported because an optional dependency is not installed."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command`'s subcommand only, or (no or an unknown command) every subcommand whose
    dependencies are installed, the others listed as needing the [server] extra."""
    parser = argparse.ArgumentParser(prog="depscreen", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    unavailable = []
    for name in wanted:
        try:
            importlib.import_module(name).register(subparsers)
        except ModuleNotFoundError as error:
            if (error.name or "").startswith("depscreen"):
                raise
            if command in COMMANDS:
                raise MissingCommandError(
                    f"`depscreen {command}` needs the server's dependencies (missing module {error.name}): "
                    "pip install 'depscreen[server]'"
                ) from None
            unavailable += [cmd for cmd, module_name in COMMANDS.items() if module_name == name]
    if unavailable:
        parser.epilog = f"not installed: {', '.join(unavailable)} (pip install 'depscreen[server]')"
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
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
