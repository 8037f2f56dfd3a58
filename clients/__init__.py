"""Clients: the Python client library and `depscreen stream` live view (imports only the wire contract)."""
