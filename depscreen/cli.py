"""The `depscreen` command: dispatches to the engine, streamer and client subcommands."""
import sys


def main() -> None:
    print("depscreen: no subcommands yet", file=sys.stderr)


if __name__ == "__main__":
    main()
