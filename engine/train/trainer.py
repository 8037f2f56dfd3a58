"""Trainer: fits the screening model on labelled sessions, calibrates it, and reports held-out AUROC.

Every prefix of a session is a training example (the live server reports an estimate after every sentence),
so the loss is taken at each sentence, weighted towards the later ones. Modality dropout hides video and
text at random so any subset of modalities works at inference; audio is never hidden (every sentence has
audio: the segmenter found it in the audio).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from depscreen.engine.model.screening import EncodedSentences, ModelConfig, ScreeningModel
from depscreen.engine.runtime.screener import collate
from depscreen.engine.train.synthetic import FeatureStats, SyntheticSession


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings with their defaults."""

    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    modality_dropout: float = 0.3
    """Probability of hiding video, and separately text, from a training sentence."""
    auxiliary_weight: float = 0.3
    """Weight of the per-modality heads' loss (multi-task) beside the main head's."""
    seed: int = 0


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties count half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = scores[labels], scores[~labels]
    if not len(positives) or not len(negatives):
        raise ValueError("AUROC needs at least one positive and one negative session")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def _encode_sessions(
    model: ScreeningModel, sessions: list[SyntheticSession], dropout: float, generator: torch.Generator | None
) -> tuple[EncodedSentences, torch.Tensor]:
    """Encode every sentence of the sessions in one batch and lay them out as `[sessions, max_k, ...]`."""
    device = model.head.weight.device
    flat = [sentence for session in sessions for sentence in session.sentences]
    batch = collate(flat, model.config, device)
    if dropout > 0:
        hide = torch.rand(batch.available.shape, generator=generator) < dropout
        hide[:, 0] = False
        batch.available = batch.available & ~hide.to(device)
        batch.quality = batch.quality * batch.available
    encoded = model.encode(batch)
    k_max = max(len(s.sentences) for s in sessions)
    valid = torch.zeros(len(sessions), k_max, dtype=torch.bool, device=device)
    index = torch.zeros(len(sessions), k_max, dtype=torch.long, device=device)
    offset = 0
    for i, session in enumerate(sessions):
        k = len(session.sentences)
        valid[i, :k] = True
        index[i, :k] = torch.arange(offset, offset + k)
        index[i, k:] = offset + k - 1
        offset += k

    def layout(x: torch.Tensor) -> torch.Tensor:
        return x[index] * valid.view(*valid.shape, *([1] * (x.dim() - 1))).to(x.dtype)

    sessions_encoded = EncodedSentences(
        fused=layout(encoded.fused),
        tokens=layout(encoded.tokens),
        weights=layout(encoded.weights),
        available=encoded.available[index] & valid.unsqueeze(-1),
    )
    return sessions_encoded, valid


def train_model(
    sessions: list[SyntheticSession],
    stats: FeatureStats,
    config: ModelConfig | None = None,
    settings: TrainSettings = TrainSettings(),
    progress: Callable[[int, float], None] | None = None,
) -> ScreeningModel:
    """Train a model from scratch on labelled sessions; `progress(epoch, mean_loss)` after each epoch."""
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = ScreeningModel(config or ModelConfig())
    model.set_feature_stats(
        (torch.as_tensor(stats.audio_mean, dtype=torch.float32), torch.as_tensor(stats.audio_std, dtype=torch.float32)),
        (torch.as_tensor(stats.video_mean, dtype=torch.float32), torch.as_tensor(stats.video_std, dtype=torch.float32)),
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    labels = torch.tensor([s.label for s in sessions], dtype=torch.float32)
    positive_weight = (1 - labels.mean()) / labels.mean().clamp(min=1e-6)
    order = list(range(len(sessions)))
    for epoch in range(settings.epochs):
        model.train()
        random.shuffle(order)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            chosen = order[start : start + settings.batch_size]
            encoded, valid = _encode_sessions(
                model, [sessions[i] for i in chosen], settings.modality_dropout, generator
            )
            output = model.forward_session(encoded)
            target = labels[chosen].unsqueeze(1).expand_as(output.logit)
            position = torch.cumsum(valid.float(), dim=1)
            weight = valid.float() * position / position.max()
            class_weight = torch.where(target > 0.5, positive_weight, torch.ones_like(target))
            main = F.binary_cross_entropy_with_logits(
                output.logit, target, weight=weight * class_weight, reduction="sum"
            )
            seen = (torch.cumsum(encoded.available.float(), dim=1) > 0) & valid.unsqueeze(-1)
            auxiliary = F.binary_cross_entropy_with_logits(
                output.modality_logit,
                target.unsqueeze(-1).expand_as(output.modality_logit),
                weight=seen.float() * class_weight.unsqueeze(-1),
                reduction="sum",
            )
            loss = (main + settings.auxiliary_weight * auxiliary) / weight.sum()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            losses.append(float(loss.detach()))
        if progress:
            progress(epoch, float(np.mean(losses)))
    model.eval()
    return model


@torch.no_grad()
def session_logits(model: ScreeningModel, sessions: list[SyntheticSession]) -> torch.Tensor:
    """Uncalibrated logit of each session after its last sentence."""
    model.eval()
    logits = []
    for start in range(0, len(sessions), 64):
        chunk = sessions[start : start + 64]
        encoded, valid = _encode_sessions(model, chunk, 0.0, None)
        output = model.forward_session(encoded)
        last = valid.sum(1) - 1
        logits.append((output.logit * model.temperature)[torch.arange(len(chunk)), last])
    return torch.cat(logits)


def fit_temperature(model: ScreeningModel, sessions: list[SyntheticSession]) -> float:
    """Temperature scaling on held-out sessions: one scalar minimising the negative log-likelihood."""
    logits = session_logits(model, sessions)
    labels = torch.tensor([s.label for s in sessions], dtype=torch.float32)
    log_t = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    temperature = float(log_t.exp().clamp(0.05, 20.0))
    with torch.no_grad():
        model.temperature.fill_(temperature)
    return temperature
