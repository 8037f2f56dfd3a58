"""A language's running char-LSA head: a logistic regression on the additive LSA projection of a session's
character n-gram counts, read out at the end of every sentence.

Fitted by `train.char_head.fit_lsa_head` on a labelled dataset's sessions: IDF of the sessions' summed hashed
character 1-3-gram counts (`features.text.char_ngram_counts`, the input of `LanguageTextHead` too), the top
right singular vectors of the unit-length IDF-weighted rows, the read-out's training mean and sd, and the
weights of a class-balanced logistic regression, Platt-scaled on the training sessions.

A session's state (`LsaAccount`) is the sum of its sentences' IDF-weighted counts projected onto those
components (`components` floats) and its character count: nothing of what was said. Being a sum, the state
after sentence k is the projection of sentences 1..k together, so the running logit equals the whole-prefix
head's. The read-out divides the projection by its length (`unit`) or by the character count (`per-char`);
a session whose characters the head never saw in training (a zero projection) has no evidence yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from depscreen.engine.features.text import CHAR_BUCKETS, char_ngram_counts

READ_OUTS = ("unit", "per-char")
"""How the running projection is normalised before the logistic regression (chosen in training by inner CV)."""


def spoken_chars(transcript: str) -> int:
    """The characters of a transcript that count as evidence (whitespace left out)."""
    return len("".join(transcript.split()))


@dataclass(frozen=True)
class LsaTextHead:
    idf: np.ndarray
    """`[CHAR_BUCKETS]` (0 for buckets no training session had)."""
    components: np.ndarray
    """`[CHAR_BUCKETS, k]`."""
    mean: np.ndarray
    """`[k]` of the training sessions' read-outs."""
    std: np.ndarray
    coef: np.ndarray
    """`[k]` weights on the standardised read-out (Platt scaling folded in)."""
    intercept: float
    read_out: str = "unit"
    language: str = ""

    def __post_init__(self) -> None:
        k = self.components.shape[-1]
        if self.read_out not in READ_OUTS:
            raise ValueError(f"unknown char-LSA read-out {self.read_out!r}: use one of {', '.join(READ_OUTS)}")
        shapes = (self.idf.shape, self.components.shape, self.mean.shape, self.std.shape, self.coef.shape)
        if shapes != ((CHAR_BUCKETS,), (CHAR_BUCKETS, k), (k,), (k,), (k,)):
            raise ValueError(f"a char-LSA head needs {CHAR_BUCKETS} buckets and k components throughout, got {shapes}")

    @property
    def dim(self) -> int:
        return self.components.shape[1]

    def projections(self, texts: list[str]) -> np.ndarray:
        """`[N, k]` each text's IDF-weighted counts projected onto the components (additive over texts)."""
        return (char_ngram_counts(texts) * self.idf) @ self.components

    def logit(self, projected: np.ndarray, chars: int) -> float:
        """The logit of a session whose projections sum to `projected` over `chars` characters; nan while it has
        no evidence (no characters, or none the head knows)."""
        norm = float(np.linalg.norm(projected))
        if chars <= 0 or not norm > 1e-9 or not math.isfinite(norm):
            return float("nan")
        scaled = projected / (norm if self.read_out == "unit" else chars)
        return float(((scaled - self.mean) / self.std) @ self.coef + self.intercept)

    def session_logit(self, sentences: list[str]) -> float:
        """The logit after every sentence of `sentences` (as a live session accumulates it; nan without evidence)."""
        account = LsaAccount.empty(self.dim)
        for sentence, projected in zip(sentences, self.projections(sentences), strict=True):
            account = account.add(projected, sentence, self.language)
        return account.logit(self)

    def save(self, path) -> None:
        np.savez(
            path,
            idf=self.idf.astype(np.float32),
            components=self.components.astype(np.float32),
            mean=self.mean,
            std=self.std,
            coef=self.coef,
            intercept=np.float64(self.intercept),
            read_out=np.array(self.read_out),
        )

    @classmethod
    def load(cls, path) -> LsaTextHead:
        with np.load(path) as saved:
            try:
                return cls(
                    saved["idf"].astype(np.float32),
                    saved["components"].astype(np.float32),
                    saved["mean"].astype(np.float64),
                    saved["std"].astype(np.float64),
                    saved["coef"].astype(np.float64),
                    float(saved["intercept"]),
                    str(saved["read_out"]),
                )
            except KeyError as error:
                raise ValueError(f"{path} is not a char-LSA head file: it has no {error}") from None


@dataclass(frozen=True)
class LsaAccount:
    """A session's running char-LSA state: the summed projection of its sentences and their character count."""

    projected: tuple[float, ...] = field(default=())
    chars: int = 0
    language: str = ""

    @classmethod
    def empty(cls, dim: int) -> LsaAccount:
        return cls((0.0,) * dim)

    def add(self, projection: np.ndarray, transcript: str, language: str = "") -> LsaAccount:
        """The account after one more sentence (`projection`: its `LsaTextHead.projections` row)."""
        if not np.all(np.isfinite(projection)):
            raise ValueError("a sentence's char-LSA projection is not finite")
        total = projection if not self.projected else np.asarray(self.projected) + projection
        return LsaAccount(tuple(map(float, total)), self.chars + spoken_chars(transcript), language or self.language)

    def logit(self, head: LsaTextHead) -> float:
        """The head's logit of the session so far (nan before any evidence, or with a state of another size)."""
        if len(self.projected) != head.dim:
            return float("nan")
        return head.logit(np.asarray(self.projected), self.chars)
