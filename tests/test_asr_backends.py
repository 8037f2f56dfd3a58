"""The speech-to-text seam: a second recogniser written against `Transcriber` plugs in by name alone, and `--asr`
values are checked against the backends there are."""

from __future__ import annotations

import numpy as np
import pytest

from depscreen.engine.features.asr import (
    NO_TRANSCRIPT,
    AsrBackend,
    AsrCapacity,
    AsrObserver,
    Transcript,
    primary_language,
)
from depscreen.engine.features.asr_backends import BACKENDS, asr_choice
from depscreen.engine.media import SAMPLE_RATE
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.train.cache import extractor_version
from depscreen.streamer.interview import Opening, ScoredSentence
from depscreen.streamer.server import Server
from depscreen.streamer.settings import ServerSettings

from .test_session_time import JFK, audio, on_server
from .virtual_clock import VirtualClock


class TallyTranscriber:
    """A trivial recogniser: English only, each sentence's text is how many tenths of a second it lasted."""

    name = "tally"

    def __init__(self, models: tuple[str, ...]) -> None:
        self.models = models

    def model_for(self, language: str) -> str:
        return "tally-en" if primary_language(language) == "en" else ""

    def preload(self, language: str) -> None:
        """Nothing to load."""

    def transcribe(self, pcm: np.ndarray, language: str, said_before: str = "", recheck: bool = True) -> Transcript:
        if not self.model_for(language) or not len(pcm):
            return NO_TRANSCRIPT
        return Transcript(f"tally {len(pcm) * 10 // SAMPLE_RATE}", 1.0)


def _build(models: tuple[str, ...], capacity: AsrCapacity, observer: AsrObserver | None) -> TallyTranscriber:
    return TallyTranscriber(models)


TALLY = AsrBackend(name="tally", models=("tenths",), build=_build, cache_key=lambda models: {"models": list(models)})


@pytest.fixture
def with_tally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, TALLY.name, TALLY)


@pytest.mark.usefixtures("with_tally")
def test_a_second_backend_plugs_in_by_name_and_transcribes_a_live_session() -> None:
    async def scenario(server: Server) -> tuple[str, list[ScoredSentence]]:
        session = await server.hub.open(Opening(sample_rate_hz=16_000, channels=1, language="en"))
        try:
            sentences = [u for chunk in audio(JFK) async for u in session.handle(chunk)]
            sentences += [u async for u in session.finish()]
            return session.welcome().asr_model, [s for s in sentences if isinstance(s, ScoredSentence)]
        finally:
            session.close()

    model, sentences = on_server(VirtualClock(), scenario, asr="tally", model=str(DEMO_MODEL), max_speed=0.0)
    assert model == "tally-en"
    assert sentences and all(s.features.transcript_source == "asr" for s in sentences)
    for sentence in sentences:  # the text of the whole sentence or of its pieces joined: tallies only
        words = sentence.features.transcript.split()
        assert words[::2] == ["tally"] * (len(words) // 2) and all(w.isdigit() for w in words[1::2]), words


@pytest.mark.usefixtures("with_tally")
def test_asr_values_name_a_backend_or_its_models_and_the_cache_key_names_the_backend() -> None:
    assert asr_choice("tally") == (TALLY, ("tenths",)) and asr_choice("tenths") == (TALLY, ("tenths",))
    assert asr_choice("none") == (None, ())
    assert ServerSettings(asr="tally").asr == "tally"
    with pytest.raises(ValueError, match=r"asr='tiny.en,tenths' is not whisper, tally, none, or .*tenths \(tally\)"):
        ServerSettings(asr="tiny.en,tenths")
    assert '"backend": "tally"' in extractor_version("m", asr="tally")
    assert extractor_version("m", asr="tally") != extractor_version("m", asr="whisper")
