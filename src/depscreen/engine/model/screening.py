"""The screening model: sentence encoders + gated fusion, a causal session-level Mamba stack, and heads.

Per sentence, `encode` turns the audio/video/text features into one fused vector. Across sentences, `step`
advances each session's recurrent state by exactly one sentence; `forward_session` runs the same stack as a
full scan over a whole session and is the offline reference (the streamed estimate after sentence k equals
`forward_session` on sentences 1..k: prefix parity).

Heads: the screening probability (temperature-calibrated), one auxiliary probability per modality from the
running mean of that modality's sentence vectors (multi-task, as in MIMML), the gate weights of the
sentence as modality confidences and, when configured, the questionnaire score (SDS index, PHQ-8 total) as an
auxiliary regression from the same session state as the screening head.

With `ModelConfig.speaker_normalisation`, the audio descriptors are also normalised by the session's own
running statistics (`model.speaker`), so encoding a sentence needs its session's state: live, `encode` takes
the state's moments; offline, `encode_sessions` works them out for whole sessions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from depscreen.engine.modalities import MODALITIES, modality
from depscreen.engine.model import speaker
from depscreen.engine.model.fusion import GatedFusion
from depscreen.engine.model.mamba import Mamba
from depscreen.engine.model.state import RecurrentState


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the model; stored in every checkpoint. Each modality's feature dimension is `<name>_dim`."""

    audio_dim: int = modality("audio").dim
    """eGeMAPS low-level descriptors per 10 ms frame."""
    video_dim: int = modality("video").dim
    """68 normalised facial landmarks (x, y)."""
    text_dim: int = modality("text").dim
    """Text vector (384-d all-MiniLM-L6-v2 embedding by default, or hashed character n-gram counts) + 8 PHQ-8
    item similarities."""
    text_projection: int = 0
    """LSA dimensions the text vector (character n-gram counts) is projected to; 0: a sentence embedding, used
    as it is."""
    score_head: bool = False
    """A regression head for the dataset's continuous questionnaire score beside the screening head."""
    d_model: int = 64
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    encoder_layers: int = 1
    """BiMamba blocks inside each sentence encoder."""
    session_layers: int = 2
    """Causal Mamba layers across the sentences of a session."""
    audio_pool: int = 4
    """LLD frames averaged into one encoder step (10 ms frames → 40 ms steps)."""
    speaker_normalisation: bool = False
    """Also normalise the audio descriptors by the session's own running statistics (`model.speaker`), carried
    in the session state. Off in checkpoints written before the option existed, which behave as they did."""
    speaker_prior_frames: float = 300.0
    """With speaker normalisation: pseudo-frames of the training population's variance mixed into the
    session's (3 s of voiced speech weigh as much as the prior)."""

    def __post_init__(self) -> None:
        if self.speaker_normalisation and self.audio_dim != modality("audio").dim:
            raise ValueError(
                f"speaker normalisation reads the {modality('audio').dim} eGeMAPS descriptors (pitch marks the "
                f"voiced frames), not audio_dim={self.audio_dim}: switch it off for other audio features"
            )
        if self.speaker_prior_frames <= 0:
            raise ValueError(f"speaker_prior_frames must be above 0, not {self.speaker_prior_frames}")

    def to_dict(self) -> dict[str, int | float | bool]:
        return asdict(self)

    def feature_dim(self, name: str) -> int:
        """Feature dimension of the modality `name`."""
        return getattr(self, modality(name).config_field)


@dataclass
class SentenceBatch:
    """Model-ready features of `n` sentences, per modality (`MODALITIES` order on the modality axes)."""

    values: dict[str, torch.Tensor]
    """A sequence modality: `[n, frames, dim]` raw features, zero after each sentence's length; a vector
    modality: `[n, dim]`, zero where absent."""
    lengths: dict[str, torch.Tensor]
    """`[n]` frames per sentence (a vector modality: 1 where present, else 0)."""
    available: torch.Tensor
    """`[n, modalities]` bool: the modality is present."""
    quality: torch.Tensor
    """`[n, modalities]` 0..1 signal quality per modality."""


@dataclass
class EncodedSentences:
    """What the session stack consumes per sentence."""

    fused: torch.Tensor
    """`[n, d_model]`."""
    tokens: torch.Tensor
    """`[n, modalities, d_model]` per-modality encoder vectors (before fusion)."""
    weights: torch.Tensor
    """`[n, modalities]` gate weights."""
    available: torch.Tensor
    """`[n, modalities]` bool."""
    audio_moments: torch.Tensor | None = None
    """`[n, 3, audio_dim]` the moments of each sentence's session after it (speaker normalisation: the next
    state's `audio_moments`); None for a model without it, and in a session layout."""


@dataclass
class ScreeningOutput:
    """Estimates after a sentence (or after each sentence of a session, with a time axis)."""

    probability: torch.Tensor
    modality_probability: torch.Tensor
    """Per-modality estimate; 0.5 (no information) for a modality not yet seen."""
    logit: torch.Tensor
    modality_logit: torch.Tensor
    score: torch.Tensor | None = None
    """Estimated questionnaire score (its own units); None without a score head."""


class ScreeningModel(nn.Module):
    """Sentence encoders, gated fusion, session Mamba stack and heads (see the module docstring)."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        for m in MODALITIES:
            if m.normalised:
                self.register_buffer(f"{m.name}_mean", torch.zeros(c.feature_dim(m.name)))
                self.register_buffer(f"{m.name}_std", torch.ones(c.feature_dim(m.name)))
        self.register_buffer("temperature", torch.ones(()))
        for m in MODALITIES:
            self.add_module(f"{m.name}_encoder", m.encoder(c.feature_dim(m.name), c))
        self.fusion = GatedFusion(c.d_model)
        self.session_norms = nn.ModuleList(nn.LayerNorm(c.d_model) for _ in range(c.session_layers))
        self.session_layers = nn.ModuleList(
            Mamba(c.d_model, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand) for _ in range(c.session_layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, 1)
        self.modality_heads = nn.ModuleList(nn.Linear(c.d_model, 1) for _ in MODALITIES)
        if c.score_head:
            self.score_head = nn.Linear(c.d_model, 1)
            self.register_buffer("score_mean", torch.zeros(()))
            self.register_buffer("score_std", torch.ones(()))

    def normalisation(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) buffers of a normalised modality's raw features."""
        return getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")

    def set_feature_stats(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Normalisation (mean, std) of each normalised modality's raw features, measured on training data."""
        with torch.no_grad():
            for m in MODALITIES:
                if m.normalised:
                    mean, std = self.normalisation(m.name)
                    mean.copy_(stats[m.name][0])
                    std.copy_(stats[m.name][1].clamp(min=1e-6))

    def set_score_stats(self, mean: float, std: float) -> None:
        """Mean and standard deviation of the training sessions' scores (the score head predicts in their units)."""
        with torch.no_grad():
            self.score_mean.fill_(mean)
            self.score_std.fill_(max(std, 1e-6))

    def standardised_score(self, score: torch.Tensor) -> torch.Tensor:
        """A score in the units the score head's loss is measured in (training mean 0, sd 1)."""
        return (score - self.score_mean) / self.score_std

    def encode(self, batch: SentenceBatch, audio_before: torch.Tensor | None = None) -> EncodedSentences:
        """Encode and fuse `n` sentences (independent of how they are batched). A speaker-normalised model
        needs `audio_before`, `[n, 3, audio_dim]`: the audio moments of each sentence's session before it (live,
        the state's `audio_moments`; `encode_sessions` works them out for whole sessions); others ignore it."""
        tokens = []
        audio_moments = None
        for m in MODALITIES:
            values, lengths = batch.values[m.name], batch.lengths[m.name]
            if m.normalised:
                values = self._standardised(batch, m.name)
            if m.name == "audio" and self.config.speaker_normalisation:
                if audio_before is None:
                    raise ValueError("a speaker-normalised model encodes a sentence with its session's audio moments")
                voiced = speaker.voiced_frames(batch.values[m.name], lengths)
                audio_moments = audio_before + speaker.sentence_moments(values, voiced)
                normalised = speaker.normalise(values, voiced, audio_moments, self.config.speaker_prior_frames)
                values = normalised * _mask(values, lengths)
            tokens.append(getattr(self, f"{m.name}_encoder")(values, lengths))
        stacked = torch.stack(tokens, dim=1)
        tokens = stacked * batch.available.unsqueeze(-1).to(stacked.dtype)
        fused, weights, _ = self.fusion(tokens, batch.available, batch.quality)
        return EncodedSentences(
            fused=fused, tokens=tokens, weights=weights, available=batch.available, audio_moments=audio_moments
        )

    def encode_sessions(self, batch: SentenceBatch, sessions: list[int]) -> EncodedSentences:
        """Encode the sentences of whole sessions, flat, session after session (`sessions` sentences each),
        each as `encode` sees it live after its session's earlier sentences."""
        before = None
        if self.config.speaker_normalisation:
            voiced = speaker.voiced_frames(batch.values["audio"], batch.lengths["audio"])
            before = speaker.preceding(speaker.sentence_moments(self._standardised(batch, "audio"), voiced), sessions)
        return self.encode(batch, before)

    def _standardised(self, batch: SentenceBatch, name: str) -> torch.Tensor:
        """A normalised modality's features standardised by the training statistics, zero after each length."""
        values, lengths = batch.values[name], batch.lengths[name]
        mean, std = self.normalisation(name)
        return (values - mean) / std * _mask(values, lengths)

    def initial_state(self, batch: int = 1) -> RecurrentState:
        """The state of `batch` sessions before their first sentence."""
        device = self.head.weight.device
        return RecurrentState(
            layers=[layer.allocate_state(batch, device) for layer in self.session_layers],
            modality_sum=torch.zeros(batch, len(MODALITIES), self.config.d_model, device=device),
            modality_count=torch.zeros(batch, len(MODALITIES), device=device),
            audio_moments=(
                torch.zeros(batch, speaker.MOMENTS, self.config.audio_dim, dtype=torch.float64, device=device)
                if self.config.speaker_normalisation
                else None
            ),
        )

    def step(self, sentences: EncodedSentences, state: RecurrentState) -> tuple[ScreeningOutput, RecurrentState]:
        """Advance `batch` sessions by one sentence each (row i of `sentences` belongs to session i)."""
        h = sentences.fused
        layers = []
        for norm, layer, layer_state in zip(self.session_norms, self.session_layers, state.layers, strict=True):
            y, new_state = layer.step(norm(h), layer_state)
            h = h + y
            layers.append(new_state)
        available = sentences.available.to(h.dtype)
        modality_sum = state.modality_sum + sentences.tokens * available.unsqueeze(-1)
        modality_count = state.modality_count + available
        output = self._heads(self.final_norm(h), modality_sum, modality_count)
        return output, RecurrentState(
            layers=layers,
            modality_sum=modality_sum,
            modality_count=modality_count,
            audio_moments=sentences.audio_moments,
        )

    def forward_session(self, sentences: EncodedSentences) -> ScreeningOutput:
        """Offline reference over whole sessions: tensors `[batch, k, ...]` → outputs `[batch, k, ...]`.

        Causal: output k depends on sentences 1..k only, so padding sessions at the end is harmless.
        """
        h = sentences.fused
        for norm, layer in zip(self.session_norms, self.session_layers, strict=True):
            h = h + layer(norm(h))
        available = sentences.available.to(h.dtype)
        modality_sum = torch.cumsum(sentences.tokens * available.unsqueeze(-1), dim=1)
        modality_count = torch.cumsum(available, dim=1)
        return self._heads(self.final_norm(h), modality_sum, modality_count)

    def _heads(self, h: torch.Tensor, modality_sum: torch.Tensor, modality_count: torch.Tensor) -> ScreeningOutput:
        logit = self.head(h).squeeze(-1) / self.temperature
        means = modality_sum / modality_count.clamp(min=1).unsqueeze(-1)
        modality_logit = torch.stack(
            [head(means[..., i, :]).squeeze(-1) for i, head in enumerate(self.modality_heads)], dim=-1
        )
        seen = modality_count > 0
        score = self.score_head(h).squeeze(-1) * self.score_std + self.score_mean if self.config.score_head else None
        return ScreeningOutput(
            probability=torch.sigmoid(logit),
            modality_probability=torch.where(seen, torch.sigmoid(modality_logit), torch.full_like(modality_logit, 0.5)),
            logit=logit,
            modality_logit=modality_logit,
            score=score,
        )


def _mask(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    t = torch.arange(frames.shape[1], device=frames.device).unsqueeze(0)
    return (t < lengths.unsqueeze(1)).to(frames.dtype).unsqueeze(-1)
