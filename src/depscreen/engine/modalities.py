"""The modalities, defined once: what each one is, how a sentence carries it and how the model encodes it.

Everything that handles the modalities side by side follows `MODALITIES`, in its order: the sentence's
availability and quality (`SentenceFeatures`), the batch layout and collate step (`runtime.screener`), the
model's normalisation, encoders, fusion tokens, per-modality heads and state (`model.screening`), the
feature statistics and modality dropout of training (`train.stats`, `train.trainer`), the ablations'
restriction (`train.variants`), the feature cache (`train.cache`) and the wire enum (`streamer.convert`:
`depscreen.v1.Modality` value named like the modality, upper-cased).

Conventions that keep shipped checkpoints loadable: a modality called `x` is the field `x` of
`SentenceFeatures`, its feature dimension is the `x_dim` field of `ModelConfig`, its encoder is the model's
`x_encoder` module and, when it is normalised, its statistics are the model's `x_mean` and `x_std` buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from depscreen.engine.features.text import DEFAULT_TEXT_ENCODER, text_feature_dim

if TYPE_CHECKING:
    from torch import nn

    from depscreen.engine.features.sentence import SentenceFeatures
    from depscreen.engine.model.screening import ModelConfig


@dataclass(frozen=True)
class Modality:
    """One input modality of the model."""

    name: str
    dim: int
    """Feature dimension the live extractor produces (the default of `ModelConfig.<name>_dim`)."""
    extractor: str
    """What computes the features live (a test holds `dim` to that extractor's output)."""
    sequence: bool
    """Frames per sentence (`[frames, dim]`, none when absent) or one vector per sentence (`[dim]`, None)."""
    normalised: bool
    """The model standardises the features with statistics measured on training data."""
    droppable: bool
    """Training's modality dropout may hide it (audio never: the segmenter found each sentence in the audio)."""
    encoder: Callable[[int, ModelConfig], nn.Module]
    """Builds the sentence encoder from (feature dimension, model config): `module(values, lengths)` →
    `[n, d_model]`."""
    quality: Callable[[SentenceFeatures], float]
    """0..1 signal quality of the modality in a sentence (the fusion gate sees it)."""

    @property
    def config_field(self) -> str:
        return f"{self.name}_dim"

    def values(self, features: SentenceFeatures) -> np.ndarray | None:
        """The sentence's features of this modality (a sequence may have no frames; a vector may be None)."""
        return getattr(features, self.name)

    def present(self, features: SentenceFeatures) -> bool:
        values = self.values(features)
        return len(values) > 0 if self.sequence else values is not None

    def absent(self, dim: int) -> np.ndarray | None:
        """What a sentence without this modality carries."""
        return np.zeros((0, dim), dtype=np.float32) if self.sequence else None


def _sequence_encoder(pool_field: str | None = None) -> Callable[[int, ModelConfig], nn.Module]:
    def build(dim: int, c: ModelConfig) -> nn.Module:
        from depscreen.engine.model.encoders import SequenceEncoder  # torch, loaded when a model is built

        pool = getattr(c, pool_field) if pool_field else 1
        return SequenceEncoder(dim, c.d_model, c.d_state, c.d_conv, c.expand, c.encoder_layers, pool=pool)

    return build


def _text_encoder(dim: int, c: ModelConfig) -> nn.Module:
    from depscreen.engine.model.encoders import TextEncoder  # torch, loaded when a model is built

    return TextEncoder(dim, c.d_model, c.text_projection)


MODALITIES: tuple[Modality, ...] = (
    Modality(
        name="audio",
        dim=25,
        extractor="features.audio.AudioFeatureExtractor: eGeMAPSv02 low-level descriptors per 10 ms frame",
        sequence=True,
        normalised=True,
        droppable=False,
        encoder=_sequence_encoder("audio_pool"),
        quality=lambda f: f.audio_quality,
    ),
    Modality(
        name="video",
        dim=136,
        extractor="features.face.FaceLandmarker: 68 normalised facial landmarks (x, y) per sampled frame",
        sequence=True,
        normalised=True,
        droppable=True,
        encoder=_sequence_encoder(),
        quality=lambda f: f.video_quality,
    ),
    Modality(
        name="text",
        dim=text_feature_dim(DEFAULT_TEXT_ENCODER),
        extractor=(
            "features.text: sentence embedding or character n-gram counts of the caption or ASR text + 8 PHQ-8 "
            "item similarities"
        ),
        sequence=False,
        normalised=False,
        droppable=True,
        encoder=_text_encoder,
        quality=lambda f: f.text_confidence if f.text is not None else 0.0,
    ),
)
"""The model's modalities in their fixed order (the order of every `[..., modalities]` tensor axis)."""

MODALITY_NAMES: tuple[str, ...] = tuple(m.name for m in MODALITIES)


def modality(name: str) -> Modality:
    """The modality called `name` (ValueError listing the known ones otherwise)."""
    for m in MODALITIES:
        if m.name == name:
            return m
    raise ValueError(f"unknown modality {name!r}: use one of {', '.join(MODALITY_NAMES)}")


def modality_index(name: str) -> int:
    """Position of the modality `name` on every modality axis."""
    return MODALITY_NAMES.index(modality(name).name)
