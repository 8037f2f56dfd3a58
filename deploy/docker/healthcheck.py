"""Container health check: exit 0 when the server's /healthz answers {"status": "ok"}, 1 otherwise.

Runs inside the image (Docker `HEALTHCHECK`, or a Kubernetes exec probe) with the standard library only. It
asks http://127.0.0.1:$DEPSCREEN_HTTP_PORT/healthz (8080 when unset); a path given as the only argument asks
that path instead (`/readyz`: is the server admitting sessions, for readiness), and a URL wins over both.
When the server serves TLS (`DEPSCREEN_TLS_CERT` is set) it asks over https: the server's own loopback
address, so the certificate is not checked unless `DEPSCREEN_HEALTHCHECK_CA` names a CA bundle to check it
against. When the server requires client certificates (`DEPSCREEN_TLS_CLIENT_CA`), the check presents
`DEPSCREEN_HEALTHCHECK_CERT` and `DEPSCREEN_HEALTHCHECK_KEY` (a client certificate that CA signed).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def healthz_url() -> str:
    given = sys.argv[1] if len(sys.argv) > 1 else "/healthz"
    if not given.startswith("/"):
        return given
    port = os.environ.get("DEPSCREEN_HTTP_PORT", "8080")
    scheme = "https" if os.environ.get("DEPSCREEN_TLS_CERT") else "http"
    return f"{scheme}://127.0.0.1:{port}{given}"


def tls_context() -> ssl.SSLContext | None:
    """The TLS settings for an https URL; ValueError names a missing client certificate."""
    if not os.environ.get("DEPSCREEN_TLS_CERT"):
        return None
    ca = os.environ.get("DEPSCREEN_HEALTHCHECK_CA")
    if ca:
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if os.environ.get("DEPSCREEN_TLS_CLIENT_CA"):
        cert, key = os.environ.get("DEPSCREEN_HEALTHCHECK_CERT"), os.environ.get("DEPSCREEN_HEALTHCHECK_KEY")
        if not (cert and key):
            raise ValueError(
                "the server requires client certificates: set DEPSCREEN_HEALTHCHECK_CERT and "
                "DEPSCREEN_HEALTHCHECK_KEY to a client certificate signed by DEPSCREEN_TLS_CLIENT_CA"
            )
        context.load_cert_chain(cert, key)
    return context


def main() -> int:
    url = healthz_url()
    try:
        context = tls_context() if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if not isinstance(body, dict) or body.get("status") != "ok":
        print(f"unhealthy: {url} answered {body!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
