"""WebRTC's ICE exposure: the answer lists host candidates on `webrtc_host` only, remote candidates outside public
addresses and `webrtc_allow_networks` get no connectivity checks, and a session still works within them (the
network tests run in a namespace the test creates: aiortc leaves loopback out of ICE)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator

import aioice
import aioice.ice
import pytest
from aiortc.sdp import candidate_from_sdp

from depscreen.clients.whip import WhipClient
from depscreen.localserver import read_counter
from depscreen.streamer import ice
from depscreen.streamer.ice import IcePolicy, gathering_on
from depscreen.streamer.settings import ServerSettings, SettingsError
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES
from .netns import NetworkNamespace, namespaces_available
from .test_webrtc import InProcessServer, http, offer, post_offer

SERVER_ADDRESS = "10.213.0.1"
OTHER_ADDRESS = "10.213.0.2"
"""The namespace's two veth addresses: the server gathers on the first only, and allows checks to it only."""
DROPPED = "depscreen_dropped_ice_candidates_total"
CHECK_WAIT_S = 3.0
"""How long a trap waits for connectivity checks: aioice starts one every 20 ms once the offer is applied."""
TRICKLE = {"Content-Type": "application/trickle-ice-sdpfrag"}
ICE_TRAPS = {
    "offer_allowed": SERVER_ADDRESS,
    "offer_other": OTHER_ADDRESS,
    "trickle_allowed": SERVER_ADDRESS,
    "trickle_other": OTHER_ADDRESS,
}
"""Where the trap sockets listen: each gets one candidate, in the offer or in a trickle."""


def candidate_hosts(sdp: str) -> list[str]:
    return [candidate_from_sdp(line[len("a=candidate:") :]).ip for line in sdp.splitlines() if "a=candidate:" in line]


def candidate(address: str, port: int, foundation: int = 1) -> str:
    return f"a=candidate:{foundation} 1 udp 2122260223 {address} {port} typ host\r\n"


# Settings and the policy, no network.


def test_webrtc_host_defaults_to_a_specific_host_else_every_interface() -> None:
    assert ServerSettings().webrtc_local_addresses is None  # 127.0.0.1: loopback is no ICE address
    assert ServerSettings(host="0.0.0.0", auth="none").webrtc_local_addresses is None
    assert ServerSettings(host="203.0.113.7", auth="none").webrtc_local_addresses == ("203.0.113.7",)
    chosen = ServerSettings(webrtc_host="198.51.100.2, [2001:db8::7]").webrtc_local_addresses
    assert chosen == ("198.51.100.2", "2001:db8::7")
    assert ServerSettings().webrtc_networks == ()
    assert ServerSettings(webrtc_allow_networks="10.0.0.0/8, fd00::/8").webrtc_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"webrtc_host": "eth0"}, "webrtc_host entry 'eth0' is not an IP address"),
        ({"webrtc_host": "0.0.0.0"}, "leave webrtc_host empty"),
        ({"webrtc_allow_networks": "10.0.0.1/8"}, "webrtc_allow_networks entry '10.0.0.1/8' is not a CIDR range"),
        ({"webrtc_allow_networks": "private"}, "is not a CIDR range"),
    ],
)
def test_bad_exposure_settings_name_the_setting(values: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ServerSettings(**values)


def test_only_public_addresses_are_checked_unless_a_network_is_allowed() -> None:
    default = IcePolicy(None, ())
    assert default.allows_remote("8.8.8.8") and default.allows_remote("2606:4700::1111")
    for address in ("10.1.2.3", "192.168.1.5", "172.16.0.1", "127.0.0.1", "169.254.1.1", "100.64.0.1", "fe80::1"):
        assert not default.allows_remote(address), address
    assert not default.allows_remote("0b371c22-0756-f647-8e84-64e8dad498c2.local")
    lan = IcePolicy(None, (ipaddress.ip_network("10.0.0.0/8"),))
    assert lan.allows_remote("10.1.2.3") and lan.allows_remote("8.8.8.8") and not lan.allows_remote("192.168.1.5")


def test_screening_drops_refused_candidate_lines_and_keeps_every_other_line() -> None:
    offer_sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        + candidate("192.0.2.1", 5000)  # documentation range: not global
        + candidate("8.8.4.4", 5001, 2)
        + "a=candidate:3 1 udp 2122260223 4e1c.local 5002 typ host\r\n"
        + candidate("10.9.8.7", 5003, 4)
        + "a=end-of-candidates\r\n"
    )
    kept, dropped = IcePolicy(None, (ipaddress.ip_network("10.9.0.0/16"),)).screened(offer_sdp)
    assert dropped == 2
    assert candidate_hosts(kept) == ["8.8.4.4", "10.9.8.7"]
    assert kept.startswith("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n")
    assert kept.endswith("a=end-of-candidates\r\n")


def test_gathering_binds_only_the_chosen_addresses_inside_the_block() -> None:
    """The adapter over aioice: loopback, which aioice never gathers on by itself, is the only candidate when
    chosen; outside the block aioice's own choice is back."""
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)

    async def gathered(addresses: tuple[str, ...] | None) -> list[str]:
        connection = aioice.Connection(ice_controlling=False)
        with gathering_on(addresses):
            await connection.gather_candidates()
        hosts = [c.host for c in connection.local_candidates]
        await connection.close()
        return hosts

    assert asyncio.run(gathered(("127.0.0.1", "::1"))) in (["127.0.0.1", "::1"], ["127.0.0.1"])
    assert asyncio.run(gathered(("127.0.0.1",))) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses is ice._host_addresses


def test_an_answer_with_another_host_address_is_found_and_a_missing_address_refused_at_start() -> None:
    policy = IcePolicy(("203.0.113.7",), ())
    answer = candidate("203.0.113.7", 4000) + candidate("10.0.0.5", 4001, 2)
    answer += "a=candidate:3 1 udp 1694498815 198.51.100.9 4002 typ srflx raddr 203.0.113.7 rport 4000\r\n"
    assert policy.stray_host_candidates(answer) == ["10.0.0.5"]
    assert IcePolicy(None, ()).stray_host_candidates(answer) == []
    IcePolicy(("127.0.0.1",), ()).check_local()
    with pytest.raises(SettingsError, match=r"webrtc_host names 192\.0\.2\.77, which this machine cannot bind"):
        IcePolicy(("192.0.2.77",), ()).check_local()


# A server in a namespace: gathers on SERVER_ADDRESS, checks SERVER_ADDRESS only.

UNAVAILABLE = namespaces_available()
in_namespace = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


@pytest.fixture(scope="module")
def guarded() -> Iterator[InProcessServer]:
    settings = ServerSettings(
        grpc_port=0,
        http_port=0,
        device="cpu",
        asr="none",
        max_sessions=2,
        stall_timeout_s=5,
        webrtc_host=SERVER_ADDRESS,
        webrtc_allow_networks=f"{SERVER_ADDRESS}/32",
    )
    with NetworkNamespace() as namespace, InProcessServer.running(namespace, settings) as server:
        yield server


class Trap(asyncio.DatagramProtocol):
    """A UDP socket that records the STUN binding requests (connectivity checks) it receives."""

    def __init__(self) -> None:
        self.checks = 0
        self.port = 0

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if data[:2] == b"\x00\x01" and data[4:8] == b"\x21\x12\xa4\x42":
            self.checks += 1


async def trap(address: str) -> tuple[Trap, asyncio.DatagramTransport]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(Trap, local_addr=(address, 0))
    protocol.port = transport.get_extra_info("sockname")[1]
    return protocol, transport


@in_namespace
def test_the_answer_lists_host_candidates_on_webrtc_host_only(guarded: InProcessServer) -> None:
    async def scenario() -> tuple[str, tuple]:
        pc, sdp = await offer()
        try:
            created = await post_offer(guarded.url, sdp)
            await http("DELETE", guarded.url.removesuffix("/whip") + created[1]["Location"])
            return sdp, created
        finally:
            await pc.close()

    client_offer, (status, _, answer) = guarded.call(scenario())
    assert {SERVER_ADDRESS, OTHER_ADDRESS} <= set(candidate_hosts(client_offer)), "aioice gathers on both here"
    assert status == 201
    assert set(candidate_hosts(answer)) == {SERVER_ADDRESS}


@in_namespace
def test_candidates_outside_the_allowed_networks_get_no_checks(guarded: InProcessServer) -> None:
    """Four traps: in the offer and in a trickle, one on the allowed address and one on the other; only the
    allowed ones are checked, and the two others are counted as dropped."""

    async def scenario() -> dict[str, int]:
        traps = {name: await trap(address) for name, address in ICE_TRAPS.items()}
        pc, sdp = await offer()
        lines = [line for line in sdp.split("\r\n") if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
        mid = next(i for i, line in enumerate(lines) if line.startswith("a=mid:"))
        for foundation, name in enumerate(("offer_allowed", "offer_other"), start=1):
            lines.insert(mid + 1, candidate(ICE_TRAPS[name], traps[name][0].port, foundation).strip())
        try:
            status, headers, _ = await post_offer(guarded.url, "\r\n".join(lines))
            assert status == 201
            resource = guarded.url.removesuffix("/whip") + headers["Location"]
            ufrag = next(line for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))
            fragment = f"{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            for foundation, name in enumerate(("trickle_allowed", "trickle_other"), start=3):
                fragment += candidate(ICE_TRAPS[name], traps[name][0].port, foundation)
            assert (await http("PATCH", resource, fragment, TRICKLE))[0] == 204
            await asyncio.sleep(CHECK_WAIT_S)
            await http("DELETE", resource)
            return {name: protocol.checks for name, (protocol, _) in traps.items()}
        finally:
            for _, transport in traps.values():
                transport.close()
            await pc.close()

    before = read_counter(guarded.server.metrics.exposition().decode(), DROPPED)
    checks = guarded.call(scenario())
    assert checks["offer_other"] == checks["trickle_other"] == 0
    assert checks["offer_allowed"] > 0 and checks["trickle_allowed"] > 0, checks
    assert read_counter(guarded.server.metrics.exposition().decode(), DROPPED) - before == 2


@in_namespace
def test_a_session_streams_within_the_allowed_addresses(guarded: InProcessServer) -> None:
    messages = guarded.call(_stream(guarded.url))
    kinds = [message.WhichOneof("kind") for message in messages]
    assert kinds[0] == "accepted" and kinds[-1] == "summary" and "sentence" in kinds


async def _stream(url: str) -> list[pb.ServerMessage]:
    return [message async for message in WhipClient(url).stream_file(FIXTURES / "jfk.flac", video=False)]


@in_namespace
def test_an_answer_that_would_expose_another_address_is_refused(
    guarded: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If aioice stopped asking get_host_addresses (here: the adapter bypassed), the answer would list
    OTHER_ADDRESS: the server refuses it with 500 and frees the session instead of sending it."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", ice._every_host_address)

    async def scenario() -> tuple:
        pc, sdp = await offer()
        try:
            return await post_offer(guarded.url, sdp)
        finally:
            await pc.close()

    status, _, text = guarded.call(scenario())
    assert status == 500 and "host candidates outside webrtc_host" in text
    deadline = time.monotonic() + 10
    while guarded.server.hub.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert guarded.server.hub.active == 0
