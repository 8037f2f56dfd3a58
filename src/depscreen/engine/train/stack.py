"""The stacked estimate: a small logistic model over heads' logits, fitted on out-of-fold logits inside the
training folds, cross-validated against its own heads and the whole-session character baselines.

Heads (each scores a session after every sentence, from a few numbers of running state; nan before it has
evidence):
- `text:<language>`: the language's character head (`char_head.fit_mean_head`), the character-weighted mean
  of the sentences' logits (`features.language_head.TextHeadAccount`);
- `audio`: a class-balanced logistic regression (C = 0.1) on the standardised mean and standard deviation of
  the eGeMAPS descriptors over every frame heard so far (`AcousticHead`; state: frame count, sums, sums of
  squares).

`fit_stack` on a training set: each head's session logits out of fold over `INNER_FOLDS` inner folds, a
logistic regression (L2, C = 1, no class weights: its weights are the heads' temperatures and its probability
is calibrated to the training prevalence) on them, a head without evidence counting 0; then every head refitted
on the whole set. `cross_validate_stack` scores each outer test fold once with a stack fitted on the other
folds, and each head alone fitted the same nested way (a one-head stack: Platt scaling), over several fold
assignments; `shipping_decision` applies the rule pre-registered on the model card.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from depscreen.engine.features.language_head import LanguageTextHead, TextHeadAccount
from depscreen.engine.modalities import modality
from depscreen.engine.runtime.checkpoint import load_checkpoint, replace_facts
from depscreen.engine.runtime.stack import Stack, check_stack
from depscreen.engine.train.baselines import transcript
from depscreen.engine.train.char_head import baseline_probabilities, fit_mean_head, session_texts
from depscreen.engine.train.crossval import stratified_folds
from depscreen.engine.train.interval_fit import held_out_interval
from depscreen.engine.train.metrics import auroc, best_f1_threshold, expected_calibration_error
from depscreen.engine.train.pitch import median_f0, pitch_check
from depscreen.engine.train.repeated import _spread, auroc_difference
from depscreen.engine.train.sessions import LabelledSession

INNER_FOLDS = 5
TOLERANCE = 0.01
"""The stack ships when its mean AUROC is at least char-LSA's minus this (and at least its best head's)."""


@dataclass(frozen=True)
class AcousticHead:
    """Logistic regression on the standardised per-descriptor mean and sd of a session's frames so far."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float

    def read_out(self, moments: np.ndarray) -> float:
        """The logit from `frame_moments` summed over the sentences so far; nan before two frames."""
        count = moments[0]
        if count < 2:
            return float("nan")
        return float(((functionals(moments) - self.mean) / self.std) @ self.coef + self.intercept)


def frame_moments(frames: np.ndarray) -> np.ndarray:
    """`[1 + 2 d]` the frame count, the per-descriptor sums and sums of squares of `[frames, d]` (additive)."""
    frames = np.asarray(frames, dtype=np.float64).reshape(-1, modality("audio").dim)
    return np.concatenate([[len(frames)], frames.sum(0), (frames**2).sum(0)])


def functionals(moments: np.ndarray) -> np.ndarray:
    """`[2 d]` the per-descriptor mean and standard deviation behind `moments`."""
    d = (len(moments) - 1) // 2
    count = moments[0]
    mean = moments[1 : 1 + d] / count
    return np.concatenate([mean, np.sqrt(np.maximum(moments[1 + d :] / count - mean**2, 0.0))])


def fit_acoustic_head(sessions: list[LabelledSession], labels: np.ndarray) -> AcousticHead:
    x = np.stack([functionals(sum(frame_moments(s.audio) for s in session.sentences)) for session in sessions])
    mean, std = x.mean(0), x.std(0).clip(min=1e-9)
    model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit((x - mean) / std, labels)
    return AcousticHead(mean, std, model.coef_[0], float(model.intercept_[0]))


def prefix_logits(head: LanguageTextHead | AcousticHead, session: LabelledSession) -> np.ndarray:
    """`[sentences]` the head's logit of the session after each sentence (nan while it has no evidence)."""
    logits = np.full(len(session.sentences), np.nan)
    if isinstance(head, AcousticHead):
        moments = np.zeros(1 + 2 * modality("audio").dim)
        for k, sentence in enumerate(session.sentences):
            moments = moments + frame_moments(sentence.audio)
            logits[k] = head.read_out(moments)
        return logits
    account = TextHeadAccount()
    for k, sentence in enumerate(session.sentences):
        if sentence.transcript.strip():
            account.add(float(head.logits([sentence.transcript])[0]), sentence.transcript)
        if account.chars:
            logits[k] = account.logit
    return logits


HeadFitter = Callable[[list[LabelledSession], np.ndarray], LanguageTextHead | AcousticHead]


def text_head_fitter(sessions: list[LabelledSession], labels: np.ndarray) -> LanguageTextHead:
    return fit_mean_head(session_texts(sessions), labels)


def head_fitters(language: str) -> dict[str, HeadFitter]:
    """The candidate heads by name (see the module docstring)."""
    return {f"text:{language}": text_head_fitter, "audio": fit_acoustic_head}


@dataclass(frozen=True)
class FittedStack:
    heads: dict[str, LanguageTextHead | AcousticHead]
    weights: np.ndarray
    """`[heads]` in `heads` order."""
    bias: float
    threshold: float = 0.5
    """The best-F1 screening threshold on the stacked out-of-fold estimates of the sessions it was fitted on."""

    def prefix_probabilities(self, session: LabelledSession) -> np.ndarray:
        """`[sentences]` the stacked estimate after each sentence (a head without evidence counts 0)."""
        logits = np.stack([prefix_logits(head, session) for head in self.heads.values()], axis=1)
        return 1 / (1 + np.exp(-(np.nan_to_num(logits) @ self.weights + self.bias)))


def _final_logit(head: LanguageTextHead | AcousticHead, session: LabelledSession) -> float:
    logits = prefix_logits(head, session)
    return 0.0 if not len(logits) or np.isnan(logits[-1]) else float(logits[-1])


def fit_stack(
    fitters: dict[str, HeadFitter], sessions: list[LabelledSession], labels: np.ndarray, seed: int
) -> FittedStack:
    """The stack of `fitters`' heads on `sessions` (see the module docstring)."""
    out_of_fold = np.zeros((len(sessions), len(fitters)))
    for test in stratified_folds(labels.tolist(), INNER_FOLDS, seed):
        train = np.setdiff1d(np.arange(len(sessions)), test)
        for j, fit in enumerate(fitters.values()):
            head = fit([sessions[i] for i in train], labels[train])
            out_of_fold[test, j] = [_final_logit(head, sessions[i]) for i in test]
    stacker = LogisticRegression(C=1.0, max_iter=3000).fit(out_of_fold, labels)
    threshold = best_f1_threshold(labels, stacker.predict_proba(out_of_fold)[:, 1])
    heads = {name: fit(sessions, labels) for name, fit in fitters.items()}
    return FittedStack(heads, stacker.coef_[0], float(stacker.intercept_[0]), threshold)


@dataclass(frozen=True)
class StackRun:
    """One fold assignment: out-of-fold estimates (final and after each sentence) of the stack and of each
    head alone, and the baselines' out-of-fold probabilities."""

    seed: int
    folds: np.ndarray
    final: dict[str, np.ndarray]
    prefixes: dict[str, list[np.ndarray]]
    """Per stack and single head: its estimate after each sentence of each session."""


def _remembered(fit: HeadFitter) -> HeadFitter:
    """`fit` that fits each training set once (the stack and its heads alone share the same inner folds)."""
    fitted: dict[tuple[str, ...], LanguageTextHead | AcousticHead] = {}

    def once(sessions: list[LabelledSession], labels: np.ndarray) -> LanguageTextHead | AcousticHead:
        key = tuple(s.session_id for s in sessions)
        if key not in fitted:
            fitted[key] = fit(sessions, labels)
        return fitted[key]

    return once


def cross_validate_once(sessions: list[LabelledSession], language: str, folds: int, seed: int) -> StackRun:
    labels = np.array([s.label for s in sessions])
    fitters = {name: _remembered(fit) for name, fit in head_fitters(language).items()}
    candidates = {"stack": fitters, **{name: {name: fit} for name, fit in fitters.items()}}
    final = {name: np.zeros(len(sessions)) for name in (*candidates, "text-lsa", "text-tfidf")}
    prefixes = {name: [np.zeros(0)] * len(sessions) for name in candidates}
    fold_of = np.zeros(len(sessions), dtype=int)
    assignment = stratified_folds(labels.tolist(), folds, seed)
    for k, test in enumerate(assignment):
        fold_of[test] = k
        train = np.setdiff1d(np.arange(len(sessions)), test)
        train_sessions = [sessions[i] for i in train]
        for name, chosen in candidates.items():
            stack = fit_stack(chosen, train_sessions, labels[train], seed)
            for i in test:
                estimates = stack.prefix_probabilities(sessions[i])
                final[name][i] = estimates[-1]
                prefixes[name][i] = estimates
    for name in ("text-lsa", "text-tfidf"):
        final[name] = baseline_probabilities(name, [transcript(s) for s in sessions], labels, assignment)
    return StackRun(seed, fold_of, final, prefixes)


def summarise_runs(runs: list[StackRun], labels: np.ndarray) -> dict[str, object]:
    """Per method the AUROC and ECE over assignments; the stack's paired AUROC differences against each."""
    methods = list(runs[0].final)
    aurocs = {name: [auroc(labels, run.final[name]) for run in runs] for name in methods}
    differences = {
        name: [auroc_difference(labels, run.final["stack"], run.final[name], run.seed) for run in runs]
        for name in methods
        if name != "stack"
    }
    return {
        "assignments": len(runs),
        "auroc": {name: _spread(values) for name, values in aurocs.items()},
        "ece": {name: _spread([expected_calibration_error(labels, r.final[name]) for r in runs]) for name in methods},
        "stack_minus": {
            name: {
                **_spread([d["value"] for d in values]),
                "assignments_stack_higher": sum(d["value"] > 0 for d in values),
                "assignments_interval_above_zero": sum(d["low"] > 0 for d in values),
            }
            for name, values in differences.items()
        },
    }


def shipping_decision(summary: dict[str, object], heads: list[str]) -> dict[str, object]:
    """The pre-registered rule (docs/MODEL_CARD.md): the stack if its mean AUROC >= text-lsa's - `TOLERANCE` and
    >= its best head's; otherwise the best head alone."""
    mean = {name: values["mean"] for name, values in summary["auroc"].items()}
    best = max(heads, key=lambda name: mean[name])
    ships_stack = mean["stack"] >= mean["text-lsa"] - TOLERANCE and mean["stack"] >= mean[best]
    return {
        "stack_auroc": mean["stack"],
        "text_lsa_auroc": mean["text-lsa"],
        "best_head": best,
        "best_head_auroc": mean[best],
        "ships": "stack" if ships_stack else best,
    }


def train_stacked_estimate(
    sessions: list[LabelledSession],
    language: str,
    base: Path,
    out: Path,
    folds: int,
    repeats: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Cross-validate the stack and its heads over `repeats` fold assignments, apply the shipping rule, fit what
    ships on every session (`fit_stack`), fit its interval on the first assignment's out-of-fold estimates after
    each sentence, run the pitch check on them, and write `base`'s checkpoint with that stack and interval (its
    weights unchanged) to `out / "model.pt"`, the text head to `out / "text_head_chars.npz"` and everything
    measured to `out / "stack.json"`."""
    labels = np.array([s.label for s in sessions])
    runs = []
    for repeat in range(repeats):
        runs.append(cross_validate_once(sessions, language, folds, seed + repeat))
        log(
            f"assignment {repeat + 1}/{repeats}: "
            + ", ".join(f"{name} {auroc(labels, values):.3f}" for name, values in runs[-1].final.items())
        )
    summary = summarise_runs(runs, labels)
    decision = shipping_decision(summary, list(head_fitters(language)))
    log(f"ships {decision['ships']}: {decision}")
    results = {"summary": summary, "decision": decision}
    results.update(write_shipped(sessions, language, decision["ships"], runs[0], base, out, seed))
    (out / "stack.json").write_text(json.dumps(results, indent=2))
    return results


def write_shipped(
    sessions: list[LabelledSession], language: str, ships: str, first: StackRun, base: Path, out: Path, seed: int
) -> dict[str, object]:
    """Fit what ships (the stack, or one head as a one-head stack; ValueError first when the server cannot build
    one of its heads: the session acoustic head has no live account yet) on every session, fit its interval on the
    first assignment's out-of-fold estimates after each sentence (`first`), run the pitch check on them, and
    write `base`'s checkpoint with that stack, interval and threshold (its weights unchanged) to
    `out / "model.pt"` and the text head to `out / "text_head_chars.npz"`; returns what was measured."""
    labels = np.array([s.label for s in sessions])
    fitters = head_fitters(language)
    shipped = fitters if ships == "stack" else {ships: fitters[ships]}
    check_stack(Stack(tuple(shipped), (1.0,) * len(shipped), 0.0), f"{ships} of {len(sessions)} sessions")
    final = fit_stack(shipped, sessions, labels, seed)
    interval, interval_report = held_out_interval(sessions, first.prefixes[ships], first.folds)
    f0 = np.array([median_f0(s) for s in sessions])
    pitch = pitch_check(f0, labels, {"estimate": first.final[ships]}, first.folds)
    _, facts = load_checkpoint(base)
    stack = Stack(tuple(final.heads), tuple(float(w) for w in final.weights), final.bias)
    facts = replace(
        facts,
        model_id=f"eatd-stack-s{seed}",
        stack=stack,
        interval=interval,
        decision_threshold=round(final.threshold, 4),
    )
    out.mkdir(parents=True, exist_ok=True)
    replace_facts(base, facts, out / "model.pt")
    text_head = final.heads.get(f"text:{language}")
    if isinstance(text_head, LanguageTextHead):
        text_head.save(out / "text_head_chars.npz")
    return {"stack": asdict(stack), "threshold": final.threshold, "interval": interval_report, "pitch_check": pitch}
