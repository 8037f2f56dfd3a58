"""Evaluate a checkpoint on a labelled dataset the way the server scores: one `Screener.step` per sentence.

Each session is streamed sentence by sentence through the same step function the live server uses (the
recurrent state advanced one sentence at a time); the estimate after the last sentence is the session's
score, and the checkpoint's decision threshold turns it into a screening result. The report lists every
session's final estimate and interval too, so anyone can check what the estimate goes with.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from depscreen.engine.features.language_head import language_text_head
from depscreen.engine.runtime.checkpoint import session_fingerprint, text_route
from depscreen.engine.runtime.screener import RunningEstimate, Screener
from depscreen.engine.train.metrics import screening_report
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.stack import out_of_fold_evaluation


def stream_session(screener: Screener, session: LabelledSession, language: str = "") -> list[RunningEstimate]:
    """The running estimate after each sentence, exactly as a live session in `language` (a primary code)
    would receive them: with its own text head's logit on each sentence where the checkpoint routes that
    language to one, as the live pipeline adds it."""
    route = text_route(screener.facts, language) if language else None
    head = language_text_head(route.own_head) if route and route.own_head else None
    track = screener.new_session()
    estimates = []
    for sentence in session.sentences:
        if head is not None and sentence.transcript:
            logit = float(head.logits([sentence.transcript])[0])
            sentence = replace(sentence, language_text_logit=logit, language_text_head=head.language)
        estimates.append(screener.step(track, sentence))
    return estimates


def evaluate(
    screener: Screener,
    sessions: list[LabelledSession],
    seed: int = 0,
    language: str = "",
    learnt: list[LabelledSession] | None = None,
) -> dict[str, object]:
    """Metrics with 95% CIs and baselines (`metrics.screening_report`) of the streamed final estimates of
    sessions in `language` (`stream_session`). On exactly the checkpoint's training split the estimates are
    out of fold instead (`stack.out_of_fold_evaluation`; `learnt`: the same sessions with the split's text,
    default `sessions`); on part of it, ValueError."""
    if not sessions:
        raise ValueError("no sessions to evaluate")
    split = screener.facts.training_split
    if split is not None and split.overlaps(sessions):
        ids = [session_fingerprint(s) for s in sessions]
        if sorted(ids) != sorted(split.sessions):
            seen = len(set(ids) & set(split.sessions))
            raise ValueError(
                f"{seen} of these {len(ids)} sessions trained model {screener.facts.model_id}, which was fitted on "
                f"{len(split.sessions)}: evaluate on sessions it never saw, or on exactly its training split (then "
                "the estimates are out of fold)"
            )
        return out_of_fold_evaluation(screener.facts, sessions, learnt or sessions, language, seed)
    streamed = [stream_session(screener, s, language) for s in sessions]
    finals = [estimates[-1] for estimates in streamed]
    probabilities = np.array([e.probability for e in finals])
    labels = np.array([s.label for s in sessions])
    threshold = screener.facts.decision_threshold
    report = screening_report(labels, probabilities, threshold, seed)
    listing = [
        {
            "id": session.session_id,
            "label": session.label,
            "probability": round(final.probability, 4),
            "interval_low": round(final.interval_low, 4),
            "interval_high": round(final.interval_high, 4),
        }
        for session, final in zip(sessions, finals, strict=True)
    ]
    return {
        "model": screener.facts.model_id,
        "threshold": threshold,
        **report,
        "interval": interval_report(streamed, labels),
        "sessions": listing,
    }


def interval_report(streamed: list[list[RunningEstimate]], labels: np.ndarray) -> dict[str, object]:
    """How often the interval holds the label, over every estimate with enough speech and over each session's
    last one (per label too), and at the last one its mean width and the share that rules one label out (excludes
    0 or 1); `level` 0 when the checkpoint has no interval calibration."""
    prefixes = [(e, label) for estimates, label in zip(streamed, labels, strict=True) for e in estimates]
    heard = [(e, label) for e, label in prefixes if e.enough_speech]
    last = [(estimates[-1], label) for estimates, label in zip(streamed, labels, strict=True)]
    last = [(e, label) for e, label in last if e.enough_speech]

    def coverage(pairs: list[tuple[RunningEstimate, int]]) -> float | None:
        hits = [e.interval_low <= label <= e.interval_high for e, label in pairs]
        return round(float(np.mean(hits)), 4) if hits else None

    return {
        "level": max((e.interval_level for e, _ in prefixes), default=0.0),
        "estimates_with_enough_speech": len(heard),
        "coverage": coverage(heard),
        "coverage_by_label": {str(v): coverage([p for p in heard if p[1] == v]) for v in (0, 1)},
        "sessions_with_enough_speech": len(last),
        "coverage_last": coverage(last),
        "mean_width_last": round(float(np.mean([e.interval_high - e.interval_low for e, _ in last])), 4)
        if last
        else None,
        "rules_out_a_label_last": round(float(np.mean([e.interval_low > 0 or e.interval_high < 1 for e, _ in last])), 4)
        if last
        else None,
    }
