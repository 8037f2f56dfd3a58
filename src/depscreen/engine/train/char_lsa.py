"""Character n-gram TF-IDF/LSA of the model's text pathway, fitted on training sentences only.

The text featurizer `char-ngrams-v1` gives each sentence hashed character 1-3-gram counts; the model projects
them (`model.encoders.TextEncoder.project`) with what is fitted here on the training sentences of a fold:
TF-IDF weights (buckets no training sentence has get weight 0, as a vocabulary would drop them), unit
rows, the top `components` right singular vectors, and the mean and sd of the projected training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.extmath import randomized_svd

from depscreen.engine.features.text import PHQ8_ITEMS, unit_rows
from depscreen.engine.train.sessions import LabelledSession

LSA_COMPONENTS = 32
"""Dimensions of the projected text vector of models trained on datasets (fixed beforehand, not tuned)."""


@dataclass(frozen=True)
class CharLsa:
    """A fitted projection: `idf [buckets]`, `components [buckets, k]`, projected `mean [k]` and `std [k]`."""

    idf: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """(idf, components, mean, std) as float32 tensors, for `TextEncoder.fit_projection`."""
        return tuple(torch.as_tensor(a, dtype=torch.float32) for a in (self.idf, self.components, self.mean, self.std))


def has_text(sessions: list[LabelledSession]) -> bool:
    """Whether any sentence has text. Without any (a dataset with no transcripts and no ASR text) there is
    nothing to fit the projection on: it stays zero and the text pathway is never trained."""
    return any(s.text is not None for session in sessions for s in session.sentences)


def sentence_counts(sessions: list[LabelledSession]) -> np.ndarray:
    """`[sentences with text, buckets]`: the n-gram count part of each sentence's text features."""
    rows = [s.text[: -len(PHQ8_ITEMS)] for session in sessions for s in session.sentences if s.text is not None]
    if not rows:
        raise ValueError("no training sentence has text: the character text pathway needs transcripts to fit on")
    return np.stack(rows).astype(np.float64)


def idf_weights(counts: np.ndarray) -> np.ndarray:
    """`[buckets]` smoothed IDF of `[rows, buckets]` counts; 0 for buckets no row has."""
    document_frequency = (counts > 0).sum(0)
    return np.where(document_frequency > 0, np.log((1 + len(counts)) / (1 + document_frequency)) + 1, 0.0)


def fit_char_lsa(counts: np.ndarray, components: int, seed: int = 0) -> CharLsa:
    """Fit the projection on `[rows, buckets]` counts (see the module docstring); with fewer than `components`
    informative directions the rest of the basis is zero."""
    rows, buckets = counts.shape
    idf = idf_weights(counts)
    weighted = counts * idf
    unit = unit_rows(weighted)
    rank = min(components, rows - 1, buckets)
    basis = np.zeros((buckets, components))
    if rank > 0:
        _, _, vt = randomized_svd(unit, rank, random_state=seed)
        basis[:, :rank] = vt.T
    projected = unit @ basis
    return CharLsa(idf, basis, projected.mean(0), projected.std(0))
