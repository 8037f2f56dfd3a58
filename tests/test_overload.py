"""Overload steps in-process: with the CPU backlog above `asr_skip_backlog`, sentences go without ASR and each
one (not each audio chunk) is counted in `depscreen_shed_asr_total`."""

from __future__ import annotations

from prometheus_client import generate_latest

from depscreen.localserver import read_counter
from depscreen.streamer.interview import ScoredSentence
from depscreen.streamer.server import Server

from .fakes import fake_parts
from .test_session_time import JFK, START, audio, on_server
from .virtual_clock import VirtualClock


def test_sentences_closed_under_overload_get_no_asr_and_are_counted_once_each() -> None:
    async def scenario(server: Server) -> tuple[list[str], float]:
        session = await server.hub.open(START)
        server.hub.in_flight += 100  # as if 100 CPU tasks waited: far above asr_skip_backlog
        try:
            sentences = []
            for chunk in audio(JFK):
                sentences += [r for r in [x async for x in session.handle(chunk)] if isinstance(r, ScoredSentence)]
            sentences += [r for r in [x async for x in session.finish()] if isinstance(r, ScoredSentence)]
        finally:
            server.hub.in_flight -= 100
            session.close()
        shed = read_counter(generate_latest(server.metrics.registry).decode(), "depscreen_shed_asr_total")
        return [s.features.transcript_source for s in sentences], shed

    recogniser_says = fake_parts(["words"] * 50)  # a sentence that reached it would have text
    sources, shed = on_server(VirtualClock(), scenario, recogniser_says, asr="tiny.en", max_speed=0.0)
    assert len(sources) >= 2 and set(sources) == {""}, "no sentence was transcribed"
    assert shed == len(sources), f"{shed} counted for {len(sources)} sentences (one per sentence, not per chunk)"
