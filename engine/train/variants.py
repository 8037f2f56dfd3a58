"""Model and data variants for the ablations and the single-modality baselines of the evaluation.

- `restrict(sessions, modalities)`: hide modalities from every sentence (audio-only, text-only runs); a
  sentence left with no modality is removed (counted by `removed_sentences`).
- `MeanPoolScreeningModel`: the session-level Mamba replaced by the running mean of the fused sentence
  vectors (the "no recurrent session state" ablation).
- `forward_only`: the sentence encoders' backward scans switched off (the "unidirectional" ablation).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from depscreen.engine.model.encoders import BiMamba
from depscreen.engine.model.screening import EncodedSentences, ModelConfig, ScreeningModel, SessionOutput
from depscreen.engine.train.sessions import LabelledSession

MODALITY_SETS = {"audio": ("audio",), "text": ("text",), "audio+text": ("audio", "text")}
"""The modality subsets evaluated by `depscreen train --modalities`."""


def restrict(sessions: list[LabelledSession], modalities: tuple[str, ...]) -> list[LabelledSession]:
    """The sessions with every modality outside `modalities` removed from their sentences."""
    restricted = []
    for session in sessions:
        sentences = []
        for s in session.sentences:
            s = replace(
                s,
                audio=s.audio if "audio" in modalities else np.zeros((0, s.audio.shape[1]), np.float32),
                video=s.video if "video" in modalities else np.zeros((0, s.video.shape[1]), np.float32),
                text=s.text if "text" in modalities else None,
            )
            if any(s.available):
                sentences.append(replace(s, index=len(sentences)))
        if sentences:
            restricted.append(replace(session, sentences=sentences))
    return restricted


def removed_sentences(before: list[LabelledSession], after: list[LabelledSession]) -> int:
    """How many sentences `restrict` removed."""
    return sum(len(s.sentences) for s in before) - sum(len(s.sentences) for s in after)


class MeanPoolScreeningModel(ScreeningModel):
    """Ablation: the screening head reads the running mean of the fused sentence vectors (no session Mamba).

    Only the offline full scan is defined; it is what cross-validation scores.
    """

    def forward_session(self, sentences: EncodedSentences) -> SessionOutput:
        count = torch.arange(1, sentences.fused.shape[1] + 1, device=sentences.fused.device).view(1, -1, 1)
        h = torch.cumsum(sentences.fused, dim=1) / count
        available = sentences.available.to(h.dtype)
        modality_sum = torch.cumsum(sentences.tokens * available.unsqueeze(-1), dim=1)
        return self._heads(self.final_norm(h), modality_sum, torch.cumsum(available, dim=1))


class _ForwardOnlyMamba(BiMamba):
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return x + self.forward_scan(self.norm(x))


def forward_only(config: ModelConfig) -> ScreeningModel:
    """Ablation: a screening model whose sentence encoders scan forwards only."""
    model = ScreeningModel(config)
    for module in model.modules():
        if type(module) is BiMamba:
            module.__class__ = _ForwardOnlyMamba
    return model
