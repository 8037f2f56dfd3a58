"""Model and data variants for the ablations and the single-modality baselines of the evaluation.

- `restrict(sessions, modalities)`: hide modalities from every sentence (audio-only, text-only runs); a
  sentence left with no modality is removed (counted by `removed_sentences`).
- `MeanPoolScreeningModel`: the session-level Mamba replaced by the running mean of the fused sentence
  vectors (the "no recurrent session state" ablation).
- `forward_only`: the sentence encoders' backward scans switched off (the "unidirectional" ablation).
- `speaker_normalised`: audio descriptors normalised by the session's own running statistics.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from depscreen.engine.modalities import MODALITY_NAMES, modality
from depscreen.engine.model.encoders import BiMamba
from depscreen.engine.model.screening import EncodedSentences, ModelConfig, ScreeningModel, ScreeningOutput
from depscreen.engine.train.sessions import LabelledSession

MODALITY_SETS = {"audio": ("audio",), "text": ("text",), "audio+text": ("audio", "text")}
"""The modality subsets `depscreen train --dataset ... --experiments` cross-validates (`study.EXPERIMENTS`)."""


def restrict(sessions: list[LabelledSession], modalities: tuple[str, ...]) -> list[LabelledSession]:
    """The sessions with every modality outside `modalities` removed from their sentences."""
    hidden = [modality(name) for name in MODALITY_NAMES if name not in modalities]
    restricted = []
    for session in sessions:
        sentences = []
        for s in session.sentences:
            s = replace(s, **{m.name: m.absent(_width(m.values(s))) for m in hidden})
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

    def forward_session(self, sentences: EncodedSentences) -> ScreeningOutput:
        count = torch.arange(1, sentences.fused.shape[1] + 1, device=sentences.fused.device).view(1, -1, 1)
        h = torch.cumsum(sentences.fused, dim=1) / count
        available = sentences.available.to(h.dtype)
        modality_sum = torch.cumsum(sentences.tokens * available.unsqueeze(-1), dim=1)
        return self._heads(self.final_norm(h), modality_sum, torch.cumsum(available, dim=1))


def forward_only(config: ModelConfig) -> ScreeningModel:
    """Ablation: a screening model whose sentence encoders scan forwards only (`BiMamba.bidirectional` off)."""
    model = ScreeningModel(config)
    for module in model.modules():
        if isinstance(module, BiMamba):
            module.bidirectional = False
    return model


def speaker_normalised(config: ModelConfig) -> ScreeningModel:
    """Variant: the model with speaker-normalised audio (`ModelConfig.speaker_normalisation`) switched on."""
    return ScreeningModel(replace(config, speaker_normalisation=True))


def _width(values: np.ndarray | None) -> int:
    return values.shape[-1] if values is not None else 0
