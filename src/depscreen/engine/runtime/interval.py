"""The estimate's interval: label-conditional split-conformal bounds, binned by evidence, fitted on held-out
estimates in training and applied to every live estimate.

Conformity scores are the residuals of held-out estimates (out-of-fold in cross-validation) against the
session's label, at every sentence prefix: `p` for a session labelled 0, `1 - p` for one labelled 1. Per bin
of the evidence measure and per label, the bound is the conformal quantile of those scores at `level`, and the
interval around an estimate `p` is `[p - q0, p + q1]` clipped to [0, 1]. So, at the nominal level, the
interval of a session that screens negative reaches 0 and that of one that screens positive reaches 1: an
interval that excludes 1 rules a positive out at that level, and the more the estimate separates the
classes at a given evidence, the narrower the interval. Bounds never widen as evidence grows (a bin's bounds
are at least those of every bin above it, which only makes the lower-evidence intervals more conservative).

Before `ENOUGH_SPEECH_S` seconds of usable speech, and for a checkpoint without a calibration, the interval is
the whole range [0, 1] ("not enough speech yet", or "no interval calibration").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INTERVAL_LEVEL = 0.9
"""Nominal coverage: the share of sessions of each label whose interval contains that label (0 or 1)."""
ENOUGH_SPEECH_S = 5.0
"""Seconds of usable speech (speech seconds x audio quality: about 10 s of speech at 15 dB SNR) before an
estimate is more than "not enough speech yet"."""
MAX_BINS = 5
"""At most this many evidence bins."""
MIN_BIN_SCORES = 20
"""Each evidence bin holds at least this many held-out prefix estimates of each label."""

WHOLE_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class IntervalCalibration:
    """Per evidence bin, the conformal bounds below (`negative`) and above (`positive`) an estimate."""

    level: float
    evidence_edges: list[float]
    """Lower evidence edge of each bin, ascending; the first bin also takes anything below its edge."""
    negative: list[float]
    """Per bin: how far below the estimate the interval reaches (quantile of label-0 sessions' estimates)."""
    positive: list[float]
    """Per bin: how far above it reaches (quantile of label-1 sessions' 1 - estimate)."""
    sessions: int
    prefixes: int

    def interval(self, probability: float, evidence: float) -> tuple[float, float]:
        """[low, high] around `probability` at `evidence`; the whole range for a value that is not a number."""
        if not (math.isfinite(probability) and math.isfinite(evidence)):
            return WHOLE_RANGE
        b = max(0, int(np.searchsorted(self.evidence_edges, evidence, side="right")) - 1)
        return max(0.0, probability - self.negative[b]), min(1.0, probability + self.positive[b])


def interval_for(
    calibration: IntervalCalibration | None, probability: float, evidence: float, usable_speech_s: float
) -> tuple[float, float]:
    """The interval of an estimate: calibrated once there is enough speech, the whole range before or without
    a calibration."""
    if calibration is None or not usable_speech_s >= ENOUGH_SPEECH_S:
        return WHOLE_RANGE
    return calibration.interval(probability, evidence)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal bound: the ceil((n + 1) level)-th smallest score, 1 (everything) when n is too small."""
    rank = math.ceil((len(scores) + 1) * level)
    return 1.0 if rank > len(scores) else float(np.sort(scores)[rank - 1])


def fit_interval(
    probabilities: list[np.ndarray],
    evidence: list[np.ndarray],
    usable_speech_s: list[np.ndarray],
    labels: np.ndarray,
    level: float = INTERVAL_LEVEL,
) -> IntervalCalibration:
    """Fit the bounds from held-out estimates: per session (label `labels[i]`), the estimate, evidence and
    usable speech after each sentence. Only prefixes with enough speech count. ValueError when there are fewer
    than `MIN_BIN_SCORES` such prefixes of either label."""
    p, e, y = _prefixes(probabilities, evidence, usable_speech_s, labels)
    if min((y == 0).sum(), (y == 1).sum()) < MIN_BIN_SCORES:
        raise ValueError(
            f"an interval calibration needs at least {MIN_BIN_SCORES} held-out estimates of each label after "
            f"{ENOUGH_SPEECH_S:g} s of usable speech; got {(y == 0).sum()} negative and {(y == 1).sum()} positive: "
            "train on more (or longer) sessions"
        )
    edges = _bin_edges(e, y)
    bins = np.searchsorted(edges, e, side="right") - 1
    negative = [conformal_quantile(p[(bins == b) & (y == 0)], level) for b in range(len(edges))]
    positive = [conformal_quantile(1 - p[(bins == b) & (y == 1)], level) for b in range(len(edges))]
    return IntervalCalibration(
        level=level,
        evidence_edges=[float(x) for x in edges],
        negative=[float(x) for x in np.maximum.accumulate(negative[::-1])[::-1]],
        positive=[float(x) for x in np.maximum.accumulate(positive[::-1])[::-1]],
        sessions=len(labels),
        prefixes=len(p),
    )


def interval_coverage(
    probabilities: list[np.ndarray],
    evidence: list[np.ndarray],
    usable_speech_s: list[np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    level: float = INTERVAL_LEVEL,
) -> dict[str, object]:
    """Empirical coverage of the interval in cross-validation: for each fold, the calibration is fitted on
    the other folds' held-out estimates and checked on this fold's (every prefix with enough speech, and each
    session's last estimate). Coverage = share whose interval contains the label; per label too. At each
    session's last estimate also the mean width and the share of intervals that rule one label out (exclude 0
    or 1)."""
    covered, covered_last, labels_prefix, labels_last, widths, evidence_all = [], [], [], [], [], []
    widths_last, rules_out_last = [], []
    for k in np.unique(folds):
        inside = folds != k
        calibration = fit_interval(
            [p for p, i in zip(probabilities, inside, strict=True) if i],
            [x for x, i in zip(evidence, inside, strict=True) if i],
            [s for s, i in zip(usable_speech_s, inside, strict=True) if i],
            labels[inside],
            level,
        )
        for i in np.flatnonzero(~inside):
            for j, (p, e, s) in enumerate(zip(probabilities[i], evidence[i], usable_speech_s[i], strict=True)):
                if s < ENOUGH_SPEECH_S:
                    continue
                low, high = calibration.interval(float(p), float(e))
                hit = low <= labels[i] <= high
                covered.append(hit)
                labels_prefix.append(labels[i])
                widths.append(high - low)
                evidence_all.append(e)
                if j == len(probabilities[i]) - 1:
                    covered_last.append(hit)
                    labels_last.append(labels[i])
                    widths_last.append(high - low)
                    rules_out_last.append(low > 0.0 or high < 1.0)
    covered_a, last_a = np.array(covered), np.array(covered_last)
    y_prefix, y_last = np.array(labels_prefix), np.array(labels_last)
    widths_a, evidence_a = np.array(widths), np.array(evidence_all)
    quartiles = np.quantile(evidence_a, [0.25, 0.5, 0.75]) if len(evidence_a) else []
    groups = np.searchsorted(quartiles, evidence_a, side="right")
    return {
        "level": level,
        "enough_speech_s": ENOUGH_SPEECH_S,
        "prefixes": len(covered_a),
        "coverage": _share(covered_a),
        "coverage_by_label": {str(v): _share(covered_a[y_prefix == v]) for v in (0, 1)},
        "sessions": len(last_a),
        "coverage_last": _share(last_a),
        "coverage_last_by_label": {str(v): _share(last_a[y_last == v]) for v in (0, 1)},
        "mean_width_last": round(float(np.mean(widths_last)), 4) if widths_last else None,
        "rules_out_a_label_last": _share(np.array(rules_out_last)),
        "mean_width_by_evidence_quartile": [
            {
                "evidence_low": round(float(evidence_a[groups == g].min()), 4),
                "evidence_high": round(float(evidence_a[groups == g].max()), 4),
                "mean_width": round(float(widths_a[groups == g].mean()), 4),
            }
            for g in range(len(quartiles) + 1)
            if (groups == g).any()
        ],
    }


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if len(hits) else None


def _prefixes(
    probabilities: list[np.ndarray], evidence: list[np.ndarray], usable_speech_s: list[np.ndarray], labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every prefix with enough speech, flat: (estimate, evidence, label)."""
    p, e, y = [], [], []
    for session_p, session_e, session_s, label in zip(probabilities, evidence, usable_speech_s, labels, strict=True):
        keep = np.asarray(session_s) >= ENOUGH_SPEECH_S
        p.append(np.asarray(session_p, dtype=float)[keep])
        e.append(np.asarray(session_e, dtype=float)[keep])
        y.append(np.full(int(keep.sum()), int(label)))
    return np.concatenate(p), np.concatenate(e), np.concatenate(y)


def _bin_edges(evidence: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Evidence quantile edges for the most bins (up to `MAX_BINS`) that each hold `MIN_BIN_SCORES` of each
    label."""
    for count in range(MAX_BINS, 1, -1):
        edges = np.unique(np.quantile(evidence, np.arange(count) / count))
        edges[0] = 0.0
        bins = np.searchsorted(edges, evidence, side="right") - 1
        if all(((bins == b) & (labels == v)).sum() >= MIN_BIN_SCORES for b in range(len(edges)) for v in (0, 1)):
            return edges
    return np.zeros(1)
