"""The estimate's interval in training: fitted on held-out estimates at every sentence prefix, its coverage
measured fold by fold, and added to an existing checkpoint (`depscreen calibrate`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from depscreen.engine.runtime.checkpoint import load_checkpoint, save_checkpoint
from depscreen.engine.runtime.interval import IntervalCalibration, fit_interval, interval_coverage
from depscreen.engine.runtime.screener import evidence_trajectory
from depscreen.engine.train.sessions import LabelledSession


def held_out_interval(
    sessions: list[LabelledSession], prefix_probabilities: list[np.ndarray], folds: np.ndarray
) -> tuple[IntervalCalibration | None, dict[str, object]]:
    """(calibration fitted on every held-out estimate, its coverage report) from the estimates of `sessions`
    after each sentence by models that never trained on them (`folds[i]`: the fold session i was held out in;
    coverage is checked on each fold with a calibration fitted on the others). The calibration is None, and
    the report says why, when there are too few held-out estimates to fit one."""
    trajectories = [evidence_trajectory(s.sentences) for s in sessions]
    evidence = [t[0] for t in trajectories]
    speech = [t[1] for t in trajectories]
    labels = np.array([s.label for s in sessions])
    try:
        calibration = fit_interval(prefix_probabilities, evidence, speech, labels)
    except ValueError as error:
        return None, {"fitted": False, "reason": str(error)}
    report: dict[str, object] = {
        "fitted": True,
        "evidence_edges": calibration.evidence_edges,
        "below": calibration.negative,
        "above": calibration.positive,
    }
    try:
        report["cross_validated"] = interval_coverage(prefix_probabilities, evidence, speech, labels, folds)
    except ValueError as error:
        report["cross_validated"] = {"reason": f"coverage not measured: {error}"}
    return calibration, report


def add_interval(checkpoint: Path, calibration: IntervalCalibration, out: Path) -> None:
    """Write `checkpoint` to `out` with `calibration` as its interval (weights and other facts unchanged)."""
    model, facts = load_checkpoint(checkpoint)
    save_checkpoint(out, model, replace(facts, interval=calibration))
