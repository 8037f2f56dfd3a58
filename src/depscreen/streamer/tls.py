"""TLS for both ports from `tls_cert`/`tls_key`, and mTLS (client certificates required) from `tls_client_ca`.

The files are read once at startup; a missing or unusable file is a SettingsError naming it. Rotating a
certificate means restarting the server (in a cluster: a rolling restart).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from depscreen.streamer.settings import ServerSettings, SettingsError


def _read(name: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{name}={path}: cannot read it ({error.strerror})") from None
    if b"-----BEGIN " not in data:
        raise SettingsError(f"{name}={path} is not a PEM file (no -----BEGIN line)")
    return data


def grpc_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """Server credentials for the gRPC port; None when TLS is off."""
    if not settings.tls_cert:
        return None
    key, chain = _read("tls_key", settings.tls_key), _read("tls_cert", settings.tls_cert)
    client_ca = _read("tls_client_ca", settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def http_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The SSL context of the HTTP port (TLS 1.2 or newer); None when TLS is off."""
    if not settings.tls_cert:
        return None
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        if getattr(settings, name):
            _read(name, getattr(settings, name))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.tls_client_ca:
            context.load_verify_locations(settings.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except ssl.SSLError as error:
        raise SettingsError(f"tls_cert/tls_key/tls_client_ca cannot be used: {error.reason or error}") from None
    return context
