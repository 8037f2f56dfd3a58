"""Repeated cross-validation: the model against the classic baselines on several fold assignments.

One k-fold assignment of a small dataset is one draw of many: on EATD (82 sessions, 19 positive) the AUROC of
the same baseline moves by about ±0.06 between fold seeds, and a single 80/20 split moves it by ±0.15. So a
claim that the model beats a baseline is measured here as a paired difference, repeated over `repeats` fold
assignments (seeds `seed`, `seed + 1`, ...): each repeat scores the model and every baseline on the same folds,
and the difference of their AUROCs gets a 95% interval from a paired, label-stratified bootstrap over
sessions (the same resampled sessions score both). The summary gives each method's mean and spread over
repeats, and per baseline the mean difference and in how many repeats its interval lay above zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from depscreen.engine.train.baselines import applicable_baselines, cross_validate_baseline
from depscreen.engine.train.crossval import CrossValidation
from depscreen.engine.train.metrics import auroc, bootstrap, classification
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.trainer import TrainSettings

CrossValidator = Callable[[TrainSettings], CrossValidation]
"""Settings (their seed picks the folds) → the model's out-of-fold estimates."""


def auroc_difference(labels: np.ndarray, model: np.ndarray, baseline: np.ndarray, seed: int) -> dict[str, float]:
    """AUROC(model) − AUROC(baseline) on the same sessions, with a paired stratified bootstrap 95% interval."""
    interval = bootstrap(labels, lambda i: auroc(labels[i], model[i]) - auroc(labels[i], baseline[i]), seed)
    return interval.to_dict()


def _scores(cv: CrossValidation) -> dict[str, float]:
    predicted = cv.probabilities >= cv.thresholds
    return {
        "auroc": round(auroc(cv.labels, cv.probabilities), 4),
        "f1": round(classification(cv.labels, predicted)["f1"], 4),
    }


def repeated_comparison(
    sessions: list[LabelledSession],
    model: CrossValidator,
    settings: TrainSettings,
    folds: int,
    repeats: int,
    first: CrossValidation | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """The model and every baseline on `repeats` fold assignments (see the module docstring).

    `first`: the model's run on the first assignment (`settings.seed`) if already done, so it is not repeated.
    """
    if repeats < 2:
        raise ValueError(f"repeated cross-validation needs at least 2 repeats, not {repeats}")
    rows = []
    for repeat in range(repeats):
        seed = settings.seed + repeat
        model_cv = first if repeat == 0 and first is not None else model(replace(settings, seed=seed))
        row: dict[str, object] = {"seed": seed, "model": _scores(model_cv), "baselines": {}, "difference": {}}
        for name in applicable_baselines(sessions):
            baseline_cv = cross_validate_baseline(name, sessions, folds, seed)
            if baseline_cv.session_ids != model_cv.session_ids:
                raise ValueError(f"the model and baseline {name} were scored on different sessions: pass the same list")
            row["baselines"][name] = _scores(baseline_cv)
            row["difference"][name] = auroc_difference(
                model_cv.labels, model_cv.probabilities, baseline_cv.probabilities, seed
            )
        rows.append(row)
        log(
            f"repeat {repeat + 1}/{repeats} (seed {seed}): model AUROC {row['model']['auroc']:.3f}, "
            + ", ".join(f"{name} {scores['auroc']:.3f}" for name, scores in row["baselines"].items())
        )
    return {"repeats": rows, "summary": summarise(rows)}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(float(np.mean(values)), 4),
        "sd": round(float(np.std(values, ddof=1)), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def summarise(rows: list[dict]) -> dict[str, object]:
    """Mean, sd, min and max over repeats of each method's AUROC and F1, and of each AUROC difference."""
    summary: dict[str, object] = {
        "model": {metric: _spread([row["model"][metric] for row in rows]) for metric in ("auroc", "f1")}
    }
    for name in rows[0]["baselines"]:
        differences = [row["difference"][name] for row in rows]
        summary[name] = {
            **{metric: _spread([row["baselines"][name][metric] for row in rows]) for metric in ("auroc", "f1")},
            "auroc_difference": _spread([d["value"] for d in differences]),
            "repeats_model_clearly_better": sum(d["low"] > 0 for d in differences),
        }
    return summary
