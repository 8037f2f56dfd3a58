"""Authentication: the token file and JWT verifiers, the startup decision, and a real server that checks
bearer tokens on gRPC and WHIP, reloads its token file and limits the sessions of each token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc

from depscreen.clients.session import ScreeningClient
from depscreen.localserver import LocalServer, start_local_server
from depscreen.streamer.auth import (
    AuthError,
    JwksFile,
    JwksUrl,
    JwtVerifier,
    TokenFileVerifier,
    authenticate,
    verifier_for,
)
from depscreen.streamer.settings import ServerSettings, SettingsError
from depscreen.v1 import screening_pb2 as pb

START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
SILENCE = pb.ClientMessage(audio=pb.AudioChunk(data=bytes(3200)))
END = pb.ClientMessage(end=pb.SessionEnd())
TOKEN_A = "token-a-3f9d8c7b6a5e4d3c2b1a"
TOKEN_B = "token-b-0a1b2c3d4e5f6a7b8c9d"
TOKEN_C = "token-c-99887766554433221100"
ISSUER, AUDIENCE = "https://id.example.org/", "depscreen"


# Token file


def write_tokens(path: Path, *tokens: str) -> None:
    """Replace the file the way an operator's tooling would (a new file moved over the old one)."""
    staging = path.with_suffix(".new")
    staging.write_text("# screening clients\n\n" + "".join(f"{token}\n" for token in tokens))
    os.replace(staging, path)


def test_token_file_accepts_listed_tokens_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, TOKEN_A, TOKEN_B)
    verifier = TokenFileVerifier(path)
    assert verifier.verify(TOKEN_A) != verifier.verify(TOKEN_B)
    assert TOKEN_A not in verifier.verify(TOKEN_A), "the principal names the token without revealing it"
    for wrong in (TOKEN_C, TOKEN_A[:-1], TOKEN_A + "x", "# screening clients"):
        with pytest.raises(AuthError, match="refused") as refused:
            verifier.verify(wrong)
        assert wrong not in str(refused.value)


def test_token_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, TOKEN_A)
    verifier = TokenFileVerifier(path)
    verifier.verify(TOKEN_A)
    write_tokens(path, TOKEN_B)
    verifier.verify(TOKEN_B)
    with pytest.raises(AuthError):
        verifier.verify(TOKEN_A)


def test_a_broken_token_file_refuses_everyone_until_fixed(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, TOKEN_A)
    verifier = TokenFileVerifier(path)
    write_tokens(path, TOKEN_A, "short")
    with pytest.raises(AuthError):
        verifier.verify(TOKEN_A)
    path.unlink()
    with pytest.raises(AuthError):
        verifier.verify(TOKEN_A)
    write_tokens(path, TOKEN_A)
    verifier.verify(TOKEN_A)


@pytest.mark.parametrize(("content", "message"), [("", "holds no token"), ("abc\n", "line 1 is not a usable token")])
def test_an_unusable_token_file_stops_the_start(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(SettingsError, match=message):
        TokenFileVerifier(path)
    with pytest.raises(SettingsError, match="cannot read"):
        TokenFileVerifier(tmp_path / "missing")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {TOKEN_A}", TOKEN_A])
def test_a_missing_bearer_token_says_how_to_send_one(tmp_path: Path, header: str | None) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, TOKEN_A)
    with pytest.raises(AuthError, match="authorization: Bearer <token>") as refused:
        authenticate(TokenFileVerifier(path), header)
    assert TOKEN_A not in str(refused.value)
    assert authenticate(TokenFileVerifier(path), f"bearer  {TOKEN_A} ") is not None
    assert authenticate(None, header) is None


# JWT


@dataclass
class Issuer:
    """Signing keys of an identity provider the test plays, and its JWKS file."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    jwks: Path

    def token(self, alg: str = "RS256", kid: str | None = None, key: object = None, **claims: object) -> str:
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "platform-1", "exp": int(time.time()) + 300, **claims}
        payload = {name: value for name, value in payload.items() if value is not None}
        signing_key = key or (self.rsa_key if alg == "RS256" else self.ec_key)
        return jwt.encode(payload, signing_key, algorithm=alg, headers={"kid": kid or alg.lower()})


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rs256", "alg": "RS256"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "es256"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hs256", "alg": "HS256"},
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return Issuer(rsa_key, ec_key, path)


def test_jwts_signed_by_the_jwks_keys_are_accepted(issuer: Issuer) -> None:
    verifier = JwtVerifier(JwksFile(issuer.jwks), ISSUER, AUDIENCE)
    assert verifier.verify(issuer.token("RS256")) == "jwt:platform-1"
    assert verifier.verify(issuer.token("ES256", sub="platform-2")) == "jwt:platform-2"


def hmac_signed_with_the_public_key(issuer: Issuer) -> str:
    """The algorithm-confusion attack: HS256 with the RSA public key (which anyone has) as the secret."""
    secret = issuer.rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 300}
    parts = [_b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "kid": "rs256"}, claims)]
    signature = hmac.new(secret, ".".join(parts).encode(), hashlib.sha256).digest()
    return ".".join([*parts, _b64(signature)])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwts_are_refused_for_issuer_audience_expiry_and_signature(issuer: Issuer) -> None:
    verifier = JwtVerifier(JwksFile(issuer.jwks), ISSUER, AUDIENCE)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "issuer": issuer.token(iss="https://evil.example/"),
        "audience": issuer.token(aud="another-service"),
        "expired": issuer.token(exp=int(time.time()) - 3600),
        "required claim": issuer.token(exp=None),
        "signature": issuer.token(key=stranger),
        "key this server does not know": issuer.token(kid="unknown"),
        "not a valid JWT": hmac_signed_with_the_public_key(issuer),
        "not a JWT": "not-a-jwt-at-all",
    }
    for reason, token in refused.items():
        with pytest.raises(AuthError, match=reason) as error:
            verifier.verify(token)
        assert token not in str(error.value), reason


def test_unsigned_jwts_are_refused(issuer: Issuer) -> None:
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        JwtVerifier(JwksFile(issuer.jwks), ISSUER, AUDIENCE).verify(unsigned)


def test_jwks_rotation_is_picked_up(issuer: Issuer) -> None:
    verifier = JwtVerifier(JwksFile(issuer.jwks), ISSUER, AUDIENCE)
    new_key = ec.generate_private_key(ec.SECP256R1())
    token = issuer.token("ES256", kid="2026", key=new_key)
    with pytest.raises(AuthError):
        verifier.verify(token)
    entry = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(new_key.public_key())), "kid": "2026"}
    issuer.jwks.write_text(json.dumps({"keys": [entry]}))
    assert verifier.verify(token) == "jwt:platform-1"


# JWKS URL: a real identity provider endpoint on loopback that rotates its keys


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid}


class JwksEndpoint(BaseHTTPRequestHandler):
    """GET /jwks serves `keys` ({"keys": [...]}) and counts the fetches; `down` answers 503."""

    keys: ClassVar[list[dict]] = []
    fetches: ClassVar[int] = 0
    down: ClassVar[bool] = False

    def do_GET(self) -> None:
        type(self).fetches += 1
        body = json.dumps({"keys": self.keys}).encode()
        self.send_response(503 if self.down or self.path != "/jwks" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def jwks_url(issuer: Issuer) -> Iterator[str]:
    JwksEndpoint.keys = [public_jwk(issuer.rsa_key, "rs256")]
    JwksEndpoint.fetches, JwksEndpoint.down = 0, False
    server = ThreadingHTTPServer(("127.0.0.1", 0), JwksEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    server.shutdown()
    server.server_close()


def test_jwks_url_keys_are_cached_and_a_rotated_key_is_fetched(issuer: Issuer, jwks_url: str) -> None:
    verifier = JwtVerifier(JwksUrl(jwks_url, cooldown_s=0.5), ISSUER, AUDIENCE)
    for _ in range(3):
        assert verifier.verify(issuer.token("RS256")) == "jwt:platform-1"
    assert JwksEndpoint.fetches == 1, "the key set is fetched once, then served from the cache"
    rotated = ec.generate_private_key(ec.SECP256R1())
    JwksEndpoint.keys = [public_jwk(rotated, "2026")]
    time.sleep(0.6)
    assert verifier.verify(issuer.token("ES256", kid="2026", key=rotated)) == "jwt:platform-1"
    assert JwksEndpoint.fetches == 2, "a token naming a key the cache lacks makes one fetch"
    for kid in ("forged-1", "forged-2", "forged-3"):
        with pytest.raises(AuthError, match="key this server does not know"):
            verifier.verify(issuer.token("ES256", kid=kid, key=rotated))
    assert JwksEndpoint.fetches == 2, "unknown key ids within the cooldown fetch nothing"
    time.sleep(0.6)
    with pytest.raises(AuthError, match="key this server does not know"):
        verifier.verify(issuer.token("RS256"))
    assert JwksEndpoint.fetches == 3, "after the cooldown an unknown key id fetches again: the retired key is gone"


def test_jwks_url_refreshes_when_the_cache_expires_and_fails_closed_when_the_provider_is_down(
    issuer: Issuer, jwks_url: str
) -> None:
    verifier = JwtVerifier(JwksUrl(jwks_url, cache_s=0.3), ISSUER, AUDIENCE)
    token = issuer.token("RS256")
    verifier.verify(token)
    JwksEndpoint.down = True
    time.sleep(0.4)
    with pytest.raises(AuthError, match="cannot check tokens right now") as refused:
        verifier.verify(token)
    assert token not in str(refused.value)
    JwksEndpoint.down = False
    assert verifier.verify(token) == "jwt:platform-1"
    assert JwksEndpoint.fetches == 3


def test_jwks_url_refuses_keys_for_other_algorithms(issuer: Issuer, jwks_url: str) -> None:
    secret = b"a shared secret of 32 bytes: no!"
    JwksEndpoint.keys = [
        {"kty": "oct", "k": _b64(secret), "kid": "hs256", "alg": "HS256"},
        public_jwk(issuer.rsa_key, "rs"),
    ]
    verifier = JwtVerifier(JwksUrl(jwks_url), ISSUER, AUDIENCE)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60}
    forged = jwt.encode(claims, secret, "HS256", {"kid": "hs256"})
    with pytest.raises(AuthError, match="key this server does not know"):
        verifier.verify(forged)
    assert verifier.verify(issuer.token("RS256", kid="rs")) == "jwt:platform-1"


def test_an_unreachable_or_plain_http_jwks_url_stops_the_start(jwks_url: str) -> None:
    JwksEndpoint.down = True
    with pytest.raises(SettingsError, match="jwt_jwks_url"):
        JwksUrl(jwks_url)
    for url in ("http://id.example.org/jwks", "ftp://127.0.0.1/jwks", "jwks.json"):
        with pytest.raises(ValueError, match="not an https:// URL"):
            ServerSettings(jwt_jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    with pytest.raises(ValueError, match="choose one source of keys"):
        ServerSettings(jwt_jwks="k.json", jwt_jwks_url=jwks_url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)


def test_a_server_checks_jwts_against_a_jwks_url(issuer: Issuer, jwks_url: str, tmp_path: Path) -> None:
    with (tmp_path / "server.log").open("w") as log:
        server = start_local_server(
            "--device", "cpu", "--asr", "none", "--jwt-jwks-url", jwks_url, "--jwt-issuer", ISSUER,
            "--jwt-audience", AUDIENCE, output=log,
        )  # fmt: skip
        try:

            async def session(token: str) -> list[str]:
                client = ScreeningClient(server.grpc_target, token=token)
                return [m.WhichOneof("kind") async for m in client.stream_messages(_messages(START, SILENCE, END))]

            assert asyncio.run(session(issuer.token("RS256", kid="rs256"))) == ["accepted", "summary"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                asyncio.run(session(issuer.token("ES256", kid="es256")))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            server.stop()


async def _messages(*messages: pb.ClientMessage) -> AsyncIterator[pb.ClientMessage]:
    for message in messages:
        yield message


# The startup decision (settings only: nothing is bound)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_an_open_server_may_serve_loopback(host: str) -> None:
    assert verifier_for(ServerSettings(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "2001:db8::1", "screening.example.org"])
def test_an_open_server_refuses_any_other_address(host: str) -> None:
    with pytest.raises(SettingsError, match="--auth-tokens FILE") as refused:
        verifier_for(ServerSettings(host=host))
    assert "--auth none" in str(refused.value)


def test_auth_none_opens_any_address_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="depscreen.streamer.auth"):
        assert verifier_for(ServerSettings(host="0.0.0.0", auth="none")) is None
    assert any(r.levelno == logging.WARNING and "AUTHENTICATION IS OFF" in r.getMessage() for r in caplog.records)


def test_tokens_or_client_certificates_open_any_address(tmp_path: Path, issuer: Issuer) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, TOKEN_A)
    assert isinstance(verifier_for(ServerSettings(host="0.0.0.0", auth_tokens=str(path))), TokenFileVerifier)
    jwt_settings = ServerSettings(host="::", jwt_jwks=str(issuer.jwks), jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    assert isinstance(verifier_for(jwt_settings), JwtVerifier)
    mtls = ServerSettings(host="0.0.0.0", tls_cert="c.pem", tls_key="k.pem", tls_client_ca="ca.pem")
    assert verifier_for(mtls) is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth": "tokens"}, "needs auth_tokens"),
        ({"auth": "jwt", "jwt_jwks": "k.json"}, "needs all of jwt_jwks, jwt_issuer and jwt_audience"),
        ({"auth": "none", "auth_tokens": "t"}, "drop one"),
        ({"auth_tokens": "t", "jwt_jwks": "k.json"}, "choose one"),
        ({"jwt_issuer": ISSUER}, "set jwt_jwks too"),
        ({"auth": "open"}, "auth="),
        ({"tls_cert": "c.pem"}, "both tls_cert and tls_key"),
        ({"tls_client_ca": "ca.pem"}, "needs TLS itself"),
        ({"max_sessions_per_token": -2}, "must be -1"),
        ({"min_audio_speed": 2.0}, "outside 0-1"),
        ({"max_video_fps": 2.0}, "below video_fps"),
    ],
)
def test_inconsistent_security_settings_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerSettings(**values)


# A real server with a token file


@dataclass
class TokenServer:
    local: LocalServer
    tokens: Path
    log: Path


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    directory = tmp_path_factory.mktemp("auth")
    tokens, log_path = directory / "tokens", directory / "server.log"
    write_tokens(tokens, TOKEN_A, TOKEN_B)
    with log_path.open("w") as log:
        local = start_local_server(
            "--device", "cpu", "--asr", "none", "--auth-tokens", str(tokens), "--max-sessions-per-token", "2",
            "--state-store", f"sqlite://{directory / 'sessions.db'}", "--log-level", "DEBUG", output=log,
        )  # fmt: skip
    yield TokenServer(local, tokens, log_path)
    local.stop()
    log_text = log_path.read_text()
    for token in (TOKEN_A, TOKEN_B, TOKEN_C):
        assert token not in log_text, "a token reached the server's log"


async def short_session() -> AsyncIterator[pb.ClientMessage]:
    for message in (START, SILENCE, END):
        yield message


def run_session(server: TokenServer, token: str | None) -> list[str] | grpc.aio.AioRpcError:
    async def run() -> list[str] | grpc.aio.AioRpcError:
        client = ScreeningClient(server.local.grpc_target, token=token)
        try:
            return [m.WhichOneof("kind") async for m in client.stream_messages(short_session())]
        except grpc.aio.AioRpcError as error:
            return error

    return asyncio.run(run())


def test_grpc_streams_need_a_listed_token(token_server: TokenServer) -> None:
    assert run_session(token_server, TOKEN_A) == ["accepted", "summary"]
    for token in (None, TOKEN_C):
        refused = run_session(token_server, token)
        assert isinstance(refused, grpc.aio.AioRpcError), token
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token" in refused.details() and TOKEN_C not in refused.details()


def test_health_checking_needs_no_token(token_server: TokenServer) -> None:
    with grpc.insecure_channel(token_server.local.grpc_target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_running_server_follows_edits_of_its_token_file(token_server: TokenServer) -> None:
    write_tokens(token_server.tokens, TOKEN_A, TOKEN_B, TOKEN_C)
    assert run_session(token_server, TOKEN_C) == ["accepted", "summary"]
    write_tokens(token_server.tokens, TOKEN_A, TOKEN_B)
    refused = run_session(token_server, TOKEN_C)
    assert isinstance(refused, grpc.aio.AioRpcError) and refused.code() == grpc.StatusCode.UNAUTHENTICATED


def test_sessions_per_token_are_limited(token_server: TokenServer) -> None:
    async def hold(opened: asyncio.Event, release: asyncio.Event) -> AsyncIterator[pb.ClientMessage]:
        yield START
        yield SILENCE
        opened.set()
        await release.wait()

    async def scenario() -> tuple[grpc.aio.AioRpcError | None, list[str]]:
        release = asyncio.Event()
        opened = [asyncio.Event(), asyncio.Event()]
        target = token_server.local.grpc_target
        holders = [
            asyncio.ensure_future(_drain(ScreeningClient(target, token=TOKEN_A).stream_messages(hold(o, release))))
            for o in opened
        ]
        await asyncio.gather(*(o.wait() for o in opened))
        await asyncio.sleep(0.3)
        refused = None
        try:
            await _drain(ScreeningClient(target, token=TOKEN_A).stream_messages(short_session()))
        except grpc.aio.AioRpcError as error:
            refused = error
        other = [
            m.WhichOneof("kind") async for m in ScreeningClient(target, token=TOKEN_B).stream_messages(short_session())
        ]
        release.set()
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        return refused, other

    refused, other = asyncio.run(scenario())
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 2 concurrent sessions" in refused.details()
    assert other == ["accepted", "summary"], "another token has its own allowance"
    deadline = time.monotonic() + 20
    while run_session(token_server, TOKEN_A) != ["accepted", "summary"]:
        assert time.monotonic() < deadline, "the token's sessions were not given back"
        time.sleep(0.2)


def test_a_resume_token_opens_nothing_for_another_token(token_server: TokenServer) -> None:
    async def left_without_end() -> AsyncIterator[pb.ClientMessage]:
        yield START
        yield SILENCE

    async def resume(token: str, resume_token: str) -> AsyncIterator[pb.ClientMessage]:
        start = pb.ClientMessage()
        start.CopyFrom(START)
        start.start.resume_token = resume_token
        for message in (start, SILENCE, END):
            yield message

    async def scenario() -> tuple[str, grpc.aio.AioRpcError | None, list[pb.ServerMessage]]:
        target = token_server.local.grpc_target
        first = [m async for m in ScreeningClient(target, token=TOKEN_A).stream_messages(left_without_end())]
        resume_token = first[0].accepted.resume_token
        refused = None
        try:
            await _drain(ScreeningClient(target, token=TOKEN_B).stream_messages(resume(TOKEN_B, resume_token)))
        except grpc.aio.AioRpcError as error:
            refused = error
        own = [m async for m in ScreeningClient(target, token=TOKEN_A).stream_messages(resume(TOKEN_A, resume_token))]
        return resume_token, refused, own

    resume_token, refused, own = asyncio.run(scenario())
    assert resume_token, "a server with a state store gives a resume token"
    assert refused is not None and refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "issued to another caller" in refused.details() and resume_token not in refused.details()
    assert [m.WhichOneof("kind") for m in own] == ["accepted", "summary"]
    assert own[0].accepted.session_id, "the token's own principal resumes the session"


async def _drain(stream: AsyncIterator[pb.ServerMessage]) -> None:
    async for _ in stream:
        pass


def whip_post(server: TokenServer, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(f"{server.local.http_url}/whip", data=b"v=0", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_whip_uses_the_same_tokens(token_server: TokenServer) -> None:
    text = {"Content-Type": "text/plain"}
    for headers in (text, {**text, "Authorization": f"Bearer {TOKEN_C}"}):
        status, body = whip_post(token_server, headers)
        assert status == 401 and "token" in body and TOKEN_C not in body
    assert whip_post(token_server, {**text, "Authorization": f"Bearer {TOKEN_A}"})[0] == 415, "past the token check"
