"""A language's character head fitted on a labelled dataset's sentence transcripts, its two running forms
compared in repeated cross-validation against whole-session character baselines.

A session is the list of its sentences' transcripts (as the live segmenter cut them). Two running forms, each
prefix-exact by construction (`features.language_head`):
- `mean`: a class-balanced logistic regression (C = 1) on the unit-length, IDF-weighted sum of the session's
  hashed character 1-3-gram counts; a session's logit is the character-weighted mean of its sentences'
  logits, recalibrated (scale and shift) on the training sessions scored that way (`LanguageTextHead`);
- `projected`: the same sums projected onto the top `LSA_COMPONENTS` singular directions of the training
  sessions, read out at unit length, standardised, then a class-balanced logistic regression (C = 0.1, the
  text-lsa baseline's) (`ProjectedTextHead`: `k` + 1 floats of session state).
The running char-LSA head the stack's third round cross-validates (`fit_lsa_head`, `fit_chosen_lsa_head`;
`features.lsa_head.LsaTextHead`) is the `projected` form with its read-out (unit length or per character)
chosen by inner folds and its own Platt scaling.
The baselines (`baselines.py`) see each session's whole transcript at once: `text-tfidf` (character 1-3-gram
TF-IDF with a vocabulary) and `text-lsa` (its LSA). Every fit (IDF, projection, scaling, weights, the
recalibration) uses the training folds only; the settings were fixed before any run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from depscreen.engine.features.language_head import LanguageTextHead
from depscreen.engine.features.lsa_head import READ_OUTS, LsaTextHead, spoken_chars
from depscreen.engine.features.text import CHAR_BUCKETS, char_ngram_counts, unit_rows
from depscreen.engine.train.baselines import BASELINES
from depscreen.engine.train.char_lsa import LSA_COMPONENTS, fit_char_lsa, idf_weights
from depscreen.engine.train.crossval import stratified_folds
from depscreen.engine.train.metrics import auroc, expected_calibration_error, logistic, platt_scaling
from depscreen.engine.train.repeated import _spread, auroc_difference
from depscreen.engine.train.sessions import LabelledSession

SessionText = list[str]
"""A session as its sentences' transcripts, in order."""


@dataclass(frozen=True)
class ProjectedTextHead:
    """The `projected` running form: logistic regression on the unit-length LSA projection of a session's
    summed IDF-weighted n-gram counts, standardised. A session's state is the projected sum (additive)."""

    idf: np.ndarray
    components: np.ndarray
    """`[buckets, k]`."""
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: float

    def session_logit(self, sentences: SessionText) -> float:
        """The read-out of the summed projection of the sentences' counts (0 when it is zero)."""
        projected = (char_ngram_counts(sentences) * self.idf).sum(0) @ self.components if sentences else 0.0
        norm = float(np.linalg.norm(projected))
        if not norm > 1e-12:
            return 0.0
        return float(((projected / norm - self.mean) / self.std) @ self.coef + self.intercept)


HeadFit = Callable[[list[SessionText], np.ndarray], LanguageTextHead | ProjectedTextHead | LsaTextHead]


def session_texts(sessions: list[LabelledSession]) -> list[SessionText]:
    """Each session's sentence transcripts (sentences without text left out)."""
    return [[s.transcript for s in session.sentences if s.transcript.strip()] for session in sessions]


@cache
def sentence_counts(sentences: tuple[str, ...]) -> np.ndarray:
    """`[sentences, buckets]` each sentence's n-gram counts (remembered: a cross-validation counts each session
    once)."""
    return char_ngram_counts(list(sentences)) if sentences else np.zeros((0, CHAR_BUCKETS), dtype=np.float32)


def _summed_counts(sessions: list[SessionText]) -> np.ndarray:
    """`[sessions, buckets]` the sum of each session's sentences' n-gram counts."""
    return np.stack([sentence_counts(tuple(sentences)).sum(0) for sentences in sessions])


def lsa_prefix_logits(head: LsaTextHead, sentences: SessionText) -> np.ndarray:
    """`[sentences]` the char-LSA head's logit after each sentence (nan while it has no evidence), from the running
    sums a live `LsaAccount` keeps."""
    projected = np.cumsum((sentence_counts(tuple(sentences)) * head.idf) @ head.components, axis=0)
    chars = np.cumsum([spoken_chars(sentence) for sentence in sentences])
    return np.array([head.logit(p, int(c)) for p, c in zip(projected, chars, strict=True)])


def lsa_session_logit(head: LsaTextHead, sentences: SessionText) -> float:
    """The char-LSA head's logit of a whole session (nan without evidence)."""
    logits = lsa_prefix_logits(head, sentences)
    return float(logits[-1]) if len(logits) else float("nan")


def fit_mean_head(sessions: list[SessionText], labels: np.ndarray) -> LanguageTextHead:
    """The `mean` form (see the module docstring)."""
    counts = _summed_counts(sessions)
    idf = idf_weights(counts).astype(np.float32)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000).fit(unit_rows(counts * idf), labels)
    head = LanguageTextHead(model.coef_[0].astype(np.float32), float(model.intercept_[0]), idf)
    scale, shift = platt_scaling(np.array([head.session_logit(sentences) for sentences in sessions]), labels)
    return LanguageTextHead(head.coef * scale, head.intercept * scale + shift, head.idf)


def fit_projected_head(sessions: list[SessionText], labels: np.ndarray, seed: int = 0) -> ProjectedTextHead:
    """The `projected` form (see the module docstring)."""
    counts = _summed_counts(sessions)
    lsa = fit_char_lsa(counts, LSA_COMPONENTS, seed)
    unit = unit_rows((counts * lsa.idf) @ lsa.components)
    mean, std = unit.mean(0), unit.std(0).clip(min=1e-6)
    model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit((unit - mean) / std, labels)
    return ProjectedTextHead(lsa.idf, lsa.components, mean, std, model.coef_[0], float(model.intercept_[0]))


def fit_lsa_head(sessions: list[SessionText], labels: np.ndarray, read_out: str = "unit") -> LsaTextHead:
    """The running char-LSA head (`features.lsa_head`) with `read_out`: IDF, the top `LSA_COMPONENTS` right
    singular vectors of the unit-length IDF-weighted rows (an exact SVD) and the standardisation fitted on the
    sessions' summed counts, a class-balanced logistic regression (C = 0.1, text-lsa's), then Platt-scaled
    on the sessions' own logits."""
    counts = _summed_counts(sessions)
    idf = idf_weights(counts)
    components = np.zeros((CHAR_BUCKETS, LSA_COMPONENTS))
    _, _, vt = np.linalg.svd(unit_rows(counts * idf), full_matrices=False)  # exact: sessions << buckets
    components[:, : min(LSA_COMPONENTS, len(vt))] = vt[:LSA_COMPONENTS].T
    projected = (counts * idf) @ components
    norms = np.linalg.norm(projected, axis=1, keepdims=True)
    chars = np.array([[sum(map(spoken_chars, sentences))] for sentences in sessions], dtype=np.float64)
    scaled = projected / np.where(norms > 1e-9, norms if read_out == "unit" else chars.clip(min=1), 1.0)
    mean, std = scaled.mean(0), scaled.std(0).clip(min=1e-6)
    model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit((scaled - mean) / std, labels)
    coef, intercept = model.coef_[0], float(model.intercept_[0])
    scale, shift = platt_scaling((scaled - mean) / std @ coef + intercept, labels)
    return LsaTextHead(
        idf.astype(np.float32),
        components.astype(np.float32),
        mean,
        std,
        coef * scale,
        intercept * scale + shift,
        read_out,
    )


LSA_CHOICE_FOLDS = 5
"""Inner folds choosing the char-LSA head's read-out on a training set (fixed before any run, seed 0)."""


def choose_read_out(sessions: list[SessionText], labels: np.ndarray) -> str:
    """The read-out whose head scores the higher AUROC out of fold over `LSA_CHOICE_FOLDS` stratified folds of
    `sessions` (a tie: the first of `READ_OUTS`)."""
    folds = stratified_folds(labels.tolist(), min(LSA_CHOICE_FOLDS, int(np.bincount(labels, minlength=2).min())), 0)
    scores = {}
    for read_out in READ_OUTS:
        logits = np.zeros(len(sessions))
        for test in folds:
            train = np.setdiff1d(np.arange(len(sessions)), test)
            head = fit_lsa_head([sessions[i] for i in train], labels[train], read_out)
            logits[test] = [lsa_session_logit(head, sessions[i]) for i in test]
        scores[read_out] = auroc(labels, np.nan_to_num(logits))
    return max(READ_OUTS, key=lambda read_out: scores[read_out])


def fit_chosen_lsa_head(sessions: list[SessionText], labels: np.ndarray) -> LsaTextHead:
    """`fit_lsa_head` with the read-out `choose_read_out` picks on the same sessions."""
    return fit_lsa_head(sessions, labels, choose_read_out(sessions, labels))


FORMS: dict[str, HeadFit] = {"mean": fit_mean_head, "projected": fit_projected_head}
"""The running forms compared, by name."""


def out_of_fold_logits(
    fit: HeadFit, sessions: list[SessionText], labels: np.ndarray, folds: list[np.ndarray]
) -> np.ndarray:
    """`[sessions]` each session's logit under the head fitted on the other folds (0 when it reads nothing)."""
    logits = np.zeros(len(sessions))
    for test in folds:
        train = np.setdiff1d(np.arange(len(sessions)), test)
        head = fit([sessions[i] for i in train], labels[train])
        logits[test] = [head.session_logit(sessions[i]) for i in test]
    return logits


def baseline_probabilities(
    name: str, transcripts: list[str], labels: np.ndarray, folds: list[np.ndarray], scored: list[str] | None = None
) -> np.ndarray:
    """`[sessions]` out-of-fold probabilities of the whole-transcript baseline `name` (`baselines.BASELINES`),
    fitted on `transcripts` and scored on `scored` (the same sessions' other text; default `transcripts`)."""
    scored = transcripts if scored is None else scored
    probabilities = np.zeros(len(labels))
    for test in folds:
        train = np.setdiff1d(np.arange(len(labels)), test)
        model = BASELINES[name].model().fit([transcripts[i] for i in train], labels[train])
        probabilities[test] = model.predict_proba([scored[i] for i in test])[:, 1]
    return probabilities


def compare_running_forms(
    sessions: list[LabelledSession], folds: int, repeats: int, seed: int = 0, log: Callable[[str], None] = print
) -> dict[str, object]:
    """Both running forms and the `text-tfidf` / `text-lsa` baselines on `repeats` fold assignments: per
    method the AUROC and ECE over repeats, and per pair the paired AUROC differences (see the module docstring)."""
    texts = session_texts(sessions)
    transcripts = ["".join(sentences) for sentences in texts]
    labels = np.array([s.label for s in sessions])
    methods = [*FORMS, "text-tfidf", "text-lsa"]
    pairs = [("projected", "mean"), ("projected", "text-lsa"), ("projected", "text-tfidf"), ("mean", "text-lsa")]
    rows = []
    for repeat in range(repeats):
        assignment = stratified_folds(labels.tolist(), folds, seed + repeat)
        probabilities = {
            name: logistic(out_of_fold_logits(fit, texts, labels, assignment)) for name, fit in FORMS.items()
        }
        for name in ("text-tfidf", "text-lsa"):
            probabilities[name] = baseline_probabilities(name, transcripts, labels, assignment)
        row = {
            "seed": seed + repeat,
            "auroc": {name: auroc(labels, probabilities[name]) for name in methods},
            "ece": {name: expected_calibration_error(labels, probabilities[name]) for name in methods},
            "difference": {
                f"{a} - {b}": auroc_difference(labels, probabilities[a], probabilities[b], seed + repeat)
                for a, b in pairs
            },
        }
        rows.append(row)
        log(f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{n} {row['auroc'][n]:.3f}" for n in methods))
    return {
        "folds": folds,
        "repeats": repeats,
        "auroc": {name: _spread([row["auroc"][name] for row in rows]) for name in methods},
        "ece": {name: _spread([row["ece"][name] for row in rows]) for name in methods},
        "auroc_difference": {
            pair: {
                **_spread([row["difference"][pair]["value"] for row in rows]),
                "repeats_first_higher": sum(row["difference"][pair]["value"] > 0 for row in rows),
                "repeats_interval_above_zero": sum(row["difference"][pair]["low"] > 0 for row in rows),
            }
            for pair in rows[0]["difference"]
        },
    }


def train_char_head(
    sessions: list[LabelledSession],
    out: Path,
    folds: int,
    repeats: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Compare the running forms (`compare_running_forms`), fit the one with the higher mean AUROC on every
    session and write it to `out / "text_head_chars.npz"`, with the comparison in `out / "char_head.json"`.
    Only the `mean` form has a live account (`features.language_head.TextHeadAccount`): a `projected` win is
    reported and nothing is written, since the runtime cannot carry it."""
    results = compare_running_forms(sessions, folds, repeats, seed, log)
    chosen = max(FORMS, key=lambda name: results["auroc"][name]["mean"])
    results["chosen"] = chosen
    out.mkdir(parents=True, exist_ok=True)
    if chosen == "mean":
        fit_mean_head(session_texts(sessions), np.array([s.label for s in sessions])).save(out / "text_head_chars.npz")
        log(f"wrote {out / 'text_head_chars.npz'} (the mean form, AUROC {results['auroc']['mean']['mean']})")
    else:
        log("the projected form held up better: the live text account carries the mean form only; nothing written")
    (out / "char_head.json").write_text(json.dumps(results, indent=2))
    return results
