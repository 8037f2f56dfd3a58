"""Speaker normalisation: what it removes, what it keeps, its first sentence, its state, and old checkpoints."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from depscreen.engine.features.audio import PITCH, VOICED_ONLY
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.model import speaker
from depscreen.engine.model.screening import ModelConfig
from depscreen.engine.model.state import RecurrentState
from depscreen.engine.runtime.checkpoint import DEFAULT_MODEL, DEMO_MODEL, load_checkpoint, save_checkpoint
from depscreen.engine.runtime.screener import Screener, collate
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions
from depscreen.engine.train.trainer import TrainSettings, prefix_logits, train_model

from .conftest import with_speaker_normalisation

CPU = torch.device("cpu")
SETTINGS = SyntheticSettings(min_sentences=6, max_sentences=6, min_frames=80, max_frames=120)


@pytest.fixture(scope="module")
def demo() -> Screener:
    return Screener.from_checkpoint(DEMO_MODEL, "cpu")


@pytest.fixture(scope="module")
def normalised(demo: Screener) -> Screener:
    return Screener(with_speaker_normalisation(demo.model), demo.facts, CPU)


def voiced_session(seed: int) -> list[SentenceFeatures]:
    """Synthetic sentences whose pitch column is a plausible voice (voiced frames at 30 +- 3 semitones,
    unvoiced frames 0, as openSMILE writes them)."""
    rng = np.random.default_rng(seed)
    sentences = generate_sessions(1, FeatureStats.unit(), seed=seed, settings=SETTINGS)[0].sentences
    voiced = []
    for s in sentences:
        audio = s.audio.copy()
        audio[:, PITCH] = np.where(rng.random(len(audio)) < 0.7, 30 + 3 * rng.standard_normal(len(audio)), 0.0)
        voiced.append(replace(s, audio=audio.astype(np.float32)))
    return voiced


def another_speaker(sentences: list[SentenceFeatures], shift: float) -> list[SentenceFeatures]:
    """The same sentences in a voice `shift` higher on every descriptor, in voiced frames and (for the
    descriptors defined there) unvoiced ones: same changes, another speaker."""
    other = []
    for s in sentences:
        audio = s.audio.copy()
        voiced = audio[:, PITCH] > 0
        always = ~np.array(VOICED_ONLY)
        audio[voiced] += shift
        audio[np.ix_(~voiced, always)] += shift
        other.append(replace(s, audio=audio))
    return other


def audio_tokens(screener: Screener, sentences: list[SentenceFeatures]) -> torch.Tensor:
    with torch.no_grad():
        batch = collate(sentences, screener.model.config, CPU)
        return screener.model.encode_sessions(batch, [len(sentences)]).tokens[:, 0]


def test_a_higher_voice_saying_the_same_is_heard_the_same(demo: Screener, normalised: Screener) -> None:
    sentences = voiced_session(1)
    higher = another_speaker(sentences, 4.0)
    torch.testing.assert_close(audio_tokens(normalised, higher), audio_tokens(normalised, sentences))
    assert not torch.allclose(audio_tokens(demo, higher), audio_tokens(demo, sentences), atol=1e-3), (
        "without speaker normalisation the voice's level reaches the encoder"
    )


def test_changes_within_a_session_still_reach_the_encoder(normalised: Screener) -> None:
    sentences = voiced_session(2)
    louder_later = sentences[:3] + another_speaker(sentences[3:], 2.0)
    assert not torch.allclose(audio_tokens(normalised, louder_later)[3:], audio_tokens(normalised, sentences)[3:])


def test_a_first_sentence_without_voice_passes_unchanged(demo: Screener, normalised: Screener) -> None:
    first = voiced_session(3)[0]
    whisper = replace(first, audio=np.where(np.arange(first.audio.shape[1]) == PITCH, 0.0, first.audio))
    torch.testing.assert_close(audio_tokens(normalised, [whisper]), audio_tokens(demo, [whisper]), rtol=0, atol=0)


def test_a_first_short_sentence_is_not_stretched_to_unit_variance() -> None:
    standardised = torch.full((1, 5, len(VOICED_ONLY)), 2.0)
    standardised[0, :, :] += torch.linspace(-0.01, 0.01, 5).unsqueeze(-1)
    voiced = torch.ones(1, 5, dtype=torch.bool)
    moments = speaker.sentence_moments(standardised, voiced)
    out = speaker.normalise(standardised, voiced, moments, prior_frames=300.0)
    assert float(out.abs().max()) < 0.02, "five frames a hundredth apart stay a hundredth apart"
    assert float(out.mean().abs()) < 1e-6, "the session's own mean is taken out at once"


def test_unvoiced_frames_keep_their_undefined_value_for_every_speaker() -> None:
    standardised = torch.randn(1, 8, len(VOICED_ONLY))
    voiced = torch.tensor([[True, False] * 4])
    moments = speaker.sentence_moments(standardised + 3.0, voiced)
    out = speaker.normalise(standardised + 3.0, voiced, moments, prior_frames=1.0)
    only = torch.tensor(VOICED_ONLY)
    torch.testing.assert_close(out[0][~voiced[0]][:, only], (standardised + 3.0)[0][~voiced[0]][:, only])
    assert not torch.allclose(out[0][~voiced[0]][:, ~only], (standardised + 3.0)[0][~voiced[0]][:, ~only])


def test_preceding_moments_are_what_the_state_holds_before_each_sentence() -> None:
    moments = torch.rand(7, speaker.MOMENTS, 4, dtype=torch.float64)
    before = speaker.preceding(moments, [3, 0, 4])
    assert torch.equal(before[0], torch.zeros(speaker.MOMENTS, 4)) and torch.equal(before[3], before[0])
    assert torch.equal(before[2], moments[0] + moments[1])
    assert torch.equal(before[6], (moments[3] + moments[4]) + moments[5])
    with pytest.raises(ValueError, match="sessions of 6 sentences in all, but 7 sentences given"):
        speaker.preceding(moments, [3, 3])


def test_the_state_carries_the_moments_through_pool_rows_and_plain_form(normalised: Screener) -> None:
    track = normalised.new_session()
    sentences = voiced_session(4)
    for s in sentences:
        normalised.step(track, s)
    moments = track.state.audio_moments
    assert moments.dtype == torch.float64 and moments.shape == (1, speaker.MOMENTS, len(VOICED_ONLY))
    voiced = sum(int((s.audio[:, PITCH] > 0).sum()) for s in sentences)
    assert float(moments[0, 0, 0]) == voiced, "the count is the session's voiced frames"
    plain = track.state.to_plain()
    assert "audio_moments" in plain
    assert torch.equal(RecurrentState.from_plain(plain).audio_moments, moments)
    assert torch.equal(RecurrentState.from_record({**plain, "next_index": 3}).audio_moments, moments)
    without = {k: v for k, v in plain.items() if k != "modality_count"}
    with pytest.raises(ValueError, match="expected the parts"):
        RecurrentState.from_plain(without)
    with pytest.raises(ValueError, match="encodes a sentence with its session's audio moments"):
        normalised.model.encode(collate(sentences[:1], normalised.model.config, CPU))


@pytest.mark.parametrize("path", [DEMO_MODEL, DEFAULT_MODEL])
def test_checkpoints_without_the_option_load_and_step_as_before(path: object) -> None:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert "speaker_normalisation" not in blob["config"], "the shipped checkpoints predate the option"
    model, _ = load_checkpoint(path)
    assert not model.config.speaker_normalisation
    state = model.initial_state(1)
    assert state.audio_moments is None
    assert set(state.to_plain()) == {"layers", "modality_sum", "modality_count"}, "the first release's layout"


def test_the_option_round_trips_through_a_checkpoint(tmp_path: object, normalised: Screener) -> None:
    path = tmp_path / "speaker.pt"
    save_checkpoint(path, normalised.model, normalised.facts)
    loaded, _ = load_checkpoint(path)
    assert loaded.config.speaker_normalisation and loaded.config.speaker_prior_frames == 300.0
    sentences = voiced_session(5)
    again = Screener(loaded, normalised.facts, CPU)
    assert again.offline(sentences) == normalised.offline(sentences)


def test_the_option_refuses_what_it_cannot_normalise() -> None:
    with pytest.raises(ValueError, match="not audio_dim=88: switch it off"):
        ModelConfig(audio_dim=88, speaker_normalisation=True)
    with pytest.raises(ValueError, match="speaker_prior_frames must be above 0"):
        ModelConfig(speaker_normalisation=True, speaker_prior_frames=0)


def test_a_speaker_normalised_model_trains_and_scores_offline_as_it_streams() -> None:
    sessions = generate_sessions(6, FeatureStats.unit(), seed=7, settings=SETTINGS)
    config = ModelConfig(d_model=16, speaker_normalisation=True)
    model = train_model(sessions, FeatureStats.unit(), config, TrainSettings(epochs=1, batch_size=3, crop_frames=50))
    logits = prefix_logits(model, sessions[:2])
    screener = Screener(model, load_checkpoint(DEMO_MODEL)[1], CPU)
    for session, offline in zip(sessions[:2], logits, strict=True):
        track = screener.new_session()
        streamed = [screener.step(track, s).probability for s in session.sentences]
        expected = torch.sigmoid(torch.tensor(offline) / model.temperature).tolist()
        assert streamed == pytest.approx(expected, abs=1e-5)
