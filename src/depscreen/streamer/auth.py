"""Who may stream: bearer tokens from a file (reloaded on change) or JWTs checked against a JWKS file or an
identity provider's JWKS URL (cached, re-fetched when it expires or a token names a key it lacks).

Both verifiers implement `Verifier`: `verify(token)` returns the principal the token stands for (a stable,
non-secret name used for per-token session limits; never the token) or raises AuthError with a message that
says what to do and never repeats the token. `verifier_for(settings)` makes the startup decision: which
verifier, or none, and it refuses to run open on an address other than loopback unless told `auth=none`.
Verifying may fetch keys over the network (a JWKS URL), so transports call it off the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import jwt

from depscreen.streamer.settings import ServerSettings, SettingsError, is_loopback

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_TOKEN_CHARS = 16
"""Shortest token a token file may hold: anything shorter could be guessed."""
JWT_ALGORITHMS = ("RS256", "ES256")
"""Signatures a JWT may carry; keys for others in the JWKS file are ignored (no `none`, no shared secrets)."""
JWT_LEEWAY_S = 30
"""Clock difference tolerated when checking `exp` and `nbf`."""
JWKS_CACHE_S = 300.0
"""How long a key set fetched from `jwt_jwks_url` is used before it is fetched again."""
JWKS_COOLDOWN_S = 30.0
"""Shortest time between two fetches caused by tokens that name a key id the cached set lacks (key rotation):
a stream of forged key ids cannot make the server hammer the identity provider."""
JWKS_TIMEOUT_S = 5.0
"""Longest wait for the identity provider's JWKS URL to answer."""
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class AuthError(Exception):
    """A request without an acceptable bearer token; the message tells the client what to do."""


class Verifier(Protocol):
    """Checks a bearer token."""

    def verify(self, token: str) -> str:
        """The principal `token` stands for; AuthError when it is refused."""
        ...


def authenticate(verifier: Verifier | None, authorization: str | None) -> str | None:
    """The principal of an `Authorization: Bearer <token>` value, None on an open server; AuthError otherwise."""
    if verifier is None:
        return None
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(
            "this server needs a bearer token: send `authorization: Bearer <token>` "
            "(depscreen stream --token TOKEN, or DEPSCREEN_TOKEN)"
        )
    return verifier.verify(token)


def token_fingerprint(token: str) -> str:
    """A short, non-reversible name for a token (its SHA-256 prefix)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def principal_fingerprint(principal: str | None) -> str | None:
    """A short, non-secret name for a principal, for logs and traces: a token's fingerprint as it is, a JWT
    subject (which may be a person's identifier) hashed the same way; None on an open server."""
    if principal is None:
        return None
    kind, _, name = principal.partition(":")
    return name if kind == "token" else token_fingerprint(principal)


def certificate_principal(common_name: str | None) -> str | None:
    """The principal of a client certificate under mTLS without bearer tokens: its subject's common name (the
    CA the operator trusts decides who carries which), so each client is its own tenant; None without one."""
    return f"cert:{common_name}" if common_name else None


class WatchedFile(Generic[T]):
    """A file's parsed content, parsed again whenever the file changes (checked on every `current()`).

    A file that cannot be read or parsed after a change yields None until it is fixed: the verifiers then
    refuse every token (fail closed) rather than keep trusting what the operator meant to replace.
    """

    def __init__(self, path: Path, parse: Callable[[bytes], T]) -> None:
        self.path = path
        self._parse = parse
        self._signature: tuple[int, ...] | None = None
        self._problem = ""
        self._lock = threading.Lock()  # verifiers run in several threads at once
        self._value: T | None = self._load()
        if self._value is None:
            raise SettingsError(self._problem)

    def current(self) -> T | None:
        with self._lock:
            try:
                signature = self._stat()
            except OSError:
                signature = None
            if signature != self._signature:
                self._value = self._load()
                if self._value is None:
                    log.error("%s: %s; refusing every token until it is fixed", self.path, self._problem)
                else:
                    log.info("%s changed: reloaded", self.path)
            return self._value

    def _stat(self) -> tuple[int, ...]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _load(self) -> T | None:
        try:
            self._signature = self._stat()
            return self._parse(self.path.read_bytes())
        except OSError as error:
            self._signature = None
            self._problem = f"cannot read {self.path}: {error.strerror}"
        except ValueError as error:
            self._problem = f"{self.path}: {error}"
        return None


def parse_token_file(data: bytes) -> dict[bytes, str]:
    """SHA-256 digest of each token to its principal; one token per line, `#` comments and blank lines skipped."""
    digests = {}
    for number, line in enumerate(data.decode("utf-8", errors="strict").splitlines(), start=1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ValueError(
                f"line {number} is not a usable token (at least {MIN_TOKEN_CHARS} characters, no spaces): "
                f"make one with {MAKE_TOKEN}"
            )
        digests[hashlib.sha256(token.encode()).digest()] = "token:" + token_fingerprint(token)
    if not digests:
        raise ValueError(f"holds no token: add one per line (make one with {MAKE_TOKEN})")
    return digests


class TokenFileVerifier:
    """Tokens listed in a file, one per line; edits to the file take effect with the next request."""

    def __init__(self, path: Path) -> None:
        self._file = WatchedFile(path, parse_token_file)

    def verify(self, token: str) -> str:
        digests = self._file.current() or {}
        presented = hashlib.sha256(token.encode()).digest()
        principal = None
        for digest, name in digests.items():  # every entry is compared: the time taken says nothing
            if hmac.compare_digest(presented, digest):
                principal = name
        if principal is None:
            raise AuthError("the bearer token was refused: ask the server's operator for a valid token")
        return principal


@dataclass(frozen=True)
class Jwks:
    """The signing keys of a JWKS file usable with JWT_ALGORITHMS, by key id."""

    keys: dict[str, jwt.PyJWK]

    @classmethod
    def parse(cls, data: bytes) -> Jwks:
        try:
            document = json.loads(data)
        except json.JSONDecodeError as error:
            raise ValueError(f"is not JSON: {error}") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError('is not a JWKS document: expected {"keys": [...]}')
        keys = {}
        for index, entry in enumerate(document["keys"]):
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, AttributeError, TypeError, ValueError) as error:
                log.warning("JWKS key %d skipped: %s", index, error)
                continue
            if key.algorithm_name not in JWT_ALGORITHMS:
                log.warning("JWKS key %d skipped: %s is not one of %s", index, key.algorithm_name, JWT_ALGORITHMS)
                continue
            keys[key.key_id or ""] = key
        if not keys:
            raise ValueError(f"holds no public key for {' or '.join(JWT_ALGORITHMS)}")
        return cls(keys)

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        """The key a token's header names; a token without `kid` may use the only key of a one-key set."""
        if kid:
            return self.keys.get(kid)
        return next(iter(self.keys.values())) if len(self.keys) == 1 else None


class KeysUnavailable(Exception):
    """The signing keys cannot be read right now (a broken key file, an identity provider that does not answer)."""


class KeySource(Protocol):
    """Where a JwtVerifier finds the key a token names."""

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        """The key with id `kid`, None if there is none; KeysUnavailable when the keys cannot be read now."""
        ...


class JwksFile:
    """Keys from a JWKS file, re-read when it changes (rotation by replacing the file)."""

    def __init__(self, path: Path) -> None:
        self._file = WatchedFile(path, Jwks.parse)

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        jwks = self._file.current()
        if jwks is None:
            raise KeysUnavailable("its key file is broken")
        return jwks.key_for(kid)


class JwksUrl:
    """Keys an identity provider publishes at its JWKS URL, through PyJWKClient: the set is cached for
    JWKS_CACHE_S, and fetched again sooner (at most once per JWKS_COOLDOWN_S) when a token names a key id it
    lacks, so rotated keys are picked up without a restart. Tokens must name their key (`kid`)."""

    def __init__(self, url: str, cache_s: float = JWKS_CACHE_S, cooldown_s: float = JWKS_COOLDOWN_S) -> None:
        self._client = jwt.PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=cache_s,
            timeout=JWKS_TIMEOUT_S,
            cooldown_duration=cooldown_s,
            headers={"User-Agent": "depscreen"},
        )
        try:
            self._client.get_jwk_set()
        except jwt.PyJWTError as error:
            raise SettingsError(
                f"jwt_jwks_url {url}: {error}; check the URL, and that this server can reach it and it serves a "
                '{"keys": [...]} document'
            ) from None

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        if not kid:
            return None
        try:
            return self._client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as error:
            log.warning("the JWKS URL could not be fetched: %s", error)
            raise KeysUnavailable("its identity provider's key set cannot be fetched") from None
        except jwt.PyJWTError:
            return None


JWT_REFUSALS: dict[type[Exception], str] = {
    jwt.ExpiredSignatureError: "the token has expired: get a new one from your identity provider",
    jwt.ImmatureSignatureError: "the token is not valid yet (nbf/iat in the future): check the clocks",
    jwt.InvalidIssuerError: "the token's issuer (iss) is not the one this server trusts",
    jwt.InvalidAudienceError: "the token's audience (aud) is not this server",
    jwt.MissingRequiredClaimError: "the token lacks a required claim (exp, iss and aud are required)",
    jwt.InvalidSignatureError: "the token's signature does not verify against the server's keys",
}


class JwtVerifier:
    """JWTs signed with a key from `keys` (RS256 or ES256), with `iss`, `aud` and `exp` checked."""

    def __init__(self, keys: KeySource, issuer: str, audience: str) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience

    def verify(self, token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("the bearer token is not a JWT: ask your identity provider for one") from None
        try:
            key = self._keys.key_for(header.get("kid"))
        except KeysUnavailable as error:
            raise AuthError(f"the server cannot check tokens right now ({error}): retry later") from None
        if key is None or key.algorithm_name not in JWT_ALGORITHMS:
            raise AuthError("the token was signed with a key this server does not know (kid): check its issuer")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=JWT_LEEWAY_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.InvalidTokenError as error:
            reason = next((text for kind, text in JWT_REFUSALS.items() if isinstance(error, kind)), None)
            raise AuthError(reason or "the bearer token is not a valid JWT for this server") from None
        subject = claims.get("sub")
        return f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt:" + token_fingerprint(token)


def verifier_for(settings: ServerSettings) -> Verifier | None:
    """The verifier the settings ask for, None for an open server; SettingsError when the server must not start.

    An open server (no tokens, no JWKS) is allowed on loopback, behind TLS client certificates
    (`tls_client_ca`), or when `auth=none` says so explicitly (logged as a warning at every start).
    """
    mode = settings.auth_mode
    if mode == "tokens":
        verifier: Verifier = TokenFileVerifier(Path(settings.auth_tokens))
        log.info("bearer tokens required (token file %s, reloaded on change)", settings.auth_tokens)
        return verifier
    if mode == "jwt":
        keys = JwksUrl(settings.jwt_jwks_url) if settings.jwt_jwks_url else JwksFile(Path(settings.jwt_jwks))
        verifier = JwtVerifier(keys, settings.jwt_issuer, settings.jwt_audience)
        log.info("bearer JWTs required (issuer %s, audience %s)", settings.jwt_issuer, settings.jwt_audience)
        return verifier
    if mode == "none":
        log.warning(
            "AUTHENTICATION IS OFF (auth=none): anyone who reaches %s can stream and read screening results; "
            "set auth_tokens or jwt_jwks unless a proxy in front authenticates every request",
            settings.host,
        )
        return None
    if settings.tls_client_ca:
        log.info("no bearer tokens: clients are authenticated by TLS client certificates only")
        return None
    if not is_loopback(settings.host):
        raise SettingsError(
            f"refusing to serve {settings.host} without authentication: set --auth-tokens FILE, or --jwt-jwks "
            "FILE or --jwt-jwks-url URL with --jwt-issuer and --jwt-audience, or --tls-client-ca FILE; or pass "
            "--auth none if a proxy in front authenticates every request; or bind 127.0.0.1"
        )
    log.info("no authentication: serving loopback (%s) only", settings.host)
    return None
