"""Client-side TLS from PEM files, for both transports: gRPC channel credentials and an HTTPS context (WHIP)."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc


class TlsFileError(ValueError):
    """A TLS file given to the client that cannot be used; the message names it."""


def read_tls_files(ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> dict[str, bytes]:
    """The PEM files given, by option name (`tls_ca`, `tls_cert`, `tls_key`); TlsFileError names one that
    cannot be read, or a certificate without its key."""
    if (cert is None) != (key is None):
        raise TlsFileError("a client certificate needs both --tls-cert and --tls-key")
    files = {}
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path is not None:
            try:
                files[name] = Path(path).read_bytes()
            except OSError as error:
                raise TlsFileError(f"{name} {path}: cannot read it ({error.strerror})") from None
    return files


def channel_credentials(
    ca: str | Path | None, cert: str | Path | None, key: str | Path | None
) -> grpc.ChannelCredentials | None:
    """gRPC TLS credentials (None when no file is given); TlsFileError names a file that cannot be used."""
    files = read_tls_files(ca, cert, key)
    if not files:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=files.get("tls_ca"), private_key=files.get("tls_key"), certificate_chain=files.get("tls_cert")
    )


def https_context(ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> ssl.SSLContext | None:
    """An HTTPS client context that trusts `ca` and presents `cert` (None when no file is given: the system's
    trust store applies); TlsFileError names a file that cannot be used."""
    files = read_tls_files(ca, cert, key)
    if not files:
        return None
    ca_pem = files["tls_ca"].decode() if "tls_ca" in files else None
    try:
        context = ssl.create_default_context(cadata=ca_pem)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as error:
        raise TlsFileError(f"the TLS files are not usable PEM ({error})") from None
    return context
