"""IcePolicy: which local addresses a WebRTC peer gathers on, and which remote ICE candidates get checks.

Local side: aiortc gathers host candidates on every interface (aioice's `get_host_addresses`), with no option
to choose them (aioice issue 2). `gathering_on(addresses)` narrows that for the peer connections whose local
description is set inside it: aioice's module function is wrapped once, and the wrapper reads the addresses from
a context variable (the gathering tasks aiortc starts inherit it), so other peers in the process, clients
included, gather as before. `stray_host_candidates` checks every answer afterwards, so an aioice that stopped
calling the function fails closed (the answer is refused) instead of listing internal addresses. Tested with
aioice 0.13; `pyproject.toml` bounds the version.

Remote side: candidates an offer or a trickle names are screened before aiortc sees them. Public (globally
routable) addresses pass; private, loopback, link-local and other non-global ones pass only inside the
operator's `webrtc_allow_networks`; mDNS names (`*.local`, resolvable only on the server's own link) never
do. A dropped candidate gets no connectivity check. A peer that sends the server a check itself (ICE's
peer-reflexive discovery, which needs the session's ICE password) is still answered, as ICE requires.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import aioice.ice
from aiortc.sdp import candidate_from_sdp

from depscreen.streamer.settings import IpNetwork, ServerSettings, SettingsError

CANDIDATE = "a=candidate:"

_gather_on: ContextVar[tuple[str, ...] | None] = ContextVar("depscreen_ice_gather_on", default=None)
_every_host_address = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's host addresses, or the ones `gathering_on` names (of the IP versions aioice asks for)."""
    chosen = _gather_on.get()
    if chosen is None:
        return _every_host_address(use_ipv4, use_ipv6)
    versions = {4} if use_ipv4 else set()
    versions |= {6} if use_ipv6 else set()
    return [address for address in chosen if ipaddress.ip_address(address).version in versions]


aioice.ice.get_host_addresses = _host_addresses


@contextmanager
def gathering_on(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Peer connections gathering inside this block bind host candidates on `addresses` only (None: every
    interface, as aioice does)."""
    token = _gather_on.set(addresses)
    try:
        yield
    finally:
        _gather_on.reset(token)


@dataclass(frozen=True)
class IcePolicy:
    """The operator's WebRTC exposure: `local` addresses to gather on (None: every interface) and the non-public
    `networks` whose remote candidates may be checked."""

    local: tuple[str, ...] | None
    networks: tuple[IpNetwork, ...]

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> IcePolicy:
        return cls(settings.webrtc_local_addresses, settings.webrtc_networks)

    def check_local(self) -> None:
        """SettingsError unless every local address can be bound on this machine."""
        for address in self.local or ():
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.bind((address, 0))
            except OSError as error:
                raise SettingsError(
                    f"webrtc_host names {address}, which this machine cannot bind ({error.strerror}): name an "
                    "address of one of its interfaces"
                ) from None

    def allows_remote(self, host: str) -> bool:
        """Whether a remote candidate at `host` (an address, or an mDNS name) may get connectivity checks."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # an mDNS name: resolving it would query the server's own link
        return address.is_global or any(address in network for network in self.networks)

    def screened(self, sdp: str) -> tuple[str, int]:
        """`sdp` (an offer or a trickle fragment) without the candidate lines this policy refuses, and how many
        it dropped; line endings and every other line are kept as they are."""
        lines = sdp.splitlines(keepends=True)
        kept = [line for line in lines if not is_candidate_line(line) or self._allows_line(line)]
        return "".join(kept), len(lines) - len(kept)

    def stray_host_candidates(self, sdp: str) -> list[str]:
        """The addresses of the host candidates in `sdp` (the server's answer) outside `local`."""
        if self.local is None:
            return []
        stray = []
        for line in sdp.splitlines():
            if is_candidate_line(line):
                candidate = candidate_from_sdp(line.strip()[len(CANDIDATE) :])
                if candidate.type == "host" and candidate.ip not in self.local:
                    stray.append(candidate.ip)
        return stray

    def _allows_line(self, line: str) -> bool:
        try:
            candidate = candidate_from_sdp(line.strip()[len(CANDIDATE) :])
        except (ValueError, IndexError):
            return True  # left for the parser, whose error names the line
        return self.allows_remote(candidate.ip)


def is_candidate_line(line: str) -> bool:
    """An SDP `a=candidate:` line (of an offer, an answer or a trickle fragment), leading space allowed."""
    return line.lstrip().startswith(CANDIDATE)
