"""Cross-origin WHIP: a real server answers preflights for the origins it lists, labels its answers (errors
included) for them only, and leaves requests without an Origin alone; the setting refuses non-origins."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from depscreen.localserver import LocalServer, start_local_server
from depscreen.streamer.settings import ServerSettings

CLINIC = "https://clinic.example.org"
PORTAL = "http://127.0.0.1:3000"
STRANGER = "https://elsewhere.example.com"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    local = start_local_server("--device", "cpu", "--asr", "none", "--cors-origins", f"{CLINIC}, {PORTAL}")
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


@pytest.mark.parametrize("value", ["*", "clinic.example.org", "https://clinic.example.org/app", "ftp://files.example"])
def test_the_setting_refuses_what_is_not_an_origin(value: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        ServerSettings(cors_origins=value)
