"""Repeated cross-validation: the model against the classic baselines on several fold assignments.

One k-fold assignment of a small dataset is one draw of many: on EATD (82 sessions, 19 positive) the AUROC of
the same baseline moves by about ±0.06 between fold seeds, and a single 80/20 split moves it by ±0.15. So a
claim that the model beats a baseline is measured here as a paired difference, repeated over `repeats` fold
assignments (seeds `seed`, `seed + 1`, ...): each repeat scores the model and every baseline on the same folds,
and the difference of their AUROCs gets a 95% interval from a paired, label-stratified bootstrap over
sessions (the same resampled sessions score both). Ablations of the model (variants with one part taken out)
run on the same folds and get the same paired differences. The summary gives each method's mean and spread
over repeats (the model's also per modality head, and the error of its score head), and per baseline and
ablation the mean difference, in how many repeats the model's AUROC was higher and in how many its interval
lay above zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from depscreen.engine.train.baselines import applicable_baselines, cross_validate_baseline
from depscreen.engine.train.crossval import CrossValidation
from depscreen.engine.train.metrics import auroc, bootstrap, classification, expected_calibration_error
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.trainer import TrainSettings

CrossValidator = Callable[[TrainSettings], CrossValidation]
"""Settings (their seed picks the folds) → the model's out-of-fold estimates."""


def auroc_difference(labels: np.ndarray, model: np.ndarray, baseline: np.ndarray, seed: int) -> dict[str, float]:
    """AUROC(model) − AUROC(baseline) on the same sessions, with a paired stratified bootstrap 95% interval."""
    interval = bootstrap(labels, lambda i: auroc(labels[i], model[i]) - auroc(labels[i], baseline[i]), seed)
    return interval.to_dict()


def _scores(cv: CrossValidation) -> dict[str, object]:
    predicted = cv.probabilities >= cv.thresholds
    scores: dict[str, object] = {
        "auroc": round(auroc(cv.labels, cv.probabilities), 4),
        "f1": round(classification(cv.labels, predicted)["f1"], 4),
        "ece": round(expected_calibration_error(cv.labels, cv.probabilities), 4),
        "heads": cv.head_aurocs(),
    }
    if (error := cv.score_error()) is not None:
        scores["score_error"] = error
    return scores


def _compare(row: dict, kind: str, name: str, model_cv: CrossValidation, other: CrossValidation, seed: int) -> None:
    if other.session_ids != model_cv.session_ids:
        raise ValueError(f"the model and {name} were scored on different sessions: pass the same list")
    row[kind][name] = _scores(other)
    row[f"{kind}_difference"][name] = auroc_difference(
        model_cv.labels, model_cv.probabilities, other.probabilities, seed
    )


def repeated_comparison(
    sessions: list[LabelledSession],
    model: CrossValidator,
    settings: TrainSettings,
    folds: int,
    repeats: int,
    first: CrossValidation | None = None,
    log: Callable[[str], None] = print,
    ablations: dict[str, CrossValidator] | None = None,
    first_ablations: dict[str, CrossValidation] | None = None,
    ablation_repeats: int | None = None,
) -> dict[str, object]:
    """The model and every baseline on `repeats` fold assignments, then every ablation on the first
    `ablation_repeats` of them (default: all), paired with the model's run on each (see the module docstring).

    `first` and `first_ablations`: runs on the first assignment (`settings.seed`) already made, so they are not
    repeated. Every method must score the same sessions in the same order.
    """
    if repeats < 2:
        raise ValueError(f"repeated cross-validation needs at least 2 repeats, not {repeats}")
    ablations, first_ablations = ablations or {}, first_ablations or {}
    ablation_repeats = repeats if ablation_repeats is None else min(ablation_repeats, repeats)
    rows, model_runs = [], []
    for repeat in range(repeats):
        seed = settings.seed + repeat
        model_cv = first if repeat == 0 and first is not None else model(replace(settings, seed=seed))
        model_runs.append(model_cv)
        row: dict[str, object] = {
            "seed": seed,
            "model": _scores(model_cv),
            "baselines": {},
            "baselines_difference": {},
            "ablations": {},
            "ablations_difference": {},
        }
        for name in applicable_baselines(sessions):
            _compare(row, "baselines", name, model_cv, cross_validate_baseline(name, sessions, folds, seed), seed)
        rows.append(row)
        log(
            f"repeat {repeat + 1}/{repeats} (seed {seed}): model AUROC {row['model']['auroc']:.3f} "
            f"(heads {row['model']['heads']}), "
            + ", ".join(f"{name} {scores['auroc']:.3f}" for name, scores in row["baselines"].items())
        )
    for repeat, (row, model_cv) in enumerate(zip(rows[:ablation_repeats], model_runs, strict=False)):
        for name, ablation in ablations.items():
            ablation_cv = (
                first_ablations[name]
                if repeat == 0 and name in first_ablations
                else ablation(replace(settings, seed=row["seed"]))
            )
            _compare(row, "ablations", name, model_cv, ablation_cv, row["seed"])
            log(
                f"ablation {name}, repeat {repeat + 1}/{ablation_repeats} (seed {row['seed']}): AUROC "
                f"{row['ablations'][name]['auroc']:.3f} (model {row['model']['auroc']:.3f})"
            )
    return {"repeats": rows, "summary": summarise(rows)}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(float(np.mean(values)), 4),
        "sd": round(float(np.std(values, ddof=1)), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


METRICS = ("auroc", "f1", "ece")
"""The per-repeat metrics summarised for every method."""


def summarise(rows: list[dict]) -> dict[str, object]:
    """Mean, sd, min and max over repeats of each method's metrics, of the model's per-head AUROCs and score
    error, and of each AUROC difference, with the counts of repeats the model was higher and clearly better."""
    model: dict[str, object] = {metric: _spread([row["model"][metric] for row in rows]) for metric in METRICS}
    model["heads"] = {
        head: _spread([row["model"]["heads"][head] for row in rows]) for head in rows[0]["model"]["heads"]
    }
    if "score_error" in rows[0]["model"]:
        model["score_error"] = {
            key: _spread([row["model"]["score_error"][key] for row in rows]) for key in rows[0]["model"]["score_error"]
        }
    summary: dict[str, object] = {"model": model, "baselines": {}, "ablations": {}}
    for kind in ("baselines", "ablations"):
        for name in rows[0][kind]:
            paired = [row for row in rows if name in row[kind]]
            differences = [row[f"{kind}_difference"][name] for row in paired]
            summary[kind][name] = {
                **{metric: _spread([row[kind][name][metric] for row in paired]) for metric in METRICS},
                "repeats": len(paired),
                "model_auroc_same_repeats": _spread([row["model"]["auroc"] for row in paired]),
                "auroc_difference": _spread([d["value"] for d in differences]),
                "repeats_model_higher": sum(row["model"]["auroc"] > row[kind][name]["auroc"] for row in paired),
                "repeats_model_clearly_better": sum(d["low"] > 0 for d in differences),
            }
    return summary
