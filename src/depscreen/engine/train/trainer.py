"""Trainer: fits the screening model on labelled sessions, with early stopping and temperature calibration.

Every prefix of a session is a training example (the live server reports an estimate after every sentence),
so the loss is taken at each sentence, weighted towards the later ones. Classes are weighted so positives
and negatives count equally. Modality dropout hides the droppable modalities (video and text) at random so
any subset works at inference; audio is never hidden (every sentence has audio: the segmenter found it there).
With validation sessions, the weights of the epoch with the lowest validation loss are kept and training
stops after `patience` epochs without improvement; the validation sessions are never trained on.

Measured on the training sessions before the first epoch: the feature normalisation, the character text
projection (`char_lsa`, when the model has one) and the score scale (when it has a score head, whose squared
error on the standardised score joins the loss at every sentence, weighted by `score_weight`).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import MODALITIES, modality_index
from depscreen.engine.model.screening import EncodedSentences, ModelConfig, ScreeningModel
from depscreen.engine.runtime.screener import collate
from depscreen.engine.train.char_lsa import fit_char_lsa, has_text, sentence_counts
from depscreen.engine.train.faces import attach_faces
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.stats import FeatureStats

ModelFactory = Callable[[ModelConfig], ScreeningModel]
"""Builds an untrained model from a config (ablations swap in a variant)."""
Progress = Callable[[int, float, float | None], None]
"""Called after each epoch with (epoch, mean training loss, validation loss or None)."""

DROPPABLE = torch.tensor([m.droppable for m in MODALITIES])
"""The modalities modality dropout may hide (`Modality.droppable`)."""
VIDEO = modality_index("video")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings with their defaults."""

    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    modality_dropout: float = 0.3
    """Probability of hiding each droppable modality (video, text) from a training sentence."""
    auxiliary_weight: float = 0.3
    """Weight of the per-modality heads' loss (multi-task) beside the main head's."""
    score_weight: float = 0.3
    """Weight of the score head's squared error (standardised score) beside the main head's loss."""
    patience: int = 0
    """Epochs without a better validation loss before training stops (0: never stop early)."""
    unlabelled_video: float = 0.0
    """Share of training sentences without video that get unrelated real faces (`faces.attach_faces`), so a
    model trained on audio-only data learns to weight video low instead of arbitrarily."""
    unlabelled_video_penalty: float = 1.0
    """Weight of the mean gate weight given to those unrelated faces, added to the loss: video that carried
    no label is pushed towards a gate weight of 0."""
    crop_frames: int = 0
    """During training, each sentence's audio is cut to a random window of at most this many LLD frames (a
    fresh window every epoch: augmentation, and a shorter scan); 0 keeps whole sentences. Never at inference."""
    seed: int = 0


def _crop(sentence: SentenceFeatures, frames: int, rng: random.Random) -> SentenceFeatures:
    if len(sentence.audio) <= frames:
        return sentence
    start = rng.randrange(len(sentence.audio) - frames + 1)
    return replace(sentence, audio=sentence.audio[start : start + frames])


def _encode_sessions(
    model: ScreeningModel,
    sessions: list[LabelledSession],
    dropout: float,
    generator: torch.Generator | None,
    crop_frames: int = 0,
    rng: random.Random | None = None,
    faces: tuple[np.ndarray, float] | None = None,
) -> tuple[EncodedSentences, torch.Tensor]:
    """Encode every sentence of the sessions in one batch and lay them out as `[sessions, max_k, ...]`.

    Training only: `crop_frames` cuts audio windows, `faces` = (landmarks, share) attaches unlabelled faces.
    """
    device = model.head.weight.device
    rng = rng or random.Random(0)
    flat = [sentence for session in sessions for sentence in session.sentences]
    if crop_frames:
        flat = [_crop(sentence, crop_frames, rng) for sentence in flat]
    if faces is not None:
        landmarks, share = faces
        flat = [attach_faces(s, landmarks, rng) if not len(s.video) and rng.random() < share else s for s in flat]
    batch = collate(flat, model.config, device)
    if dropout > 0:
        hide = (torch.rand(batch.available.shape, generator=generator) < dropout) & DROPPABLE
        keep = batch.available & ~hide.to(device)
        keep[~keep.any(1)] = batch.available[~keep.any(1)]
        batch.available = keep
        batch.quality = batch.quality * batch.available
    lengths = [len(s.sentences) for s in sessions]
    return layout_sessions(model.encode_sessions(batch, lengths), lengths)


def layout_sessions(encoded: EncodedSentences, lengths: list[int]) -> tuple[EncodedSentences, torch.Tensor]:
    """Sentences encoded flat, session after session, laid out as `[sessions, max_k, ...]` (zero padded),
    with the `[sessions, max_k]` mask of real sentences."""
    device = encoded.fused.device
    valid = torch.zeros(len(lengths), max(lengths), dtype=torch.bool, device=device)
    index = torch.zeros(len(lengths), max(lengths), dtype=torch.long, device=device)
    offset = 0
    for i, k in enumerate(lengths):
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
    sessions: list[LabelledSession],
    stats: FeatureStats,
    config: ModelConfig | None = None,
    settings: TrainSettings = TrainSettings(),
    progress: Progress | None = None,
    validation: list[LabelledSession] | None = None,
    factory: ModelFactory = ScreeningModel,
    faces: np.ndarray | None = None,
) -> ScreeningModel:
    """Train a model from scratch on labelled sessions (see the module docstring for early stopping);
    `faces`: unlabelled landmarks for `settings.unlabelled_video`."""
    if not sessions:
        raise ValueError("no training sessions")
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model, scores = _untrained_model(sessions, stats, config, settings, factory)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    labels = torch.tensor([s.label for s in sessions], dtype=torch.float32)
    positive_weight = (1 - labels.mean()) / labels.mean().clamp(min=1e-6)
    order = list(range(len(sessions)))
    best_loss, best_state, stale = float("inf"), None, 0
    for epoch in range(settings.epochs):
        model.train()
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            chosen = order[start : start + settings.batch_size]
            encoded, valid = _encode_sessions(
                model,
                [sessions[i] for i in chosen],
                settings.modality_dropout,
                generator,
                settings.crop_frames,
                rng,
                (faces, settings.unlabelled_video) if faces is not None and settings.unlabelled_video else None,
            )
            batch_scores = scores[chosen] if scores is not None else None
            loss = _batch_loss(model, encoded, valid, labels[chosen], batch_scores, positive_weight, settings)
            if faces is not None and settings.unlabelled_video:
                video = encoded.available[..., VIDEO]
                loss = loss + settings.unlabelled_video_penalty * (
                    encoded.weights[..., VIDEO] * video
                ).sum() / video.sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            losses.append(float(loss.detach()))
        validation_loss = _validation_loss(model, validation, float(positive_weight)) if validation else None
        if progress:
            progress(epoch, float(np.mean(losses)), validation_loss)
        if validation_loss is not None:
            if validation_loss < best_loss:
                best_loss, best_state, stale = validation_loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if settings.patience and stale >= settings.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


def _untrained_model(
    sessions: list[LabelledSession],
    stats: FeatureStats,
    config: ModelConfig | None,
    settings: TrainSettings,
    factory: ModelFactory,
) -> tuple[ScreeningModel, torch.Tensor | None]:
    """A fresh model with the training set's feature statistics, text projection and score scale, and the
    sessions' questionnaire scores (None without a score head; ValueError when the head has sessions without)."""
    model = factory(config or ModelConfig())
    model.set_feature_stats(stats.tensors())
    if model.config.text_projection and has_text(sessions):
        lsa = fit_char_lsa(sentence_counts(sessions), model.config.text_projection, settings.seed)
        model.text_encoder.fit_projection(*lsa.tensors())
    scores = None
    if model.config.score_head:
        if any(s.score is None for s in sessions):
            raise ValueError(
                "the model has a score head but some training sessions have no questionnaire score: train "
                "without a score head (ModelConfig.score_head False)"
            )
        scores = torch.tensor([s.score for s in sessions], dtype=torch.float32)
        model.set_score_stats(float(scores.mean()), float(scores.std()))
    return model, scores


def _batch_loss(
    model: ScreeningModel,
    encoded: EncodedSentences,
    valid: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor | None,
    positive_weight: torch.Tensor,
    settings: TrainSettings,
) -> torch.Tensor:
    """A batch's class-weighted loss: the estimate after every sentence (later ones weigh more), each modality's
    auxiliary estimate once it has been seen, and the score head's standardised error."""
    output = model.forward_session(encoded)
    target = labels.unsqueeze(1).expand_as(output.logit)
    position = torch.cumsum(valid.float(), dim=1)
    weight = valid.float() * position / position.max()
    class_weight = torch.where(target > 0.5, positive_weight, torch.ones_like(target))
    main = F.binary_cross_entropy_with_logits(output.logit, target, weight=weight * class_weight, reduction="sum")
    seen = (torch.cumsum(encoded.available.float(), dim=1) > 0) & valid.unsqueeze(-1)
    auxiliary = F.binary_cross_entropy_with_logits(
        output.modality_logit,
        target.unsqueeze(-1).expand_as(output.modality_logit),
        weight=seen.float() * class_weight.unsqueeze(-1),
        reduction="sum",
    )
    if output.score is not None:
        target_score = model.standardised_score(scores).unsqueeze(1).expand_as(output.score)
        error = (model.standardised_score(output.score) - target_score) ** 2
        main = main + settings.score_weight * (error * weight * class_weight).sum()
    return (main + settings.auxiliary_weight * auxiliary) / (weight * class_weight).sum()


def _validation_loss(model: ScreeningModel, sessions: list[LabelledSession], positive_weight: float) -> float:
    """Class-weighted log loss of the session estimates after the last sentence."""
    logits = session_logits(model, sessions)
    labels = torch.tensor([s.label for s in sessions], dtype=torch.float32)
    weight = torch.where(labels > 0.5, positive_weight, 1.0)
    return float(F.binary_cross_entropy_with_logits(logits, labels, weight=weight) / weight.mean())


@torch.no_grad()
def prefix_logits(model: ScreeningModel, sessions: list[LabelledSession]) -> list[np.ndarray]:
    """Uncalibrated logit after each sentence of each session (the offline full-scan reference)."""
    model.eval()
    result = []
    for start in range(0, len(sessions), 64):
        chunk = sessions[start : start + 64]
        encoded, valid = _encode_sessions(model, chunk, 0.0, None)
        logits = model.forward_session(encoded).logit * model.temperature
        result += [logits[i, : int(valid[i].sum())].numpy().copy() for i in range(len(chunk))]
    return result


@dataclass(frozen=True)
class FinalOutputs:
    """What a model says about each session after its last sentence, beside the screening logit."""

    modality_probability: np.ndarray
    """`[sessions, modalities]` per-modality head estimates (0.5 for a modality never seen)."""
    score: np.ndarray | None
    """`[sessions]` estimated questionnaire score; None without a score head."""


@torch.no_grad()
def final_outputs(model: ScreeningModel, sessions: list[LabelledSession]) -> FinalOutputs:
    """The per-modality estimates and the score estimate of each session after its last sentence."""
    model.eval()
    modality, score = [], []
    for start in range(0, len(sessions), 64):
        chunk = sessions[start : start + 64]
        encoded, valid = _encode_sessions(model, chunk, 0.0, None)
        output = model.forward_session(encoded)
        last = valid.sum(1) - 1
        rows = torch.arange(len(chunk))
        modality.append(output.modality_probability[rows, last].numpy())
        if output.score is not None:
            score.append(output.score[rows, last].numpy())
    return FinalOutputs(np.concatenate(modality), np.concatenate(score) if score else None)


def session_logits(model: ScreeningModel, sessions: list[LabelledSession]) -> torch.Tensor:
    """Uncalibrated logit of each session after its last sentence."""
    return torch.tensor(np.array([logits[-1] for logits in prefix_logits(model, sessions)]), dtype=torch.float32)


TEMPERATURES = torch.logspace(np.log10(0.05), np.log10(20.0), 400)
"""Temperatures that calibration chooses from (log-spaced, 0.05 to 20)."""


def best_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature in `TEMPERATURES` with the least negative log-likelihood of `labels` given `logits / T`.

    A grid, not a gradient search: L-BFGS on log T returned NaN on a cross-validation fold of EATD (whose
    validation logits separated the classes, so the likelihood rises as T falls towards 0), and stopped at a
    bound where the optimum lay inside; 400 log-spaced values cost microseconds and cannot diverge.
    """
    scaled = logits.unsqueeze(0) / TEMPERATURES.unsqueeze(1)
    losses = F.binary_cross_entropy_with_logits(scaled, labels.expand_as(scaled), reduction="none").mean(1)
    return float(TEMPERATURES[int(torch.argmin(losses))])


def fit_temperature(model: ScreeningModel, sessions: list[LabelledSession]) -> float:
    """Temperature scaling on held-out sessions (`best_temperature`); the model keeps the temperature."""
    temperature = best_temperature(
        session_logits(model, sessions), torch.tensor([s.label for s in sessions], dtype=torch.float32)
    )
    with torch.no_grad():
        model.temperature.fill_(temperature)
    return temperature
