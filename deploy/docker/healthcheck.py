"""Container health check: exit 0 when the server's /healthz answers {"status": "ok"}, 1 otherwise.

Runs inside the image (Docker `HEALTHCHECK`) with the standard library only. It asks
http://127.0.0.1:$DEPSCREEN_HTTP_PORT/healthz (8080 when unset); a URL given as the only argument wins.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0


def healthz_url() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    port = os.environ.get("DEPSCREEN_HTTP_PORT", "8080")
    return f"http://127.0.0.1:{port}/healthz"


def main() -> int:
    url = healthz_url()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
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
