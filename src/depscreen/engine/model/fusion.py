"""Gated cross-modal fusion: modalities attend to each other, then a gate weights the available ones.

Missing modalities are masked out of the attention keys and the gate (their weight is exactly 0), never
zero-filled silently. The gate sees each modality's vector and its signal quality, and its weights are what
the server reports as modality confidences.
"""

from __future__ import annotations

import torch
from torch import nn

from depscreen.engine.modalities import MODALITIES


class GatedFusion(nn.Module):
    """Cross-attention over the modality tokens of a sentence, then a quality-aware softmax gate."""

    def __init__(self, d_model: int, heads: int = 4) -> None:
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.zeros(len(MODALITIES), d_model))
        self.attention = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.gate = nn.Linear(d_model + 1, 1)

    def forward(
        self, tokens: torch.Tensor, available: torch.Tensor, quality: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fuse `[n, M, d]` modality vectors given `[n, M]` availability (bool) and quality (0..1), M the number
        of `MODALITIES`.

        Returns the fused sentence vector `[n, d]`, the gate weights `[n, M]` (0 where unavailable, rows sum
        to 1) and the attended modality tokens `[n, M, d]`. Every row needs at least one available modality.
        """
        if not bool(available.any(dim=1).all()):
            raise ValueError("every sentence needs at least one available modality")
        h = tokens + self.modality_embedding
        attended, _ = self.attention(h, h, h, key_padding_mask=~available, need_weights=False)
        h = self.norm(h + attended)
        logits = self.gate(torch.cat([h, quality.unsqueeze(-1)], dim=-1)).squeeze(-1)
        weights = torch.softmax(logits.masked_fill(~available, float("-inf")), dim=-1)
        fused = (weights.unsqueeze(-1) * h).sum(1)
        return fused, weights, h
