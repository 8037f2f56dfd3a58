"""Cross-origin WHIP and HTTP hygiene: a real server answers preflights for the origins it lists on `/whip` and
`/whip/{id}` only, labels their answers (errors included) for them only, and leaves requests without an Origin
alone; the setting refuses non-origins. The page cannot be framed; connections that never finish their headers
are closed, and no more than `max_http_connections` are held."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from depscreen.localserver import LocalServer, start_local_server
from depscreen.streamer.settings import ServerSettings

CLINIC = "https://clinic.example.org"
PORTAL = "http://127.0.0.1:3000"
STRANGER = "https://elsewhere.example.com"
READ_TIMEOUT_S = 1
MAX_CONNECTIONS = 6


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    local = start_local_server(
        "--device", "cpu", "--asr", "none", "--cors-origins", f"{CLINIC}, {PORTAL}",
        "--http-read-timeout-s", str(READ_TIMEOUT_S), "--max-http-connections", str(MAX_CONNECTIONS),
    )  # fmt: skip
    yield local
    local.stop()


def request(server: LocalServer, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    call = urllib.request.Request(f"{server.http_url}{path}", data=b"" if method == "POST" else None, method=method)
    for name, value in headers.items():
        call.add_header(name, value)
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_a_listed_origin_gets_its_preflight_answered(server: LocalServer) -> None:
    for origin, path in ((CLINIC, "/whip"), (PORTAL, "/whip/abc123")):
        status, headers, _ = request(
            server,
            "OPTIONS",
            path,
            {
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert status == 204
        assert headers["Access-Control-Allow-Origin"] == origin and headers["Vary"] == "Origin"
        assert "POST" in headers["Access-Control-Allow-Methods"] and "DELETE" in headers["Access-Control-Allow-Methods"]
        assert "Authorization" in headers["Access-Control-Allow-Headers"]


def test_an_unlisted_origin_is_refused_with_the_reason(server: LocalServer) -> None:
    status, headers, text = request(server, "OPTIONS", "/whip", {"Origin": STRANGER})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    assert STRANGER in text and "cors_origins" in text


def test_answers_are_labelled_for_listed_origins_only_errors_included(server: LocalServer) -> None:
    status, headers, text = request(server, "POST", "/whip", {"Origin": CLINIC, "Content-Type": "text/plain"})
    assert status == 415 and "application/sdp" in text
    assert headers["Access-Control-Allow-Origin"] == CLINIC
    assert "Location" in headers["Access-Control-Expose-Headers"]
    for others in ({"Origin": STRANGER}, {}):
        status, headers, _ = request(server, "POST", "/whip", {**others, "Content-Type": "text/plain"})
        assert status == 415 and "Access-Control-Allow-Origin" not in headers
    status, headers, _ = request(server, "GET", "/healthz", {"Origin": CLINIC})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers, "only /whip is cross-origin"


def test_only_the_whip_paths_are_cross_origin(server: LocalServer) -> None:
    preflight = {"Origin": CLINIC, "Access-Control-Request-Method": "POST"}
    for path in ("/whipper", "/whip/abc/extra", "/whip-admin", "/whip/"):
        status, headers, _ = request(server, "OPTIONS", path, preflight)
        assert "Access-Control-Allow-Origin" not in headers and status != 204, path


def test_the_page_cannot_be_framed(server: LocalServer) -> None:
    status, headers, _ = request(server, "GET", "/", {})
    assert status == 200 and "frame-ancestors 'none'" in headers["Content-Security-Policy"]


def closed_by_server(connection: socket.socket, within_s: float = 20.0) -> bool:
    """Whether the server closes `connection` (it reads end of file) within `within_s`."""
    connection.settimeout(within_s)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_that_never_finish_their_headers_are_closed_and_capped(server: LocalServer) -> None:
    silent = [socket.create_connection((server.host, server.http_port), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        silent[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers begun, never finished
        time.sleep(0.3)
        with socket.create_connection((server.host, server.http_port), timeout=5) as extra:
            try:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = extra.recv(64)
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
            assert answer == b"", "a connection over max_http_connections was served"
        assert all(closed_by_server(connection) for connection in silent), "an idle connection was held"
        status, _, _ = request(server, "GET", "/healthz", {})
        assert status == 200
    finally:
        for connection in silent:
            connection.close()


def test_a_whip_body_that_does_not_arrive_in_time_gets_408(server: LocalServer) -> None:
    with socket.create_connection((server.host, server.http_port), timeout=20) as connection:
        connection.sendall(
            b"POST /whip HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n"
        )
        answer = connection.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and "http_read_timeout_s" in answer


@pytest.mark.parametrize("value", ["*", "clinic.example.org", "https://clinic.example.org/app", "ftp://files.example"])
def test_the_setting_refuses_what_is_not_an_origin(value: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        ServerSettings(cors_origins=value)
