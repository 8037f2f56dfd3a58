"""Streamer: the gRPC service, HTTP metrics and health, session lifecycle, `depscreen serve`."""
