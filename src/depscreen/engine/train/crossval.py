"""Seeded, stratified k-fold cross-validation of the screening model, and the final fit on all sessions.

For each outer fold, the other folds are the training folds. A stratified `validation_share` of them is
held out of training: early stopping and temperature scaling use it, and the decision threshold is the one
with the best F1 on its calibrated estimates. The test fold is touched only to score it. Feature
normalisation is measured on the training part of the fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from depscreen.engine.modalities import MODALITY_NAMES
from depscreen.engine.model.screening import ModelConfig, ScreeningModel
from depscreen.engine.train.metrics import auroc, best_f1_threshold, logistic
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.stats import FeatureStats, measured_stats
from depscreen.engine.train.trainer import (
    ModelFactory,
    Progress,
    TrainSettings,
    final_outputs,
    fit_temperature,
    prefix_logits,
    train_model,
)

VALIDATION_SHARE = 0.2
"""Share of the training folds held out for early stopping, calibration and the threshold."""


def stratified_folds(labels: list[int], folds: int, seed: int) -> list[np.ndarray]:
    """`folds` disjoint index arrays covering every session, each with about the same share of positives."""
    labels_array = np.asarray(labels, dtype=int)
    if folds < 2 or min(np.bincount(labels_array, minlength=2)) < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} sessions of each class")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels_array), dtype=int)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels_array == value))
        offset = int(rng.integers(folds))
        assignment[members] = (np.arange(len(members)) + offset) % folds
    return [np.flatnonzero(assignment == k) for k in range(folds)]


def split_validation(
    sessions: list[LabelledSession], share: float, seed: int
) -> tuple[list[LabelledSession], list[LabelledSession]]:
    """(training, validation): a stratified `share` of the sessions, at least one of each class, held out."""
    rng = np.random.default_rng(seed)
    labels = np.array([s.label for s in sessions])
    held = []
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        held += list(members[: max(1, round(share * len(members)))])
    held_set = set(held)
    return [s for i, s in enumerate(sessions) if i not in held_set], [sessions[i] for i in sorted(held_set)]


@dataclass(frozen=True)
class FittedModel:
    model: ScreeningModel
    temperature: float
    threshold: float
    epochs: int


def fit(
    sessions: list[LabelledSession],
    video_stats: FeatureStats,
    config: ModelConfig,
    settings: TrainSettings,
    factory: ModelFactory = ScreeningModel,
    progress: Progress | None = None,
    faces: np.ndarray | None = None,
) -> FittedModel:
    """Train with early stopping on a held-out share, calibrate on it, choose the threshold on it."""
    train, validation = split_validation(sessions, VALIDATION_SHARE, settings.seed)
    epochs = []

    def track(epoch: int, loss: float, validation_loss: float | None) -> None:
        epochs.append(epoch)
        if progress:
            progress(epoch, loss, validation_loss)

    model = train_model(
        train,
        measured_stats(train, video_stats),
        config,
        settings,
        track,
        validation=validation,
        factory=factory,
        faces=faces,
    )
    temperature = fit_temperature(model, validation)
    probabilities = torch.sigmoid(torch.tensor([p[-1] for p in prefix_logits(model, validation)]) / temperature)
    threshold = best_f1_threshold(np.array([s.label for s in validation]), probabilities.numpy())
    return FittedModel(model, temperature, threshold, len(epochs))


@dataclass
class CrossValidation:
    """Out-of-fold estimates of every session."""

    session_ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    """Calibrated estimate after the last sentence."""
    prefix_probabilities: list[np.ndarray]
    """Calibrated estimate after each sentence."""
    thresholds: np.ndarray
    """The threshold of the fold each session was tested in (chosen on that fold's training folds)."""
    folds: np.ndarray
    epochs: list[int]
    modality_probabilities: np.ndarray | None = None
    """`[sessions, modalities]` each per-modality head's out-of-fold estimate (0.5: modality never seen)."""
    scores: np.ndarray | None = None
    """Out-of-fold estimate of each session's questionnaire score (models with a score head)."""
    true_scores: np.ndarray | None = None
    """The sessions' own scores, where `scores` is set."""
    training_mean_scores: np.ndarray | None = None
    """The mean score of each session's training folds: the error of this constant is the reference."""

    def head_aurocs(self) -> dict[str, float]:
        """Out-of-fold AUROC of the fused estimate and of each per-modality head whose modality some session
        had (`MODALITIES` names)."""
        heads = {"fused": round(auroc(self.labels, self.probabilities), 4)}
        if self.modality_probabilities is not None:
            for i, name in enumerate(MODALITY_NAMES):
                column = self.modality_probabilities[:, i]
                if (column != 0.5).any():
                    heads[name] = round(auroc(self.labels, column), 4)
        return heads

    def score_error(self) -> dict[str, float] | None:
        """Out-of-fold MAE and RMSE of the score head, beside those of predicting the training folds' mean
        score; None without a score head."""
        if self.scores is None:
            return None
        error, reference = self.scores - self.true_scores, self.training_mean_scores - self.true_scores
        return {
            "mae": round(float(np.abs(error).mean()), 3),
            "rmse": round(float(np.sqrt((error**2).mean())), 3),
            "training_mean_mae": round(float(np.abs(reference).mean()), 3),
            "training_mean_rmse": round(float(np.sqrt((reference**2).mean())), 3),
        }


def cross_validate(
    sessions: list[LabelledSession],
    video_stats: FeatureStats,
    config: ModelConfig,
    settings: TrainSettings,
    folds: int = 5,
    factory: ModelFactory = ScreeningModel,
    on_fold: Callable[[int, FittedModel], None] | None = None,
    progress: Progress | None = None,
    faces: np.ndarray | None = None,
) -> CrossValidation:
    """Stratified k-fold cross-validation (see the module docstring); folds are seeded by `settings.seed`."""
    labels = np.array([s.label for s in sessions])
    result = CrossValidation(
        session_ids=[s.session_id for s in sessions],
        labels=labels,
        probabilities=np.zeros(len(sessions)),
        prefix_probabilities=[np.zeros(0)] * len(sessions),
        thresholds=np.zeros(len(sessions)),
        folds=np.zeros(len(sessions), dtype=int),
        epochs=[],
    )
    for k, test in enumerate(stratified_folds(labels.tolist(), folds, settings.seed)):
        test_set = set(test.tolist())
        fitted = fit(
            [s for i, s in enumerate(sessions) if i not in test_set],
            video_stats,
            config,
            settings,
            factory,
            progress,
            faces,
        )
        test_sessions = [sessions[i] for i in test]
        logits = prefix_logits(fitted.model, test_sessions)
        outputs = final_outputs(fitted.model, test_sessions)
        if result.modality_probabilities is None:
            result.modality_probabilities = np.full((len(sessions), outputs.modality_probability.shape[1]), 0.5)
        result.modality_probabilities[test] = outputs.modality_probability
        if outputs.score is not None:
            if result.scores is None:
                result.scores, result.training_mean_scores = np.zeros(len(sessions)), np.zeros(len(sessions))
                result.true_scores = np.array([s.score for s in sessions], dtype=float)
            result.scores[test] = outputs.score
            result.training_mean_scores[test] = np.mean([s.score for i, s in enumerate(sessions) if i not in test_set])
        for i, prefix in zip(test, logits, strict=True):
            probabilities = logistic(prefix / fitted.temperature)
            result.prefix_probabilities[i] = probabilities
            result.probabilities[i] = probabilities[-1]
            result.thresholds[i] = fitted.threshold
            result.folds[i] = k
        result.epochs.append(fitted.epochs)
        if on_fold:
            on_fold(k, fitted)
    return result
