"""Classic session-level baselines, cross-validated on the same folds and protocol as the screening model.

- `text-tfidf`: character 1-3-gram TF-IDF of the session's whole transcript (what its captions said) +
  class-balanced logistic regression; works for Mandarin without word segmentation.
- `text-lsa`: the same TF-IDF reduced to `char_lsa.LSA_COMPONENTS` latent dimensions (truncated SVD fitted on
  the training part) + class-balanced logistic regression: the session-level twin of the model's text pathway.
- `audio-functionals`: mean and standard deviation of each eGeMAPS LLD over all the session's frames (50
  numbers) + class-balanced logistic regression on standardised values.
- `text-embedding`: the mean of the session's sentence text features (the model's own text input: sentence
  embedding + PHQ-8 similarities) + class-balanced logistic regression on standardised values; it tells
  whether the text encoder's representation carries the signal that the character n-grams find.

Each fold: fit on the training part of the training folds, choose the threshold with the best F1 on the
held-out validation part (the same split `crossval.fit` uses), score the test fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from depscreen.engine.train.char_lsa import LSA_COMPONENTS
from depscreen.engine.train.crossval import VALIDATION_SHARE, CrossValidation, split_validation, stratified_folds
from depscreen.engine.train.metrics import best_f1_threshold
from depscreen.engine.train.sessions import LabelledSession


def transcript(session: LabelledSession) -> str:
    return "".join(s.transcript for s in session.sentences)


def audio_functionals(session: LabelledSession) -> np.ndarray:
    """`[50]`: per-LLD mean then per-LLD standard deviation over every frame of the session."""
    frames = np.concatenate([s.audio for s in session.sentences if len(s.audio)])
    return np.concatenate([frames.mean(0), frames.std(0)])


def mean_text_features(session: LabelledSession) -> np.ndarray:
    """The mean text feature vector of the session's sentences that have text."""
    return np.mean([s.text for s in session.sentences if s.text is not None], axis=0)


def _char_tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)


def _text_model() -> Pipeline:
    return make_pipeline(_char_tfidf(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))


def _text_lsa_model() -> Pipeline:
    return make_pipeline(
        _char_tfidf(),
        TruncatedSVD(LSA_COMPONENTS, random_state=0),
        StandardScaler(),
        LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000),
    )


def _standardised_model() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000))


@dataclass(frozen=True)
class Baseline:
    features: Callable[[LabelledSession], object]
    """Session → the classifier's input."""
    model: Callable[[], Pipeline]
    """An untrained classifier."""
    has_input: Callable[[LabelledSession], bool]
    """Whether a session has what `features` reads (a baseline runs only when every session has it)."""


BASELINES: dict[str, Baseline] = {
    "text-tfidf": Baseline(transcript, _text_model, lambda session: bool(transcript(session).strip())),
    "text-lsa": Baseline(transcript, _text_lsa_model, lambda session: bool(transcript(session).strip())),
    "audio-functionals": Baseline(
        audio_functionals, _standardised_model, lambda session: any(len(s.audio) for s in session.sentences)
    ),
    "text-embedding": Baseline(
        mean_text_features, _standardised_model, lambda session: any(s.text is not None for s in session.sentences)
    ),
}
"""The classic baselines by name."""


def applicable_baselines(sessions: list[LabelledSession]) -> list[str]:
    """The baselines whose input every session has (no text-tfidf for a dataset without transcripts)."""
    return [name for name, baseline in BASELINES.items() if all(baseline.has_input(s) for s in sessions)]


def cross_validate_baseline(name: str, sessions: list[LabelledSession], folds: int, seed: int) -> CrossValidation:
    """Out-of-fold probabilities of baseline `name` (the threshold protocol is the screening model's)."""
    baseline = BASELINES[name]
    features, make_model = baseline.features, baseline.model
    labels = np.array([s.label for s in sessions])
    probabilities, thresholds, fold_of = np.zeros(len(sessions)), np.zeros(len(sessions)), np.zeros(len(sessions), int)
    for k, test in enumerate(stratified_folds(labels.tolist(), folds, seed)):
        test_set = set(test.tolist())
        train, validation = split_validation(
            [s for i, s in enumerate(sessions) if i not in test_set], VALIDATION_SHARE, seed
        )
        model = make_model().fit([features(s) for s in train], [s.label for s in train])
        validation_p = model.predict_proba([features(s) for s in validation])[:, 1]
        threshold = best_f1_threshold(np.array([s.label for s in validation]), validation_p)
        probabilities[test] = model.predict_proba([features(sessions[i]) for i in test])[:, 1]
        thresholds[test], fold_of[test] = threshold, k
    return CrossValidation(
        session_ids=[s.session_id for s in sessions],
        labels=labels,
        probabilities=probabilities,
        prefix_probabilities=[np.array([p]) for p in probabilities],
        thresholds=thresholds,
        folds=fold_of,
        epochs=[],
    )
