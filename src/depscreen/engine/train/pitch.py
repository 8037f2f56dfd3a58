"""The pitch check: does a cross-validated estimate follow who is speaking (median pitch) rather than how?

On EATD's training split median F0 alone separates the labels (higher-pitched volunteers are more often
labelled depressed) while no such effect holds on other volunteers, so an estimate that is mostly the
speaker's pitch does not transfer. For out-of-fold estimates this reports: the AUROC of median F0 itself, the
AUROC of the estimate within each pitch group (a session is "high" when its median F0 is above the median of
its fold's training sessions: the split is made without the test fold), and the correlation of the estimate
with median F0. Median F0 is the median of the eGeMAPS pitch descriptor (semitones from 27.5 Hz) over a
session's voiced frames.
"""

from __future__ import annotations

import numpy as np

from depscreen.engine.features.audio import PITCH
from depscreen.engine.train.metrics import auroc
from depscreen.engine.train.sessions import LabelledSession

MIN_GROUP_SESSIONS = 4
"""A pitch group with fewer sessions, or without both labels, gets no AUROC (None)."""


def median_f0(session: LabelledSession) -> float:
    """Median pitch (semitones from 27.5 Hz) over the session's voiced frames; NaN when none is voiced."""
    frames = [s.audio[:, PITCH] for s in session.sentences if s.audio is not None and len(s.audio)]
    pitch = np.concatenate(frames) if frames else np.zeros(0)
    voiced = pitch[pitch > 0]
    return float(np.median(voiced)) if len(voiced) else float("nan")


def pitch_check(
    f0: np.ndarray, labels: np.ndarray, estimates: dict[str, np.ndarray], folds: np.ndarray
) -> dict[str, object]:
    """The check for sessions with median pitch `f0`, `labels`, the out-of-fold `estimates` by name (the fused
    estimate, a modality head's) and the fold each session was tested in. Sessions without voiced frames
    are left out and counted."""
    known = ~np.isnan(f0)
    f0, labels, folds = f0[known], labels[known], folds[known]
    high = np.zeros(len(f0), dtype=bool)
    for fold in np.unique(folds):
        high[folds == fold] = f0[folds == fold] > np.median(f0[folds != fold] if (folds != fold).any() else f0)
    report: dict[str, object] = {
        "sessions": int(known.sum()),
        "without_voiced_frames": int((~known).sum()),
        "median_f0_auroc": _auroc_or_none(labels, f0),
        "groups": {"low": int((~high).sum()), "high": int(high.sum())},
        "positives": {"low": int(labels[~high].sum()), "high": int(labels[high].sum())},
    }
    for name, values in estimates.items():
        values = np.asarray(values, dtype=np.float64)[known]
        correlation = float(np.corrcoef(values, f0)[0, 1]) if values.std() and f0.std() else None
        report[name] = {
            "auroc_low_pitch": _auroc_or_none(labels[~high], values[~high]),
            "auroc_high_pitch": _auroc_or_none(labels[high], values[high]),
            "corr_with_median_f0": None if correlation is None else round(correlation, 4),
        }
    return report


def _auroc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if len(labels) < MIN_GROUP_SESSIONS or labels.all() or not labels.any():
        return None
    return round(auroc(labels, scores), 4)
