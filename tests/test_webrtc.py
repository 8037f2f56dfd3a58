"""WebRTC ingest by WHIP inside a network namespace the tests create: HTTP answers and errors, real speech
through the Python WHIP client, the talking-head clip through `depscreen stream --webrtc`, and lifecycle
(peers that never connect, vanish or end) with nothing left behind: slots, peer connections and tasks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest
import torch
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import SessionDescription

from depscreen.clients.whip import WhipClient, WhipError, ice_servers_from_links
from depscreen.localserver import LocalServer, start_local_server
from depscreen.negotiationbench import with_candidates
from depscreen.streamer.auth import TokenFileVerifier
from depscreen.streamer.server import Server
from depscreen.streamer.settings import ServerSettings
from depscreen.streamer.webrtc import RtpClock
from depscreen.streamer.whip import WhipEndpoint, count_candidates, link_headers, trickled_candidates
from depscreen.v1 import screening_pb2 as pb
from depscreen.webrtc_bench import decode_cost

from .conftest import FIXTURES, SAMPLE
from .netns import PEER_FLAGS, PEER_NETWORK, NamespaceLoop, NetworkNamespace, idle_health, namespaces_available
from .test_tls import https_context, make_pki

UNAVAILABLE = namespaces_available()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

STALL_TIMEOUT_S = 3
IDLE_DEADLINE_S = 60.0
"""How long a test waits for the server to free everything (stall timeout + finish + hang-up grace, with room)."""


@dataclass
class InProcessServer:
    """A Server on an event loop inside the namespace, so the test can look at its sessions and tasks."""

    loop: NamespaceLoop
    server: Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/whip"

    @classmethod
    @contextlib.contextmanager
    def running(cls, namespace: NetworkNamespace, settings: ServerSettings) -> Iterator[InProcessServer]:
        """A started server with `settings` on a loop inside `namespace`, stopped on exit (torch's thread
        count, which the server sets to one, restored)."""
        torch_threads = torch.get_num_threads()
        with NamespaceLoop(namespace) as loop:
            server = Server(settings)
            loop.call(server.start())
            try:
                yield cls(loop, server)
            finally:
                loop.call(server.stop())
        torch.set_num_threads(torch_threads)

    def call(self, coroutine: object, timeout_s: float = 300.0) -> object:
        return self.loop.call(coroutine, timeout_s)  # type: ignore[arg-type]

    def tasks(self) -> set[asyncio.Task]:
        async def others() -> set[asyncio.Task]:
            return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}

        return self.call(others())  # type: ignore[return-value]

    def wait_idle(self, baseline: set[asyncio.Task]) -> None:
        """Wait until no session, peer connection or task beyond `baseline` is left; fail naming what is."""
        deadline = time.monotonic() + IDLE_DEADLINE_S
        while True:
            hub = self.server.hub
            whip = next(t for t in self.server.transports if isinstance(t, WhipEndpoint))
            extra = {task.get_name() for task in self.tasks() - baseline}
            if hub.active == 0 and whip.peers == 0 and not extra:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"left behind: {hub.active} sessions, {whip.peers} peers, tasks {sorted(extra)}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def namespace() -> Iterator[NetworkNamespace]:
    with NetworkNamespace() as ns:
        yield ns


@pytest.fixture(scope="module")
def inproc(namespace: NetworkNamespace) -> Iterator[InProcessServer]:
    """Two sessions at most, a short stall timeout, no ASR (these tests are about the transport)."""
    settings = ServerSettings(
        grpc_port=0,
        http_port=0,
        device="cpu",
        asr="none",
        max_sessions=2,
        stall_timeout_s=STALL_TIMEOUT_S,
        webrtc_allow_networks=PEER_NETWORK,
    )
    with InProcessServer.running(namespace, settings) as server:
        yield server


@pytest.fixture(scope="module")
def asr_server(namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A `depscreen serve` process inside the namespace, Whisper ASR on (as in production)."""
    log_path = tmp_path_factory.mktemp("webrtc-server") / "server.log"
    with log_path.open("w") as log:
        local = namespace.run(start_local_server, "--device", "cpu", *PEER_FLAGS, output=log)
        yield local
        local.stop()


@contextlib.asynccontextmanager
async def token_checked_whip(inproc: InProcessServer, tokens: Path) -> AsyncIterator[str]:
    """A WHIP endpoint on the in-process server's hub that checks the bearer tokens in `tokens`; yields its
    base URL (`http://127.0.0.1:PORT`)."""
    app = web.Application()
    WhipEndpoint(inproc.server.hub, verifier=TokenFileVerifier(tokens)).add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


async def http(method: str, url: str, body: str = "", headers: dict[str, str] | None = None) -> tuple:
    async with aiohttp.ClientSession() as client, client.request(method, url, data=body, headers=headers) as reply:
        return reply.status, reply.headers, await reply.text()


async def offer(*, audio: bool = True, channel: bool = True) -> tuple[RTCPeerConnection, str]:
    """A peer connection with a real local offer (candidates gathered) that is never completed."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if channel:
        pc.createDataChannel("depscreen")
    if audio:
        pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post_offer(url: str, sdp: str, content_type: str = "application/sdp") -> tuple:
    return await http("POST", url, sdp, {"Content-Type": content_type})


async def stream(url: str, path: object, *, video: bool) -> list[pb.ServerMessage]:
    return [message async for message in WhipClient(url).stream_file(path, video=video)]


def kinds(messages: list[pb.ServerMessage]) -> list[str]:
    return [message.WhichOneof("kind") for message in messages]


def test_audio_only_peer_gets_every_update_then_everything_is_freed(inproc: InProcessServer) -> None:
    baseline = inproc.tasks()
    messages = inproc.call(stream(inproc.url, FIXTURES / "jfk.flac", video=False))
    assert kinds(messages)[0] == "accepted" and kinds(messages)[-1] == "summary"
    sentences = [m.sentence for m in messages if m.WhichOneof("kind") == "sentence"]
    summary = messages[-1].summary
    assert len(sentences) >= 2 and summary.sentences == len(sentences)
    assert [s.index for s in sentences] == list(range(len(sentences)))
    assert 10.0 < summary.audio_seconds < 12.5  # the 11 s recording, Opus-framed
    for sentence in sentences:
        assert 0.0 <= sentence.estimate.probability <= 1.0
        modalities = {m.modality: m for m in sentence.estimate.modalities}
        assert modalities[pb.AUDIO].available and not modalities[pb.VIDEO].available
    assert summary.estimate.probability == pytest.approx(sentences[-1].estimate.probability)
    inproc.wait_idle(baseline)


def test_offers_it_cannot_serve_get_the_right_status_and_a_reason(inproc: InProcessServer) -> None:
    async def scenario() -> dict[str, tuple]:
        no_channel_pc, no_channel = await offer(channel=False)
        no_audio_pc, no_audio = await offer(audio=False)
        good_pc, good = await offer()
        try:
            return {
                "not sdp": await post_offer(inproc.url, good, "text/plain"),
                "garbage": await post_offer(inproc.url, "hello"),
                "no channel": await post_offer(inproc.url, no_channel),
                "no audio": await post_offer(inproc.url, no_audio),
                "bad asr": await post_offer(inproc.url + "?asr=maybe", good),
                "long id": await post_offer(inproc.url + "?session_id=" + "x" * 200, good),
                "unknown": await http("DELETE", inproc.url + "/no-such-session"),
            }
        finally:
            for pc in (no_channel_pc, no_audio_pc, good_pc):
                await pc.close()

    baseline = inproc.tasks()
    replies = inproc.call(scenario())
    expected = {
        "not sdp": (415, "Content-Type: application/sdp"),
        "garbage": (400, "no m= section"),
        "no channel": (400, "labelled 'depscreen'"),
        "no audio": (400, "sends no audio"),
        "bad asr": (400, "asr='maybe'"),
        "long id": (400, "session_id has 200 characters"),
        "unknown": (404, "no such WHIP session"),
    }
    for case, (status, reason) in expected.items():
        assert replies[case][0] == status, case
        assert reason in replies[case][2], (case, replies[case][2])
    inproc.wait_idle(baseline)


def test_peers_that_never_connect_hold_slots_until_the_stall_timeout_then_503_lifts(
    inproc: InProcessServer,
) -> None:
    async def fill_then_overflow() -> tuple[list[tuple], tuple, list[RTCPeerConnection]]:
        peers, accepted = [], []
        for _ in range(2):
            pc, sdp = await offer()
            peers.append(pc)
            accepted.append(await post_offer(inproc.url, sdp))
        pc, sdp = await offer()
        peers.append(pc)
        return accepted, await post_offer(inproc.url, sdp), peers

    baseline = inproc.tasks()
    accepted, overflow, peers = inproc.call(fill_then_overflow())
    for status, headers, answer in accepted:
        assert status == 201 and headers["Content-Type"].startswith("application/sdp")
        assert headers["Location"].startswith("/whip/") and "a=fingerprint:" in answer
    assert overflow[0] == 503 and "limit of 2 concurrent sessions" in overflow[2]
    assert int(overflow[1]["Retry-After"]) > 0
    inproc.wait_idle(baseline)  # the stall timeout ended both: nothing arrived from them

    async def close_all() -> None:
        for pc in peers:
            await pc.close()

    inproc.call(close_all())


def test_trickle_patch_takes_candidates_and_refuses_ice_restarts(inproc: InProcessServer) -> None:
    async def scenario() -> dict[str, tuple]:
        pc, sdp = await offer()
        try:
            status, headers, _ = await post_offer(inproc.url, sdp)
            assert status == 201
            resource = inproc.url.removesuffix("/whip") + headers["Location"]
            ufrag = next(line for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))
            fragment = f"{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            candidate = "a=candidate:1 1 udp 2122260223 10.213.0.2 61764 typ host\r\n"
            trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
            return {
                "candidate": await http("PATCH", resource, fragment + candidate, trickle),
                "end": await http("PATCH", resource, fragment + "a=end-of-candidates\r\n", trickle),
                "restart": await http("PATCH", resource, "a=ice-ufrag:new\r\n", {**trickle, "If-Match": "*"}),
                "not a fragment": await http("PATCH", resource, fragment, {"Content-Type": "text/plain"}),
                "delete": await http("DELETE", resource),
                "after delete": await http("PATCH", resource, fragment + candidate, trickle),
            }
        finally:
            await pc.close()

    baseline = inproc.tasks()
    replies = inproc.call(scenario())
    assert [replies[case][0] for case in replies] == [204, 204, 422, 415, 200, 404]
    assert "ICE restarts are not supported" in replies["restart"][2]
    inproc.wait_idle(baseline)


def test_a_peer_that_vanishes_mid_interview_is_finished_and_freed(
    inproc: InProcessServer, namespace: NetworkNamespace
) -> None:
    baseline = inproc.tasks()
    command = [sys.executable, "-m", "depscreen.cli", "stream", str(FIXTURES / "jfk.flac"), "--webrtc", inproc.url]
    client = namespace.run(subprocess.Popen, [*command, "--json", "--no-video"], stdout=subprocess.PIPE)
    try:
        kinds_seen = []
        for line in client.stdout:
            kinds_seen.append(next(iter(json.loads(line))))
            if kinds_seen[-1] == "sentence":
                break
        assert kinds_seen[0] == "accepted" and kinds_seen[-1] == "sentence"
    finally:
        client.send_signal(signal.SIGKILL)  # no DELETE, no DTLS close: the peer just stops
        client.wait()
    inproc.wait_idle(baseline)


def test_bearer_token_is_required_when_a_token_check_is_configured(inproc: InProcessServer, tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-whip-token-0123\n")

    async def scenario() -> dict[str, tuple]:
        async with token_checked_whip(inproc, tokens) as base:
            url, text = f"{base}/whip", {"Content-Type": "text/plain"}
            return {
                "none": await http("POST", url, "", text),
                "wrong": await http("POST", url, "", {**text, "Authorization": "Bearer nope"}),
                "right": await http("POST", url, "", {**text, "Authorization": "Bearer s3cret-whip-token-0123"}),
            }

    replies = inproc.call(scenario())
    assert replies["none"][0] == replies["wrong"][0] == 401
    assert replies["none"][1]["WWW-Authenticate"].startswith("Bearer")
    assert replies["right"][0] == 415  # past the token check, on to the body


def test_only_the_caller_that_opened_a_session_may_trickle_to_it_or_end_it(inproc: InProcessServer, tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tenant-a-token-0123456789\ntenant-b-token-0123456789\n")
    tenant_a = {"Authorization": "Bearer tenant-a-token-0123456789"}
    tenant_b = {"Authorization": "Bearer tenant-b-token-0123456789"}
    baseline = inproc.tasks()

    async def scenario() -> dict[str, tuple]:
        pc, sdp = await offer()
        try:
            async with token_checked_whip(inproc, tokens) as base:
                created = await http("POST", f"{base}/whip", sdp, {**tenant_a, "Content-Type": "application/sdp"})
                resource = f"{base}{created[1]['Location']}"
                trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
                return {
                    "created": created,
                    "other_patch": await http("PATCH", resource, "a=end-of-candidates\r\n", {**tenant_b, **trickle}),
                    "other_delete": await http("DELETE", resource, "", tenant_b),
                    "unknown_delete": await http("DELETE", f"{base}/whip/0123456789abcdef", "", tenant_b),
                    "own_delete": await http("DELETE", resource, "", tenant_a),
                }
        finally:
            await pc.close()

    replies = inproc.call(scenario())
    assert replies["created"][0] == 201
    assert replies["other_patch"][0] == replies["other_delete"][0] == 404
    assert replies["other_delete"][2] == replies["unknown_delete"][2], "another caller learns nothing"
    assert replies["own_delete"][0] == 200
    inproc.wait_idle(baseline)


def test_negotiation_beyond_its_limits_is_refused_before_the_webrtc_stack_parses_it(
    inproc: InProcessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offer of 12,000 candidates once held the event loop for 20 s inside aiortc: the size and candidate
    limits refuse it (and a trickle that would go past them) without any SDP parsing, /healthz answering."""
    parsed = []
    parse = SessionDescription.parse
    monkeypatch.setattr(SessionDescription, "parse", lambda sdp: parsed.append(len(sdp)) or parse(sdp))
    settings = inproc.server.settings

    async def scenario() -> dict[str, tuple]:
        pc, sdp = await offer()
        parsed.clear()  # the test's own peer parsed its offer
        health = inproc.url.removesuffix("/whip") + "/healthz"
        try:
            huge, healthz = await asyncio.gather(
                post_offer(inproc.url, with_candidates(sdp, 12_000)), http("GET", health)
            )
            many = with_candidates(sdp, settings.max_ice_candidates + 1)
            sections = sdp + "".join(f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:x{i}\r\n" for i in range(8))
            replies = {
                "huge": huge,
                "healthz": healthz,
                "many": await post_offer(inproc.url, many),
                "sections": await post_offer(inproc.url, sections),
            }
            assert not parsed, "a refused offer was parsed"
            room = settings.max_ice_candidates - count_candidates(sdp) - 2  # two left for the trickle
            replies["good"] = await post_offer(inproc.url, with_candidates(sdp, room))
            assert replies["good"][0] == 201, replies["good"]
            resource = inproc.url.removesuffix("/whip") + replies["good"][1]["Location"]
            ufrag = next(line for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))
            fragment = f"{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
            candidate = "a=candidate:1 1 udp 2122260223 10.213.0.2 61764 typ host\r\n"
            trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
            replies["trickle ok"] = await http("PATCH", resource, fragment + candidate * 2, trickle)
            replies["trickle over"] = await http("PATCH", resource, fragment + candidate, trickle)
            replies["trickle huge"] = await http("PATCH", resource, fragment + candidate * 12_000, trickle)
            await http("DELETE", resource)
            return replies
        finally:
            await pc.close()

    baseline = inproc.tasks()
    active = inproc.server.hub.active
    replies = inproc.call(scenario())
    assert replies["huge"][0] == 413 and f"max_sdp_bytes={settings.max_sdp_bytes}" in replies["huge"][2]
    assert replies["healthz"][0] == 200
    for case in ("many", "trickle over"):
        assert replies[case][0] == 400, case
        assert f"max_ice_candidates={settings.max_ice_candidates}" in replies[case][2], case
    assert replies["sections"][0] == 400 and "at most 8 are accepted" in replies["sections"][2]
    assert replies["trickle ok"][0] == 204
    assert replies["trickle huge"][0] == 413
    assert inproc.server.hub.active == active
    inproc.wait_idle(baseline)


def test_stun_and_turn_servers_are_advertised_as_link_headers() -> None:
    settings = ServerSettings(
        ice_servers="stun:stun.example.org:3478, turn:turn.example.org:3478?transport=udp",
        turn_username="user",
        turn_credential="pass",
    )
    assert link_headers(settings) == [
        '<stun:stun.example.org:3478>; rel="ice-server"',
        '<turn:turn.example.org:3478?transport=udp>; rel="ice-server"; username="user"; credential="pass"; '
        'credential-type="password"',
    ]
    assert link_headers(ServerSettings()) == []
    with pytest.raises(ValueError, match="set turn_username and turn_credential"):
        ServerSettings(ice_servers="turn:turn.example.org")
    with pytest.raises(ValueError, match="not a stun:, stuns:, turn: or turns: URL"):
        ServerSettings(ice_servers="http://example.org")


def test_trickle_fragments_are_parsed_per_media_section() -> None:
    fragment = (
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n"
        "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw\r\n"
        "a=end-of-candidates\r\n"
    )
    first, second, end = trickled_candidates(fragment)
    assert (first.ip, first.port, first.sdpMid, first.sdpMLineIndex) == ("192.0.2.1", 61764, "0", 0)
    assert (second.ip, second.priority) == ("198.51.100.2", 2122194687)
    assert end is None


def test_rtp_timestamps_unwrap_across_the_32_bit_boundary() -> None:
    clock = RtpClock()
    near_end = 2**32 - 3000
    assert [clock.unwrap(t) for t in (near_end, 2**32 - 1, 2000, 5000)] == [
        near_end,
        2**32 - 1,
        2**32 + 2000,
        2**32 + 5000,
    ]
    assert clock.unwrap(2**32 - 10) == 2**32 - 10  # a late frame from before the wrap keeps its place
    assert clock.unwrap(8000) == 2**32 + 8000


def test_decode_cost_times_opus_for_audio_only_media() -> None:
    cost = decode_cost(FIXTURES / "jfk.flac")
    assert 10.5 < cost.media_s < 11.5
    assert cost.opus_decode_ms_per_s > 0
    assert cost.vp8_decode_ms_per_s == cost.rgb_convert_ms_per_s == 0
    assert cost.frame_size == "no video"


def test_unreachable_endpoint_is_a_whip_error(namespace: NetworkNamespace) -> None:
    async def scenario() -> None:
        async for _ in WhipClient("http://127.0.0.1:9/whip").stream_file(FIXTURES / "jfk.flac"):
            pass

    with pytest.raises(WhipError, match="cannot reach"):
        namespace.run(asyncio.run, scenario())


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.serial
def test_talking_head_clip_streams_through_depscreen_stream_webrtc(
    asr_server: LocalServer, namespace: NetworkNamespace
) -> None:
    url = f"{asr_server.http_url}/whip"
    command = [sys.executable, "-m", "depscreen.cli", "stream", str(SAMPLE), "--webrtc", url, "--json"]
    done = namespace.run(subprocess.run, command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    assert next(iter(messages[0])) == "accepted" and next(iter(messages[-1])) == "summary"
    assert messages[0]["accepted"]["model"]["model_id"]
    sentences = [m["sentence"] for m in messages[1:-1]]
    summary = messages[-1]["summary"]
    assert len(sentences) >= 8 and summary["sentences"] == len(sentences)
    assert 39.0 < summary["audio_seconds"] < 43.0  # the 41 s clip
    for sentence in sentences:
        assert {"start_ms", "end_ms", "transcript", "transcript_source", "estimate", "latency_ms"} <= set(sentence)
        assert "replay_from_sample" not in sentence, "a WebRTC session is not resumable: nothing to keep"
        assert {"probability", "evidence", "modalities", "symptoms"} <= set(sentence["estimate"])
        assert sentence["transcript_source"] == "asr" and sentence["transcript"].strip()
    with_face = [s for s in sentences if _face_quality(s["estimate"]) > 0]
    assert len(with_face) >= len(sentences) - 1, "the talking head's face should feed nearly every sentence"
    assert summary.get("dropped_video_frames", 0) == 0
    health = namespace.run(idle_health, asr_server.http_url, IDLE_DEADLINE_S)
    assert health["sessions_active"] == 0


def _face_quality(estimate: dict) -> float:
    """The sentence's face-found share, 0 when video did not feed it (not its weight: the default model's
    estimate is a stack of heads that reads no video, so every video weight is 0)."""
    video = next(m for m in estimate["modalities"] if m["modality"] == "VIDEO")
    return video.get("quality", 0.0) if video.get("available") else 0.0


@pytest.mark.slow
def test_depscreen_stream_webrtc_reaches_a_tls_server_with_its_ca(
    namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pki = make_pki(tmp_path_factory.mktemp("whip-pki"))
    flags = ("--device", "cpu", "--asr", "none", *PEER_FLAGS)
    flags += ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    server = namespace.run(start_local_server, *flags, http_ssl=https_context(pki))
    try:
        url = f"{server.http_url}/whip"
        assert url.startswith("https://")
        base = [sys.executable, "-m", "depscreen.cli", "stream", str(FIXTURES / "jfk.flac"), "--webrtc", url, "--json"]
        done = namespace.run(subprocess.run, [*base, "--tls-ca", str(pki.ca)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        messages = [json.loads(line) for line in done.stdout.splitlines()]
        assert next(iter(messages[0])) == "accepted" and next(iter(messages[-1])) == "summary"
        assert messages[-1]["summary"]["sentences"] >= 1
        untrusted = namespace.run(subprocess.run, base, capture_output=True, text=True)
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    finally:
        server.stop()
    plaintext = subprocess.run(
        [*base[:-3], "--webrtc", "http://127.0.0.1:9/whip", "--tls-ca", str(pki.ca)], capture_output=True, text=True
    )
    assert plaintext.returncode == 2 and "https://" in plaintext.stderr


def test_the_whip_client_learns_the_ice_servers_an_answer_advertises() -> None:
    settings = ServerSettings(
        ice_servers="stun:stun.example.org:3478, turn:turn.example.org:3478?transport=udp",
        turn_username="user",
        turn_credential="pa;ss",
    )
    links = link_headers(settings)

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Location", "/whip/abc")
            for link in [*links, '</whip/abc/events>; rel="urn:ietf:params:whep:ext:core:server-sent-events"']:
                self.send_header("Link", link)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"answer")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = WhipClient(f"http://127.0.0.1:{server.server_port}/whip", ice_servers=[RTCIceServer("stun:own:3478")])
        for _ in range(2):  # a second answer with the same links adds nothing
            resource, answer = asyncio.run(client._offer("offer", "", "en", False))
    finally:
        server.shutdown()
    assert (resource, answer) == (f"http://127.0.0.1:{server.server_port}/whip/abc", "answer")
    assert [(s.urls, s.username, s.credential) for s in client.ice_servers] == [
        ("stun:own:3478", None, None),
        ("stun:stun.example.org:3478", None, None),
        ("turn:turn.example.org:3478?transport=udp", "user", "pa;ss"),
    ]
    assert ice_servers_from_links(['<stun:a:1>; rel="ice-server", <stun:b:2>; rel=ice-server']) == [
        RTCIceServer("stun:a:1"),
        RTCIceServer("stun:b:2"),
    ]
