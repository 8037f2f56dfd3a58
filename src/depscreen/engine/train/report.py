"""Evaluation report figures (PNG): ROC curves, reliability diagram, estimate vs sentences heard, attribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from depscreen.engine.train.interpret import Attribution
from depscreen.engine.train.metrics import auroc

RELIABILITY_BINS = 5
"""Few sessions: wide bins, each drawn with its session count."""


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct threshold, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.unique(scores)[::-1]
    tpr = [0.0] + [float((scores[labels] >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((scores[~labels] >= t).mean()) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One ROC curve per name → (labels, scores)."""
    figure = Figure(figsize=(5.5, 5))
    axis = figure.subplots()
    for name, (labels, scores) in curves.items():
        fpr, tpr = roc_points(labels, scores)
        axis.plot(fpr, tpr, label=f"{name} (AUROC {auroc(labels, scores):.2f})", drawstyle="steps-post")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axis.legend(loc="lower right", fontsize=8)
    _save(figure, path)


def plot_reliability(labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    """Observed positive rate against mean estimate per probability bin (the diagonal is perfect calibration)."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    which = np.clip((probabilities * RELIABILITY_BINS).astype(int), 0, RELIABILITY_BINS - 1)
    figure = Figure(figsize=(5.5, 6))
    axis, counts = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    means, rates, sizes = [], [], []
    for b in range(RELIABILITY_BINS):
        inside = which == b
        if inside.any():
            means.append(probabilities[inside].mean())
            rates.append(labels[inside].mean())
            sizes.append(int(inside.sum()))
    axis.plot(means, rates, marker="o", label="model")
    for x, y, n in zip(means, rates, sizes, strict=True):
        axis.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set(ylabel="observed positive rate", title=title, xlim=(0, 1), ylim=(-0.02, 1.02))
    axis.legend(loc="upper left", fontsize=8)
    counts.hist(probabilities, bins=np.linspace(0, 1, RELIABILITY_BINS * 4 + 1), color="tab:blue", alpha=0.7)
    counts.set(xlabel="estimated probability", ylabel="sessions")
    _save(figure, path)


def plot_estimate_vs_sentences(
    labels: np.ndarray, prefix_probabilities: list[np.ndarray], path: Path, title: str
) -> None:
    """Mean estimate (± one standard error) of positive and negative sessions after k sentences, and the
    AUROC of the estimate after k sentences (sessions shorter than k keep their last estimate)."""
    labels = np.asarray(labels).astype(bool)
    longest = max(len(p) for p in prefix_probabilities)
    k_values = np.arange(1, min(longest, 30) + 1)
    at_k = np.array([[p[min(k, len(p)) - 1] for p in prefix_probabilities] for k in k_values])
    figure = Figure(figsize=(6, 6))
    axis, separation = figure.subplots(2, 1, sharex=True)
    for group, name, colour in ((labels, "depressed (label 1)", "tab:red"), (~labels, "not depressed", "tab:blue")):
        values = at_k[:, group]
        mean = values.mean(1)
        error = values.std(1) / np.sqrt(max(group.sum(), 1))
        axis.plot(k_values, mean, color=colour, label=f"{name}, n={int(group.sum())}")
        axis.fill_between(k_values, mean - error, mean + error, color=colour, alpha=0.2)
    axis.set(ylabel="estimate (out of fold)", title=title, ylim=(0, 1))
    axis.legend(fontsize=8)
    separation.plot(k_values, [auroc(labels, row) for row in at_k], color="black")
    separation.axhline(0.5, color="grey", linestyle=":")
    separation.set(xlabel="sentences heard", ylabel="AUROC after k sentences", ylim=(0.3, 1))
    separation.xaxis.get_major_locator().set_params(integer=True)
    _save(figure, path)


def plot_attribution(attribution: Attribution, path: Path, title: str) -> None:
    """Horizontal bars: PHQ-8 item similarities and the eGeMAPS descriptors that move the estimate most."""
    descriptors = sorted(attribution.descriptors.items(), key=lambda x: -abs(x[1]))[:10]
    figure = Figure(figsize=(11, 4.5))
    items_axis, audio_axis = figure.subplots(1, 2)
    for axis, pairs, name in (
        (items_axis, list(attribution.items.items()), "PHQ-8 item similarity (text)"),
        (audio_axis, descriptors, "eGeMAPS descriptors (audio), top 10"),
    ):
        names = [p[0] for p in pairs][::-1]
        values = [p[1] for p in pairs][::-1]
        axis.barh(names, values, color=["tab:red" if v > 0 else "tab:blue" for v in values])
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set(title=name, xlabel="mean gradient x input on the final logit")
        axis.tick_params(axis="y", labelsize=8)
    figure.suptitle(title + "  (red: raises the estimate when above average)", fontsize=10)
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
