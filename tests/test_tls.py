"""TLS and mTLS on both ports, with a CA and certificates the test makes: a TLS client that trusts the CA
streams, a plaintext client and (with mTLS) a client without an accepted certificate are refused."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from depscreen.clients.session import ScreeningClient
from depscreen.localserver import LocalServer, start_local_server
from depscreen.streamer import tls
from depscreen.streamer.settings import ServerSettings, SettingsError
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES

START = pb.ClientMessage(start=pb.SessionStart(audio=pb.AudioFormat(sample_rate_hz=16_000, channels=1)))
SESSION = [START, pb.ClientMessage(audio=pb.AudioChunk(data=bytes(3200))), pb.ClientMessage(end=pb.SessionEnd())]


@dataclass
class Pki:
    """PEM files: a CA, a server certificate for localhost/127.0.0.1/::1, and client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    hosts: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(
            x509.SubjectAlternativeName([*names, x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    ca_key, other_ca_key = _key(), _key()
    ca = _certificate("depscreen test CA", ca_key, None)
    other_ca = _certificate("someone else's CA", other_ca_key, None)
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _certificate("localhost", server_key, (ca, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=True)
    client = _certificate("platform-1", client_key, (ca, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _certificate("mallory", stranger_key, (other_ca, other_ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        ca_path,
        *_write(directory, "server", server, server_key),
        *_write(directory, "client", client, client_key),
        *_write(directory, "stranger", stranger, stranger_key),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def https_context(pki: Pki, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def _serve(pki: Pki, directory: Path, *extra: str, mtls: bool) -> LocalServer:
    flags = ["--device", "cpu", "--asr", "none", "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    flags += extra
    if mtls:
        flags += ["--tls-client-ca", str(pki.ca)]
    with (directory / "server.log").open("w") as log:
        return start_local_server(*flags, output=log, http_ssl=https_context(pki, client_cert=mtls))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = _serve(pki, tmp_path_factory.mktemp("tls"), mtls=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    server = _serve(pki, tmp_path_factory.mktemp("mtls"), mtls=True)
    yield server
    server.stop()


def stream(client: ScreeningClient) -> list[str] | grpc.aio.AioRpcError:
    return asyncio.run(stream_async(client))


async def stream_async(client: ScreeningClient) -> list[str] | grpc.aio.AioRpcError:
    async def messages():
        for message in SESSION:
            yield message

    try:
        return [reply.WhichOneof("kind") async for reply in client.stream_messages(messages())]
    except grpc.aio.AioRpcError as error:
        return error


def refused(result: list[str] | grpc.aio.AioRpcError) -> bool:
    return isinstance(result, grpc.aio.AioRpcError) and result.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_streams_with_the_ca_and_refuses_plaintext(tls_server: LocalServer, pki: Pki) -> None:
    assert stream(ScreeningClient(tls_server.grpc_target, tls_ca=pki.ca)) == ["accepted", "summary"]
    assert refused(stream(ScreeningClient(tls_server.grpc_target)))
    assert refused(stream(ScreeningClient(tls_server.grpc_target, tls_ca=pki.stranger_cert))), "untrusted server"
    assert json.loads(tls_server.get("/healthz"))["status"] == "ok"
    plain = LocalServer(tls_server.process, tls_server.host, tls_server.grpc_port, tls_server.http_port)
    with pytest.raises(OSError):
        plain.get("/healthz")


def test_the_command_line_client_streams_over_tls(tls_server: LocalServer, pki: Pki) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "depscreen.cli", "stream", str(FIXTURES / "jfk.flac"), "--server",
         tls_server.grpc_target, "--tls-ca", str(pki.ca), "--speed", "0", "--json", "--no-asr"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "summary" in json.loads(result.stdout.splitlines()[-1])


def test_mtls_needs_a_client_certificate_from_the_ca(mtls_server: LocalServer, pki: Pki) -> None:
    target = mtls_server.grpc_target
    trusted = ScreeningClient(target, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    assert stream(trusted) == ["accepted", "summary"]
    assert refused(stream(ScreeningClient(target, tls_ca=pki.ca)))
    assert refused(stream(ScreeningClient(target, tls_ca=pki.ca, tls_cert=pki.stranger_cert, tls_key=pki.stranger_key)))
    assert refused(stream(ScreeningClient(target)))
    assert json.loads(mtls_server.get("/healthz"))["status"] == "ok"
    no_cert = LocalServer(mtls_server.process, mtls_server.host, mtls_server.grpc_port, mtls_server.http_port)
    no_cert.http_ssl = https_context(pki)
    with pytest.raises(OSError):
        no_cert.get("/healthz")


def test_an_mtls_client_is_its_own_principal(pki: Pki, tmp_path: Path) -> None:
    """Without bearer tokens each client certificate (by its subject's common name) is a principal: per-tenant
    limits apply to it, and no other certificate holder can reach its sessions."""
    server = _serve(pki, tmp_path, "--max-sessions-per-token", "1", mtls=True)
    client = ScreeningClient(server.grpc_target, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)

    async def scenario() -> grpc.aio.AioRpcError:
        opened, release = asyncio.Event(), asyncio.Event()

        async def hold() -> AsyncIterator[pb.ClientMessage]:
            yield SESSION[0]
            opened.set()
            await release.wait()

        async def drain() -> None:
            async for _ in client.stream_messages(hold()):
                pass

        holder = asyncio.ensure_future(drain())
        await opened.wait()
        await asyncio.sleep(0.5)
        try:
            return await stream_async(client)
        finally:
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)

    try:
        second = asyncio.run(scenario())
    finally:
        server.stop()
    assert isinstance(second, grpc.aio.AioRpcError) and second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 1 concurrent sessions" in second.details()


def test_unusable_tls_files_stop_the_start(tmp_path: Path, pki: Pki) -> None:
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    for cert, message in ((tmp_path / "missing.pem", "cannot read"), (not_pem, "not a PEM file")):
        settings = ServerSettings(tls_cert=str(cert), tls_key=str(pki.server_key))
        with pytest.raises(SettingsError, match=message):
            tls.grpc_credentials(settings)
        with pytest.raises(SettingsError, match=message):
            tls.http_context(settings)
    mismatched = ServerSettings(tls_cert=str(pki.server_cert), tls_key=str(pki.client_key))
    with pytest.raises(SettingsError, match="cannot be used"):
        tls.http_context(mismatched)
    assert tls.grpc_credentials(ServerSettings()) is None and tls.http_context(ServerSettings()) is None


HEALTHCHECK = Path(__file__).resolve().parents[1] / "deploy" / "docker" / "healthcheck.py"


def container_healthcheck(server: LocalServer, **env: str | Path) -> subprocess.CompletedProcess:
    """The image's health check as Docker runs it: only DEPSCREEN_* variables to go on."""
    variables = {"PATH": "/usr/bin:/bin", "DEPSCREEN_HTTP_PORT": str(server.http_port)}
    variables.update({f"DEPSCREEN_{name.upper()}": str(value) for name, value in env.items()})
    command = [sys.executable, str(HEALTHCHECK)]
    return subprocess.run(command, env=variables, capture_output=True, text=True, timeout=30)


def test_the_container_health_check_speaks_tls_to_a_tls_server(tls_server: LocalServer, pki: Pki) -> None:
    assert container_healthcheck(tls_server, tls_cert=pki.server_cert).returncode == 0
    assert container_healthcheck(tls_server, tls_cert=pki.server_cert, healthcheck_ca=pki.ca).returncode == 0
    wrong_ca = container_healthcheck(tls_server, tls_cert=pki.server_cert, healthcheck_ca=pki.client_cert)
    assert wrong_ca.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.stderr
    assert container_healthcheck(tls_server).returncode == 1, "plain http to a TLS port is not healthy"


def test_the_container_health_check_presents_its_client_certificate_under_mtls(
    mtls_server: LocalServer, pki: Pki
) -> None:
    tls = {"tls_cert": pki.server_cert, "tls_client_ca": pki.ca}
    missing = container_healthcheck(mtls_server, **tls)
    assert missing.returncode == 1 and "DEPSCREEN_HEALTHCHECK_CERT" in missing.stderr
    own = container_healthcheck(mtls_server, **tls, healthcheck_cert=pki.client_cert, healthcheck_key=pki.client_key)
    assert own.returncode == 0, own.stderr
    stranger = container_healthcheck(
        mtls_server, **tls, healthcheck_cert=pki.stranger_cert, healthcheck_key=pki.stranger_key
    )
    assert stranger.returncode == 1
