"""Sentence encoders: per-frame features → one vector per modality and sentence.

Audio and video: 1-D CNN → bidirectional Mamba (a forward and a backward scan, summed) → masked mean
pooling. The whole sentence is known when it closes, so looking backwards inside it is honest. Text is one
vector per sentence already (a sentence embedding or character n-gram counts, + PHQ-8 similarities) and goes
through a small MLP; n-gram counts are first projected by a TF-IDF/LSA fitted on the training sentences.

Padded batches give the same vectors as one sentence at a time: padding sits after the valid frames, both
scans see only valid frames before any padding, and pooling ignores padding.
"""

from __future__ import annotations

import torch
from torch import nn

from depscreen.engine.features.text import PHQ8_ITEMS
from depscreen.engine.model.mamba import Mamba

ITEMS = len(PHQ8_ITEMS)
TEXT_PROJECTION_DROPOUT = 0.3
"""Dropout on the projected text vector during training (82 sessions: the text pathway overfits easily)."""


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first `lengths[i]` frames of each sequence `[batch, length, dim]`, padding left in place."""
    length = x.shape[1]
    t = torch.arange(length, device=x.device).unsqueeze(0)
    idx = torch.where(t < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - t, t)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand_as(x))


class BiMamba(nn.Module):
    """A forward and a backward Mamba over the valid frames of each sequence, outputs summed, plus residual.

    `bidirectional = False` skips the backward scan (the "unidirectional encoder" ablation; its weights stay, unused).
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.bidirectional = True
        self.norm = nn.LayerNorm(d_model)
        self.forward_scan = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.backward_scan = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        if not self.bidirectional:
            return x + self.forward_scan(h)
        backward = reverse_valid(self.backward_scan(reverse_valid(h, lengths)), lengths)
        return x + self.forward_scan(h) + backward


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


class SequenceEncoder(nn.Module):
    """CNN + BiMamba + masked mean pooling for one frame-level modality (audio LLDs or face landmarks).

    `pool` > 1 first averages windows of that many frames into one step (10 ms LLDs → 40 ms steps)."""

    def __init__(
        self,
        in_dim: int,
        d_model: int,
        d_state: int,
        d_conv: int,
        expand: int,
        layers: int,
        kernel: int = 5,
        pool: int = 1,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv1d(in_dim, d_model, kernel_size=kernel, padding=kernel // 2)
        self.act = nn.GELU()
        self.blocks = nn.ModuleList(BiMamba(d_model, d_state, d_conv, expand) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`[batch, length, in_dim]` (zeros after each length) → `[batch, d_model]`; zero-length rows give 0."""
        if self.pool > 1:
            frames, lengths = pool_frames(frames, lengths, self.pool)
        mask = (torch.arange(frames.shape[1], device=frames.device).unsqueeze(0) < lengths.unsqueeze(1)).to(
            frames.dtype
        )
        h = self.act(self.conv((frames * mask.unsqueeze(-1)).transpose(1, 2))).transpose(1, 2)
        h = h * mask.unsqueeze(-1)
        for block in self.blocks:
            h = block(h, lengths) * mask.unsqueeze(-1)
        pooled = h.sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(h.dtype)
        return self.norm(pooled) * (lengths > 0).unsqueeze(-1).to(h.dtype)


class TextEncoder(nn.Module):
    """MLP over the sentence's text vector concatenated with its PHQ-8 item similarities.

    `projection` > 0: the vector is character n-gram counts, projected first to `projection` dimensions by
    TF-IDF weighting, unit length and an LSA basis, then standardised; these live in buffers
    (`fit_projection`, measured on training sentences) so a checkpoint carries them. 0: the vector (a sentence
    embedding) enters the MLP as it is.
    """

    def __init__(self, in_dim: int, d_model: int, projection: int = 0) -> None:
        super().__init__()
        self.projection = projection
        if projection:
            counts = in_dim - ITEMS
            self.register_buffer("idf", torch.ones(counts))
            self.register_buffer("components", torch.zeros(counts, projection))
            self.register_buffer("projected_mean", torch.zeros(projection))
            self.register_buffer("projected_std", torch.ones(projection))
            self.dropout = nn.Dropout(TEXT_PROJECTION_DROPOUT)
        width = projection + ITEMS if projection else in_dim
        self.net = nn.Sequential(nn.Linear(width, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.norm = nn.LayerNorm(d_model)

    def fit_projection(
        self, idf: torch.Tensor, components: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        """Set the TF-IDF weights `[counts]`, LSA basis `[counts, projection]` and the projected vectors'
        mean and std `[projection]` (see `train.char_lsa`)."""
        with torch.no_grad():
            self.idf.copy_(idf)
            self.components.copy_(components)
            self.projected_mean.copy_(mean)
            self.projected_std.copy_(std.clamp(min=1e-6))

    def project(self, counts: torch.Tensor) -> torch.Tensor:
        """`[batch, counts]` n-gram counts → `[batch, projection]` standardised LSA coordinates."""
        weighted = counts * self.idf
        unit = weighted / weighted.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return (unit @ self.components - self.projected_mean) / self.projected_std

    def forward(self, text: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """`[batch, in_dim]` → `[batch, d_model]` (`present` is not needed: absent rows are masked later)."""
        if self.projection:
            text = self.dropout(torch.cat([self.project(text[:, :-ITEMS]), text[:, -ITEMS:]], dim=-1))
        return self.norm(self.net(text))
