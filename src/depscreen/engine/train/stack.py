"""The stacked estimate: a small logistic model over heads' logits, fitted on out-of-fold logits inside the
training folds, cross-validated against its own heads and the whole-session character baselines.

Heads (each scores a session after every sentence, from a few numbers of running state; nan before it has
evidence):
- `text:<language>`: the language's character head (`char_head.fit_mean_head`), the character-weighted mean
  of the sentences' logits (`features.language_head.TextHeadAccount`);
- `lsa:<language>`: the running char-LSA head (`char_head.fit_chosen_lsa_head`, `features.lsa_head`): the
  additive LSA projection of the session's character n-gram counts and its character count, its read-out
  chosen by inner folds of the training set;
- `audio`: a class-balanced logistic regression (C = 0.1) on the standardised mean and standard deviation of
  the eGeMAPS descriptors over every frame heard so far (`AcousticHead`; state: frame count, sums, sums of
  squares).

`fit_stack` on a training set: each head's session logits out of fold over the stacker's inner folds, a
logistic regression (L2, C = 1, no class weights: its weights are the heads' temperatures and its probability
is calibrated to the training prevalence) on them, a head without evidence counting 0; then every head refitted
on the whole set. The `Stacker` says how many inner folds and whether the weights are bounded at 0 (a head
whose inner out-of-fold logits run against the label then gets weight 0 instead of turning the ranking over).
`cross_validate_once` scores each outer test fold once with a stack fitted on the other folds, and each head
alone fitted the same nested way (a one-head stack: Platt scaling), over several fold assignments, and logs
every fitted weight; `shipping_decision` applies the rule pre-registered on the model card. A single head may
also ship in its own calibration (`head@own`, its in-fold Platt scaling with a prior correction: a one-head
stack of weight 1 and bias logit(training base rate), `prior_logit`; the head's class-balanced Platt scaling
models equal class priors, and the bias puts the training prevalence back).

Text source: a session's heads learn from the text of `sessions` and are scored (inner folds included) on the
text of `scored`, the same sessions with other sentence text: human transcripts or the live ASR stage's text
(`train --char-head` measures all four combinations; live Mandarin text without captions is ASR text).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from depscreen.engine.features.language_head import LanguageTextHead, TextHeadAccount
from depscreen.engine.features.lsa_head import LsaTextHead
from depscreen.engine.modalities import modality
from depscreen.engine.runtime.checkpoint import (
    ModelFacts,
    TrainingSplit,
    load_checkpoint,
    replace_facts,
    session_fingerprint,
)
from depscreen.engine.runtime.stack import Stack, check_stack
from depscreen.engine.train.baselines import transcript
from depscreen.engine.train.char_head import (
    baseline_probabilities,
    fit_chosen_lsa_head,
    fit_mean_head,
    lsa_prefix_logits,
    session_texts,
)
from depscreen.engine.train.crossval import stratified_folds
from depscreen.engine.train.interval_fit import held_out_interval
from depscreen.engine.train.metrics import (
    auroc,
    best_f1_threshold,
    expected_calibration_error,
    logistic,
    screening_report,
)
from depscreen.engine.train.pitch import median_f0, pitch_check
from depscreen.engine.train.repeated import _spread, auroc_difference
from depscreen.engine.train.sessions import LabelledSession

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


Head = LanguageTextHead | LsaTextHead | AcousticHead


def prefix_logits(head: Head, session: LabelledSession) -> np.ndarray:
    """`[sentences]` the head's logit of the session after each sentence (nan while it has no evidence)."""
    logits = np.full(len(session.sentences), np.nan)
    if isinstance(head, AcousticHead):
        moments = np.zeros(1 + 2 * modality("audio").dim)
        for k, sentence in enumerate(session.sentences):
            moments = moments + frame_moments(sentence.audio)
            logits[k] = head.read_out(moments)
        return logits
    told = [k for k, sentence in enumerate(session.sentences) if sentence.transcript.strip()]
    if isinstance(head, LsaTextHead):
        running = lsa_prefix_logits(head, [session.sentences[k].transcript for k in told])
        for k, logit in zip(told, running, strict=True):
            logits[k:] = logit
        return logits
    account = TextHeadAccount()
    sentence_logits = dict(zip(told, head.logits([session.sentences[k].transcript for k in told]), strict=True))
    for k, sentence in enumerate(session.sentences):
        if k in sentence_logits:
            account.add(float(sentence_logits[k]), sentence.transcript)
        if account.chars:
            logits[k] = account.logit
    return logits


HeadFitter = Callable[[list[LabelledSession], np.ndarray], Head]


def text_head_fitter(sessions: list[LabelledSession], labels: np.ndarray) -> LanguageTextHead:
    return fit_mean_head(session_texts(sessions), labels)


def lsa_head_fitter(sessions: list[LabelledSession], labels: np.ndarray) -> LsaTextHead:
    return fit_chosen_lsa_head(session_texts(sessions), labels)


def head_fitters(language: str) -> dict[str, HeadFitter]:
    """The candidate heads by name (see the module docstring)."""
    return {f"text:{language}": text_head_fitter, f"lsa:{language}": lsa_head_fitter, "audio": fit_acoustic_head}


@dataclass(frozen=True)
class Stacker:
    """How a stack's weights are fitted on its heads' inner out-of-fold logits."""

    inner_folds: int
    nonnegative: bool
    """Weights bounded at 0 (L-BFGS-B on the same penalised likelihood)."""

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
        """(weights, bias) of the L2 (C = 1) logistic regression of `labels` on `[sessions, heads]` logits, the
        bias unpenalised; with `nonnegative` every weight >= 0."""
        heads = logits.shape[1]
        y = 2.0 * labels - 1.0

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            margin = y * (logits @ theta[:heads] + theta[heads])
            slope = -y / (1 + np.exp(np.clip(margin, -500, 500)))
            value = float(np.logaddexp(0, -margin).sum() + 0.5 * theta[:heads] @ theta[:heads])
            return value, np.concatenate([logits.T @ slope + theta[:heads], [slope.sum()]])

        bounds = [(0.0, None) if self.nonnegative else (None, None)] * heads + [(None, None)]
        theta = minimize(loss, np.zeros(heads + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
        return theta[:heads], float(theta[heads])


STACKERS = {
    "nonneg-10": Stacker(10, True),
    "lr-5": Stacker(5, False),
    "nonneg-5": Stacker(5, True),
    "lr-10": Stacker(10, False),
}
"""The stackers compared. `lr-5` is the first round's (2026-12-07, 0.551 for text:zh alone); `STACKER`, the
one the shipping rule applies to, was written on the model card before any of them was run (the others are
reported, never chosen)."""
STACKER = "nonneg-10"


@dataclass(frozen=True)
class FittedStack:
    heads: dict[str, Head]
    weights: np.ndarray
    """`[heads]` in `heads` order."""
    bias: float
    threshold: float = 0.5
    """The best-F1 screening threshold on the stacked out-of-fold estimates of the sessions it was fitted on."""

    def prefix_probabilities(self, session: LabelledSession) -> np.ndarray:
        """`[sentences]` the stacked estimate after each sentence (a head without evidence counts 0)."""
        logits = np.stack([prefix_logits(head, session) for head in self.heads.values()], axis=1)
        return logistic(np.nan_to_num(logits) @ self.weights + self.bias)


def _final_logit(head: Head, session: LabelledSession) -> float:
    logits = prefix_logits(head, session)
    return 0.0 if not len(logits) or np.isnan(logits[-1]) else float(logits[-1])


FinalLogit = Callable[[Head, LabelledSession], float]


def _remembered_logits() -> FinalLogit:
    """`_final_logit` that scores each (head, session) pair once (stackers sharing fitted heads share them);
    it keeps every head and session it scored alive, so their ids stay theirs."""
    scored: dict[tuple[int, int], tuple[float, object, object]] = {}

    def once(head: Head, session: LabelledSession) -> float:
        key = (id(head), id(session))
        if key not in scored:
            scored[key] = (_final_logit(head, session), head, session)
        return scored[key][0]

    return once


def fit_stack(
    fitters: dict[str, HeadFitter],
    sessions: list[LabelledSession],
    labels: np.ndarray,
    seed: int,
    stacker: Stacker = STACKERS[STACKER],
    scored: list[LabelledSession] | None = None,
    final_logit: FinalLogit = _final_logit,
) -> FittedStack:
    """The stack of `fitters`' heads learnt from `sessions`, its weights fitted on their inner out-of-fold logits
    on `scored` (default `sessions`; see the module docstring). Fewer inner folds than the stacker's when a class
    has fewer sessions."""
    scored = sessions if scored is None else scored
    out_of_fold = np.zeros((len(sessions), len(fitters)))
    inner = min(stacker.inner_folds, int(np.bincount(labels, minlength=2).min()))
    for test in stratified_folds(labels.tolist(), inner, seed):
        train = np.setdiff1d(np.arange(len(sessions)), test)
        for j, fit in enumerate(fitters.values()):
            head = fit([sessions[i] for i in train], labels[train])
            out_of_fold[test, j] = [final_logit(head, scored[i]) for i in test]
    weights, bias = stacker.fit(out_of_fold, labels)
    threshold = best_f1_threshold(labels, logistic(out_of_fold @ weights + bias))
    heads = {name: fit(sessions, labels) for name, fit in fitters.items()}
    return FittedStack(heads, weights, bias, threshold)


@dataclass(frozen=True)
class StackRun:
    """One fold assignment: out-of-fold estimates (final and after each sentence) of each candidate (the stack
    and each head alone, per stacker, and each head in its own calibration), the baselines' out-of-fold
    probabilities, and every weight each candidate's stacker fitted."""

    seed: int
    folds: np.ndarray
    final: dict[str, np.ndarray]
    prefixes: dict[str, list[np.ndarray]]
    """Per candidate: its estimate after each sentence of each session."""
    weights: dict[str, list[list[float]]]
    """Per stacked candidate, per outer fold: its heads' weights then its bias."""


OWN = "own"
"""The candidate suffix of a head read in its own calibration, with no stacker (`text:zh@own`): its plain
cross-validated estimate, for reference."""
OWN_HEADS = ("text:", "lsa:")
"""The heads also read in their own calibration (each Platt-scales itself on its training sessions)."""
BASELINE_NAMES = ("text-lsa", "text-tfidf")


def candidate(name: str, stacker: str) -> str:
    """A candidate's name: the head or "stack", with "@stacker" unless it is `STACKER`'s."""
    return name if stacker == STACKER else f"{name}@{stacker}"


def _remembered(fit: HeadFitter) -> HeadFitter:
    """`fit` that fits each training set once (the stack and its heads alone share the same inner folds)."""
    fitted: dict[tuple[str, ...], Head] = {}

    def once(sessions: list[LabelledSession], labels: np.ndarray) -> Head:
        key = tuple(s.session_id for s in sessions)
        if key not in fitted:
            fitted[key] = fit(sessions, labels)
        return fitted[key]

    return once


def cross_validate_once(
    sessions: list[LabelledSession],
    language: str,
    folds: int,
    seed: int,
    stackers: tuple[str, ...] = (STACKER,),
    scored: list[LabelledSession] | None = None,
    heads: tuple[str, ...] | None = None,
) -> StackRun:
    """One fold assignment of every candidate: the stack of `heads` (default every head of `head_fitters`;
    none with one head) and each head alone under each of `stackers`, each text head in its own calibration,
    and the baselines; heads learn from `sessions`' text and are scored on `scored`'s (default the same)."""
    scored = sessions if scored is None else scored
    labels = np.array([s.label for s in sessions])
    fitters = {name: _remembered(fit) for name, fit in head_fitters(language).items() if heads is None or name in heads}
    sets = {name: {name: fit} for name, fit in fitters.items()}
    if len(fitters) > 1:
        sets = {"stack": fitters, **sets}
    candidates = {candidate(name, stacker): (chosen, stacker) for stacker in stackers for name, chosen in sets.items()}
    own = [name for name in fitters if name.startswith(OWN_HEADS)]
    methods = [*candidates, *(f"{name}@{OWN}" for name in own), *BASELINE_NAMES]
    final = {name: np.zeros(len(sessions)) for name in methods}
    prefixes = {name: [np.zeros(0)] * len(sessions) for name in methods if name not in BASELINE_NAMES}
    weights: dict[str, list[list[float]]] = {name: [] for name in candidates}
    logit = _remembered_logits()
    fold_of = np.zeros(len(sessions), dtype=int)
    assignment = stratified_folds(labels.tolist(), folds, seed)
    for k, test in enumerate(assignment):
        fold_of[test] = k
        train = np.setdiff1d(np.arange(len(sessions)), test)
        train_sessions, train_scored = [sessions[i] for i in train], [scored[i] for i in train]
        for name, (chosen, stacker) in candidates.items():
            stack = fit_stack(chosen, train_sessions, labels[train], seed, STACKERS[stacker], train_scored, logit)
            weights[name].append([*map(float, stack.weights), stack.bias])
            for i in test:
                prefixes[name][i] = stack.prefix_probabilities(scored[i])
                final[name][i] = prefixes[name][i][-1]
        for name in own:
            head, prior = fitters[name](train_sessions, labels[train]), prior_logit(labels[train])
            for i in test:
                prefixes[f"{name}@{OWN}"][i] = logistic(np.nan_to_num(prefix_logits(head, scored[i])) + prior)
                final[f"{name}@{OWN}"][i] = prefixes[f"{name}@{OWN}"][i][-1]
    learnt, told = [transcript(s) for s in sessions], [transcript(s) for s in scored]
    for name in BASELINE_NAMES:
        final[name] = baseline_probabilities(name, learnt, labels, assignment, told)
    return StackRun(seed, fold_of, final, prefixes, weights)


def best_head(summary: dict[str, object], heads: list[str]) -> str:
    """The single head (under `STACKER`) with the highest mean AUROC."""
    return max(heads, key=lambda name: summary["auroc"][name]["mean"])


def summarise_runs(runs: list[StackRun], labels: np.ndarray, heads: list[str]) -> dict[str, object]:
    """Per method the AUROC and ECE over assignments; every candidate's paired AUROC differences against
    text-lsa, the best single head of `heads` and (the stack) each method; per stacked candidate its weights'
    spread and in how many outer folds one came out negative."""
    methods = list(runs[0].final)
    aurocs = {name: [auroc(labels, run.final[name]) for run in runs] for name in methods}
    summary: dict[str, object] = {
        "assignments": len(runs),
        "auroc": {name: _spread(values) for name, values in aurocs.items()},
        "ece": {name: _spread([expected_calibration_error(labels, r.final[name]) for r in runs]) for name in methods},
    }
    best = best_head(summary, heads)

    def minus(first: str, second: str) -> dict[str, object]:
        values = [auroc_difference(labels, r.final[first], r.final[second], r.seed) for r in runs]
        return {
            **_spread([d["value"] for d in values]),
            "assignments_first_higher": sum(d["value"] > 0 for d in values),
            "assignments_interval_above_zero": sum(d["low"] > 0 for d in values),
        }

    pairs = [(a, b) for a in methods if a not in BASELINE_NAMES for b in ("text-lsa", best) if a != b]
    if "stack" in methods:
        pairs += [("stack", name) for name in methods if name not in ("stack", "text-lsa", best)]
    summary["differences"] = {f"{a} - {b}": minus(a, b) for a, b in pairs}
    summary["weights"] = {
        name: {
            "per_head_and_bias": [_spread(list(column)) for column in zip(*folds, strict=True)],
            "outer_folds": len(folds),
            "outer_folds_with_a_negative_weight": sum(any(w < 0 for w in fold[:-1]) for fold in folds),
        }
        for name in runs[0].weights
        for folds in [[fold for run in runs for fold in run.weights[name]]]
    }
    return summary


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


TEXT_SOURCES = ("human", "asr")
"""Where the sessions' sentence text comes from: the dataset's transcripts, or the live ASR stage."""


def train_stacked_estimate(
    texts: dict[str, list[LabelledSession]],
    dataset: str,
    language: str,
    base: Path,
    out: Path,
    folds: int,
    repeats: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """The third round pre-registered on the model card, over `repeats` fold assignments of the sessions in
    `texts` (the same sessions, by `TEXT_SOURCES`, with human and with ASR text): the stack (`STACKER`) of the
    character head and the running char-LSA head, each alone under `STACKER` and in its own calibration, and
    the baselines, the heads learning from human transcripts and scored on ASR text (the rule) and on human
    transcripts (reported); the rule picks between the stack and the single heads in their own calibration, and
    what it picks replaces what ships now (`text:<language>` under `STACKER`) only if its mean AUROC on ASR text
    is higher. Then it is fitted on every session and written (`write_shipped`); everything measured goes to
    `out / "stack.json"`, and nothing else is written when it does not replace what ships."""
    if len({tuple((s.session_id, len(s.sentences)) for s in sessions) for sessions in texts.values()}) != 1:
        raise ValueError(
            "the human-transcript and ASR-text loads hold different sessions or sentences: load both from the same "
            "dataset folder with the same segmenter settings"
        )
    labels = np.array([s.label for s in texts["human"]])
    text, heads = f"text:{language}", (f"text:{language}", f"lsa:{language}")
    singles = [f"{head}@{OWN}" for head in heads]
    results: dict[str, object] = {"scored_on": {}}
    runs: dict[str, list[StackRun]] = {}
    for told in ("asr", "human"):
        runs[told] = []
        for repeat in range(repeats):
            run = cross_validate_once(texts["human"], language, folds, seed + repeat, (STACKER,), texts[told], heads)
            runs[told].append(run)
            log(
                f"human -> {told}, assignment {repeat + 1}/{repeats}: "
                + ", ".join(f"{name} {auroc(labels, values):.3f}" for name, values in run.final.items())
            )
        results["scored_on"][told] = summarise_runs(runs[told], labels, singles)
    summary = results["scored_on"]["asr"]
    decision = shipping_decision(summary, singles)
    shipped_now = summary["auroc"][text]["mean"]
    decision.update(
        text_source="human",
        shipped_now=text,
        shipped_now_auroc=shipped_now,
        replaces_shipped=bool(summary["auroc"][decision["ships"]]["mean"] > shipped_now),
    )
    log(f"ships {decision['ships']}: {decision}")
    results["decision"] = decision
    if decision["replaces_shipped"]:
        results.update(
            write_shipped(
                texts["human"], language, decision["ships"], runs["asr"][0], base, out, seed, texts["asr"], "human"
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "stack.json").write_text(json.dumps(results, indent=2))
    return results


def prior_logit(labels: np.ndarray) -> float:
    """logit(the base rate of `labels`): added to a class-balanced logit (which models equal class priors), it
    calibrates it to that prevalence; ValueError when one class is missing."""
    rate = float(np.mean(labels))
    if not 0.0 < rate < 1.0:
        raise ValueError(f"a prior correction needs both labels among the training sessions (base rate {rate})")
    return float(np.log(rate / (1.0 - rate)))


def fit_own(
    fit: HeadFitter, sessions: list[LabelledSession], labels: np.ndarray, seed: int, scored: list[LabelledSession]
) -> FittedStack:
    """One head in its own calibration as a one-head stack (weight 1, bias `prior_logit(labels)`), fitted on
    `sessions`; its threshold the best F1 on its out-of-fold estimates on `scored` over
    `STACKERS[STACKER].inner_folds` folds (each inner head corrected by its own training part's prior)."""
    inner = min(STACKERS[STACKER].inner_folds, int(np.bincount(labels, minlength=2).min()))
    out_of_fold = np.zeros(len(sessions))
    for test in stratified_folds(labels.tolist(), inner, seed):
        train = np.setdiff1d(np.arange(len(sessions)), test)
        head = fit([sessions[i] for i in train], labels[train])
        out_of_fold[test] = [_final_logit(head, scored[i]) + prior_logit(labels[train]) for i in test]
    threshold = best_f1_threshold(labels, logistic(out_of_fold))
    return FittedStack({"head": fit(sessions, labels)}, np.ones(1), prior_logit(labels), threshold)


def write_shipped(
    sessions: list[LabelledSession],
    language: str,
    ships: str,
    first: StackRun,
    base: Path,
    out: Path,
    seed: int,
    scored: list[LabelledSession] | None = None,
    text: str = "human",
    dataset: str = "eatd",
) -> dict[str, object]:
    """Fit what ships on every session (ValueError first when the server cannot build one of its heads): the
    stack, one head under `STACKER` (a one-head stack), or one head in its own calibration (`head@own`:
    `fit_own`); its heads learn from `sessions`' text and its stacker or threshold is fitted on their out-of-fold
    logits on `scored`'s (default the same). Its interval is fitted on the first assignment's out-of-fold
    estimates after each sentence (`first`), the pitch check is run on them, and `base`'s checkpoint is written
    with that stack, interval and threshold (its weights unchanged) to `out / "model.pt"` and the text head to
    `out / "text_head_chars.npz"`; returns what was measured. The checkpoint records its training split (`text`:
    where `sessions`' text came from, and the stacker, or `OWN`) for `depscreen eval`."""
    scored = sessions if scored is None else scored
    labels = np.array([s.label for s in sessions])
    fitters = head_fitters(language)
    name = ships.removesuffix(f"@{OWN}")
    shipped = {head: fitters[head] for head in ("text:" + language, "lsa:" + language)} if ships == "stack" else {}
    shipped = shipped or {name: fitters[name]}
    check_stack(Stack(tuple(shipped), (1.0,) * len(shipped), 0.0), f"{ships} of {len(sessions)} sessions")
    if ships.endswith(f"@{OWN}"):
        own = fit_own(shipped[name], sessions, labels, seed, scored)
        final, stacker = replace(own, heads={name: own.heads["head"]}), OWN
    else:
        final, stacker = fit_stack(shipped, sessions, labels, seed, scored=scored), STACKER
    interval, interval_report = held_out_interval(sessions, first.prefixes[ships], first.folds)
    f0 = np.array([median_f0(s) for s in sessions])
    pitch = pitch_check(f0, labels, {"estimate": first.final[ships]}, first.folds)
    _, facts = load_checkpoint(base)
    weights = tuple(float(w) for w in final.weights)
    stack = Stack(tuple(final.heads), weights, final.bias, round(float(labels.mean()), 4))
    facts = replace(
        facts,
        model_id=f"{dataset}-stack-s{seed}",
        stack=stack,
        training_split=TrainingSplit(
            dataset, tuple(map(session_fingerprint, sessions)), text, stacker, int(first.folds.max()) + 1, first.seed
        ),
        interval=interval,
        decision_threshold=round(final.threshold, 4),
    )
    out.mkdir(parents=True, exist_ok=True)
    replace_facts(base, facts, out / "model.pt")
    text_head = final.heads.get(f"text:{language}")
    if isinstance(text_head, LanguageTextHead):
        text_head.save(out / "text_head_chars.npz")
    return {"stack": asdict(stack), "threshold": final.threshold, "interval": interval_report, "pitch_check": pitch}


def out_of_fold_evaluation(
    facts: ModelFacts, sessions: list[LabelledSession], learnt: list[LabelledSession], language: str, seed: int = 0
) -> dict[str, object]:
    """`depscreen eval` of a stacked checkpoint on exactly its training split: the estimates of its recipe
    (`facts.training_split`: stacker, folds, seed; heads learning from `learnt`, the same sessions with the
    split's text) cross-validated again, each session scored (on its text in `sessions`) by a stack that never
    saw it. Metrics (`metrics.screening_report` at the checkpoint's threshold), the interval's coverage, mean
    width at a session's end and share ruling a label out (fitted fold by fold on the other folds' estimates,
    `interval_fit`), and the pitch check; the in-sample estimates of the shipped fit say nothing (AUROC ~1)."""
    split, stack = facts.training_split, facts.stack
    if split is None or stack is None:
        raise ValueError(f"model {facts.model_id} records no stacked training split: nothing to cross-validate")
    name = "stack" if len(stack.heads) > 1 else stack.heads[0]
    own = split.stacker == OWN
    stackers = (STACKER,) if own else (split.stacker,)
    run = cross_validate_once(learnt, language, split.folds, split.seed, stackers, sessions, tuple(stack.heads))
    chosen = f"{name}@{OWN}" if own else candidate(name, split.stacker)
    final, prefixes = run.final[chosen], run.prefixes[chosen]
    labels = np.array([s.label for s in sessions])
    _, interval = held_out_interval(sessions, prefixes, run.folds)
    f0 = np.array([median_f0(s) for s in sessions])
    return {
        "model": facts.model_id,
        "estimates": (
            f"out of fold: the model's training split, its recipe ({'its own calibration' if own else split.stacker}, "
            f"{split.folds} folds, seed "
            f"{split.seed}, heads learnt from {split.text} text) cross-validated again"
        ),
        "threshold": facts.decision_threshold,
        **screening_report(labels, final, facts.decision_threshold, seed),
        "interval": interval.get("cross_validated", interval),
        "pitch_check": pitch_check(f0, labels, {"estimate": final}, run.folds),
        "sessions": [
            {"id": s.session_id, "label": s.label, "probability": round(float(p), 4), "fold": int(k)}
            for s, p, k in zip(sessions, final, run.folds, strict=True)
        ],
    }
