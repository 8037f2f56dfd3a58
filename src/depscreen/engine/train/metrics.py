"""Screening metrics with bootstrap confidence intervals, and the trivial baselines to read them against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

ECE_BINS = 10
"""Equal-width probability bins of the expected calibration error."""
BOOTSTRAP_SAMPLES = 2000
"""Resamples (of whole sessions, stratified by label) behind each 95% interval."""


def logistic(logits: np.ndarray) -> np.ndarray:
    """The logistic sigmoid 1 / (1 + e^-x), element-wise: a probability from a logit."""
    return 1 / (1 + np.exp(-logits))


def platt_scaling(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(scale, shift) of a class-balanced Platt scaling: the logistic regression of `labels` on the logits `[N]`,
    to fold into a head as `scale * logit + shift`."""
    platt = LogisticRegression(class_weight="balanced").fit(np.asarray(logits)[:, None], labels)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


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


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean probability| over equal-width bins, weighted by the bins' sizes."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    which = np.clip((probabilities * bins).astype(int), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(labels[inside].mean() - probabilities[inside].mean())
    return float(error)


CLASSIFICATION_METRICS = ("f1", "precision", "recall", "accuracy", "balanced_accuracy")
"""The metrics of hard 0/1 predictions (`classification`)."""
REPORT_METRICS = (*CLASSIFICATION_METRICS, "auroc", "ece")
"""Every metric `screening_report` gives with a 95% interval, in the order reports list them."""


def classification(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """F1, precision, recall, accuracy and balanced accuracy of hard 0/1 predictions (0 where undefined)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    tp = float((labels & predicted).sum())
    fp = float((~labels & predicted).sum())
    fn = float((labels & ~predicted).sum())
    tn = float((~labels & ~predicted).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "precision": precision,
        "recall": recall,
        "accuracy": (tp + tn) / len(labels),
        "balanced_accuracy": (recall + specificity) / 2,
    }


def best_f1_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The probability threshold with the highest F1 on these (training-fold) predictions.

    Candidates are the midpoints between consecutive distinct probabilities, so every candidate splits the
    predictions: "all positive" often has the best F1 on a small held-out part (F1 = 2p / (1 + p) at positive
    share p) but is no screening decision, and a checkpoint must not carry it. Ties go to the higher threshold;
    with fewer than two distinct probabilities there is nothing to split and the threshold is 0.5.
    """
    values = np.unique(np.asarray(probabilities, dtype=np.float64))
    if len(values) < 2:
        return 0.5
    candidates = (values[1:] + values[:-1]) / 2
    scores = [classification(labels, probabilities >= t)["f1"] for t in candidates]
    best = max(scores)
    return float(max(t for t, s in zip(candidates, scores, strict=True) if s == best))


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4)}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(
    labels: np.ndarray,
    metric: Callable[[np.ndarray], float],
    seed: int = 0,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Interval:
    """`metric(indices)` on all sessions, with a 95% percentile interval over stratified session resamples."""
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
    values = []
    for _ in range(samples):
        chosen = np.concatenate([rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))]).astype(
            int
        )
        values.append(metric(chosen))
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(metric(np.arange(len(labels))), float(low), float(high))


def screening_report(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float | np.ndarray, seed: int = 0
) -> dict[str, object]:
    """All metrics with 95% CIs, beside the all-positive and majority-class baselines.

    `threshold` is one number, or one per session (cross-validation: each fold's threshold, chosen on its
    training folds).
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities >= np.asarray(threshold, dtype=np.float64)
    metrics: dict[str, Interval] = {
        name: bootstrap(labels, lambda i, name=name: classification(labels[i], predicted[i])[name], seed)
        for name in CLASSIFICATION_METRICS
    }
    metrics["auroc"] = bootstrap(labels, lambda i: auroc(labels[i], probabilities[i]), seed)
    metrics["ece"] = bootstrap(labels, lambda i: expected_calibration_error(labels[i], probabilities[i]), seed)
    majority = int(labels.mean() >= 0.5)
    baselines = {
        "all_positive": {**classification(labels, np.ones_like(labels)), "auroc": 0.5},
        "majority": {**classification(labels, np.full_like(labels, majority)), "auroc": 0.5},
    }
    return {
        "n": len(labels),
        "positives": int(labels.sum()),
        **{k: round(v.value, 4) for k, v in metrics.items()},
        "ci95": {k: v.to_dict() for k, v in metrics.items()},
        "baselines": {k: {m: round(x, 4) for m, x in v.items()} for k, v in baselines.items()},
    }
