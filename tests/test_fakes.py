"""The fakes of `fakes.py` keep the real interfaces: a changed protocol or base class breaks this test, not a
seam test silently; and each fake keeps the part of the real behaviour the seam tests rely on."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from depscreen.engine.features.asr import Transcriber
from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.text import TEXT_ENCODERS, TextFeaturizer
from depscreen.engine.media import decode_audio_file
from depscreen.engine.pipeline import AudioExtractor, SessionPipeline

from .conftest import FIXTURES
from .fakes import FakeAudioExtractor, FakeRecogniser, FakeTextFeaturizer, fake_extractors


def interface_of(interface: type) -> tuple[set[str], dict[str, inspect.Signature]]:
    """An interface's attributes (annotated names) and its public methods' signatures."""
    attributes = set(inspect.get_annotations(interface))
    methods = {
        name: inspect.signature(member)
        for name, member in vars(interface).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    return attributes, methods


def assert_implements(fake: object, interface: type) -> None:
    attributes, methods = interface_of(interface)
    assert attributes or methods, f"{interface.__name__} declares nothing"
    for name in attributes:
        assert hasattr(fake, name), f"{type(fake).__name__} lacks {interface.__name__}.{name}"
    for name, signature in methods.items():
        own = inspect.signature(getattr(type(fake), name))
        assert own == signature, f"{type(fake).__name__}.{name}{own} is not {interface.__name__}.{name}{signature}"


@pytest.mark.parametrize(
    ("fake", "interface"),
    [
        (FakeRecogniser(), Transcriber),
        (FakeAudioExtractor(), AudioExtractor),
        (AudioFeatureExtractor(), AudioExtractor),
        (FakeTextFeaturizer("minilm-l6-v2"), TextFeaturizer),
    ],
    ids=["recogniser", "audio", "real-audio", "text"],
)
def test_each_fake_implements_the_real_interface(fake: object, interface: type) -> None:
    assert_implements(fake, interface)


def test_the_check_catches_a_changed_interface() -> None:
    class Wider(TextFeaturizer):
        def embed(self, texts: list[str], language: str = "") -> tuple[np.ndarray, np.ndarray]:
            raise NotImplementedError

    with pytest.raises(AssertionError, match="embed"):
        assert_implements(FakeTextFeaturizer("minilm-l6-v2"), Wider)


def test_the_fake_audio_extractor_makes_as_many_frames_as_egemaps() -> None:
    pcm = decode_audio_file(FIXTURES / "jfk.flac")[:40_000]
    real, fake = AudioFeatureExtractor(), FakeAudioExtractor()
    for length in (0, fake.MIN_SAMPLES - 1, fake.MIN_SAMPLES, 16_000, len(pcm)):
        assert fake.extract(pcm[:length]).shape == real.extract(pcm[:length]).shape, length
    loud = fake.extract(pcm)[:, 0]
    assert loud.max() - loud.min() > 2, "speech and pauses should differ in log energy"


@pytest.mark.parametrize("name", sorted(TEXT_ENCODERS))
def test_the_fake_text_featurizer_has_the_real_encoders_size(name: str) -> None:
    fake = FakeTextFeaturizer(name)
    features = fake.features(["I sleep badly", "", "I sleep badly"])
    assert fake.feature_dim == TEXT_ENCODERS[name].DIM + TextFeaturizer.ITEMS == features.shape[1]
    assert np.array_equal(features[0], features[2]), "the same text gives the same features"
    assert not features[1].any(), "no text gives all zeros, as the real featurizers do"


def test_the_fake_recogniser_says_its_texts_in_order() -> None:
    pipeline = SessionPipeline(fake_extractors(["hello there", "goodbye"]), sample_rate_hz=16_000)
    assert pipeline.asr_model == "fake"
    recogniser = FakeRecogniser(["one", "two"])
    said = [recogniser.transcribe(np.zeros(1600, np.int16), "en").text for _ in range(3)]
    assert said == ["one", "two", ""]
    assert recogniser.heard == [(1600, "en")] * 3
    english = FakeRecogniser(languages=frozenset({"en"}))
    assert (english.model_for("en-US"), english.model_for("tlh")) == ("fake", "")
