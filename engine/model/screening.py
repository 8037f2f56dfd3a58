"""The screening model: sentence encoders + gated fusion, a causal session-level Mamba stack, and heads.

Per sentence, `encode` turns the audio/video/text features into one fused vector. Across sentences, `step`
advances each session's recurrent state by exactly one sentence; `forward_session` runs the same stack as a
full scan over a whole session and is the offline reference (the streamed estimate after sentence k equals
`forward_session` on sentences 1..k: prefix parity).

Heads: the screening probability (temperature-calibrated), one auxiliary probability per modality from the
running mean of that modality's sentence vectors (multi-task, as in MIMML), and the gate weights of the
sentence as modality confidences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from depscreen.engine.model.encoders import SequenceEncoder, TextEncoder
from depscreen.engine.model.fusion import MODALITIES, GatedFusion
from depscreen.engine.model.mamba import Mamba
from depscreen.engine.model.state import SessionState


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the model; stored in every checkpoint."""

    audio_dim: int = 25
    """eGeMAPS low-level descriptors per 10 ms frame."""
    video_dim: int = 136
    """68 normalised facial landmarks (x, y)."""
    text_dim: int = 392
    """384-d sentence embedding + 8 PHQ-8 item similarities."""
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

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class SentenceBatch:
    """Model-ready features of `n` sentences; frame tensors are zero after each sentence's length."""

    audio: torch.Tensor
    """`[n, frames, audio_dim]` raw LLDs."""
    audio_lengths: torch.Tensor
    video: torch.Tensor
    """`[n, frames, video_dim]` normalised landmarks of the sampled frames that had a face."""
    video_lengths: torch.Tensor
    text: torch.Tensor
    """`[n, text_dim]`."""
    available: torch.Tensor
    """`[n, 3]` bool: audio, video, text present."""
    quality: torch.Tensor
    """`[n, 3]` 0..1 signal quality per modality."""


@dataclass
class EncodedSentences:
    """What the session stack consumes per sentence."""

    fused: torch.Tensor
    """`[n, d_model]`."""
    tokens: torch.Tensor
    """`[n, 3, d_model]` per-modality encoder vectors (before fusion)."""
    weights: torch.Tensor
    """`[n, 3]` gate weights."""
    available: torch.Tensor
    """`[n, 3]` bool."""


@dataclass
class SessionOutput:
    """Estimates after a sentence (or after each sentence of a session, with a time axis)."""

    probability: torch.Tensor
    modality_probability: torch.Tensor
    """Per-modality estimate; 0.5 (no information) for a modality not yet seen."""
    logit: torch.Tensor
    modality_logit: torch.Tensor


def pool_frames(frames: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average non-overlapping windows of `k` valid frames; the last window may be partial."""
    n, length, dim = frames.shape
    pad = (-length) % k
    if pad:
        frames = torch.cat([frames, frames.new_zeros(n, pad, dim)], dim=1)
    windows = frames.reshape(n, -1, k, dim).sum(2)
    t = torch.arange(frames.shape[1], device=frames.device).unsqueeze(0)
    counts = (t < lengths.unsqueeze(1)).to(frames.dtype).reshape(n, -1, k).sum(2)
    return windows / counts.clamp(min=1).unsqueeze(-1), (lengths + k - 1) // k


class ScreeningModel(nn.Module):
    """Sentence encoders, gated fusion, session Mamba stack and heads (see the module docstring)."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("audio_mean", torch.zeros(c.audio_dim))
        self.register_buffer("audio_std", torch.ones(c.audio_dim))
        self.register_buffer("video_mean", torch.zeros(c.video_dim))
        self.register_buffer("video_std", torch.ones(c.video_dim))
        self.register_buffer("temperature", torch.ones(()))
        self.audio_encoder = SequenceEncoder(c.audio_dim, c.d_model, c.d_state, c.d_conv, c.expand, c.encoder_layers)
        self.video_encoder = SequenceEncoder(c.video_dim, c.d_model, c.d_state, c.d_conv, c.expand, c.encoder_layers)
        self.text_encoder = TextEncoder(c.text_dim, c.d_model)
        self.fusion = GatedFusion(c.d_model)
        self.session_norms = nn.ModuleList(nn.LayerNorm(c.d_model) for _ in range(c.session_layers))
        self.session_layers = nn.ModuleList(
            Mamba(c.d_model, d_state=c.d_state, d_conv=c.d_conv, expand=c.expand) for _ in range(c.session_layers)
        )
        self.final_norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, 1)
        self.modality_heads = nn.ModuleList(nn.Linear(c.d_model, 1) for _ in MODALITIES)

    def set_feature_stats(
        self, audio: tuple[torch.Tensor, torch.Tensor], video: tuple[torch.Tensor, torch.Tensor]
    ) -> None:
        """Normalisation (mean, std) of the raw audio and video features, measured on training data."""
        with torch.no_grad():
            self.audio_mean.copy_(audio[0])
            self.audio_std.copy_(audio[1].clamp(min=1e-6))
            self.video_mean.copy_(video[0])
            self.video_std.copy_(video[1].clamp(min=1e-6))

    def encode(self, batch: SentenceBatch) -> EncodedSentences:
        """Encode and fuse `n` sentences (independent of each other and of how they are batched)."""
        audio, audio_lengths = pool_frames(
            (batch.audio - self.audio_mean) / self.audio_std * _mask(batch.audio, batch.audio_lengths),
            batch.audio_lengths,
            self.config.audio_pool,
        )
        video = (batch.video - self.video_mean) / self.video_std * _mask(batch.video, batch.video_lengths)
        tokens = torch.stack(
            [
                self.audio_encoder(audio, audio_lengths),
                self.video_encoder(video, batch.video_lengths),
                self.text_encoder(batch.text),
            ],
            dim=1,
        ) * batch.available.unsqueeze(-1).to(audio.dtype)
        fused, weights, _ = self.fusion(tokens, batch.available, batch.quality)
        return EncodedSentences(fused=fused, tokens=tokens, weights=weights, available=batch.available)

    def initial_state(self, batch: int = 1) -> SessionState:
        """The state of `batch` sessions before their first sentence."""
        device = self.head.weight.device
        return SessionState(
            layers=[layer.allocate_state(batch, device) for layer in self.session_layers],
            modality_sum=torch.zeros(batch, len(MODALITIES), self.config.d_model, device=device),
            modality_count=torch.zeros(batch, len(MODALITIES), device=device),
        )

    def step(self, sentences: EncodedSentences, state: SessionState) -> tuple[SessionOutput, SessionState]:
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
        return output, SessionState(layers=layers, modality_sum=modality_sum, modality_count=modality_count)

    def forward_session(self, sentences: EncodedSentences) -> SessionOutput:
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

    def _heads(self, h: torch.Tensor, modality_sum: torch.Tensor, modality_count: torch.Tensor) -> SessionOutput:
        logit = self.head(h).squeeze(-1) / self.temperature
        means = modality_sum / modality_count.clamp(min=1).unsqueeze(-1)
        modality_logit = torch.stack(
            [head(means[..., i, :]).squeeze(-1) for i, head in enumerate(self.modality_heads)], dim=-1
        )
        seen = modality_count > 0
        return SessionOutput(
            probability=torch.sigmoid(logit),
            modality_probability=torch.where(seen, torch.sigmoid(modality_logit), torch.full_like(modality_logit, 0.5)),
            logit=logit,
            modality_logit=modality_logit,
        )


def _mask(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    t = torch.arange(frames.shape[1], device=frames.device).unsqueeze(0)
    return (t < lengths.unsqueeze(1)).to(frames.dtype).unsqueeze(-1)
