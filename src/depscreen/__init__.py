"""depscreen: streaming real-time depression screening (engine, streamer, clients, wire contract)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("depscreen")
    """The installed release (the package metadata's version, set in pyproject.toml)."""
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

PROTOCOL_VERSION = "1.1"
"""The wire contract's version (protos/depscreen/v1): "1.MINOR", MINOR raised with each backward-compatible
addition, listed in CHANGELOG.md. A breaking change would be a new package, depscreen.v2."""
