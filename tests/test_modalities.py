"""The modality registry: everything that lists modalities side by side follows it."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.face import FaceLandmarker
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import MODALITIES, MODALITY_NAMES, modality, modality_index
from depscreen.engine.model.screening import ModelConfig, ScreeningModel
from depscreen.engine.runtime.checkpoint import DEFAULT_MODEL, DEMO_MODEL
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.synthetic import generate_sessions
from depscreen.streamer.convert import MODALITY_ENUM
from depscreen.v1 import screening_pb2 as pb


def test_registry_dimensions_are_what_the_live_extractors_produce() -> None:
    assert modality("audio").dim == AudioFeatureExtractor.DIM == len(AudioFeatureExtractor.NAMES)
    assert modality("video").dim == FaceLandmarker.DIM
    assert modality("text").dim == ModelConfig().text_dim


def test_every_modality_has_its_field_its_config_size_and_its_wire_value() -> None:
    feature_fields = {f.name for f in fields(SentenceFeatures)}
    config = ModelConfig()
    for m in MODALITIES:
        assert m.name in feature_fields
        assert config.feature_dim(m.name) == m.dim
    assert [MODALITY_ENUM[name] for name in MODALITY_NAMES] == [pb.AUDIO, pb.VIDEO, pb.TEXT]
    wire = {pb.Modality.Name(v) for v in pb.Modality.values()} - {"MODALITY_UNSPECIFIED"}
    assert wire == {name.upper() for name in MODALITY_NAMES}, "the proto enum and the registry name the same set"
    with pytest.raises(ValueError, match="unknown modality 'smell': use one of audio, video, text"):
        modality_index("smell")


@pytest.mark.parametrize("path", [DEMO_MODEL, DEFAULT_MODEL])
def test_a_model_built_from_the_registry_has_the_shipped_checkpoints_parameters(path: object) -> None:
    """Names and shapes follow the registry's conventions, so checkpoints written before it load unchanged."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    built = ScreeningModel(ModelConfig(**blob["config"])).state_dict()
    assert {k: v.shape for k, v in built.items()} == {k: v.shape for k, v in blob["state_dict"].items()}


def test_availability_and_quality_follow_the_registry_order() -> None:
    first = generate_sessions(1, FeatureStats.unit(), seed=0)[0].sentences[0]
    faces = np.zeros((3, modality("video").dim), np.float32)
    sentence = replace(first, video=faces, video_frames=4, text=None)
    assert sentence.available == (True, True, False)
    assert sentence.quality == (sentence.audio_quality, sentence.video_quality, 0.0)
    assert len(FeatureStats.unit().mean) == sum(m.normalised for m in MODALITIES)
