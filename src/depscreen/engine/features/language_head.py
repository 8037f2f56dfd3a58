"""A language's own text head: a character n-gram logistic regression trained on that language's labelled text,
scoring each sentence of a session whose language the screening model's text pathway never learned.

The English head is fitted by `depscreen train --text-corpora` (`train.text_head`) on English forum posts
(DepSign, Naseem et al. 2022, a weakly labelled Reddit set; research use only) and shipped as
`model/weights/english-text-chars.npz`, checked against its SHA-256 at load. It reads what the EATD-trained model
cannot: English character n-grams. It scores posts, not interviews: on spoken answers it is an unvalidated
transfer, so its estimate is shown beside the screening estimate (as the text modality's own estimate) and never
enters it.

A session's text estimate is the sigmoid of the character-weighted mean of its sentences' logits
(`TextHeadAccount`): long answers count for more than "yes", and the running value needs two numbers of state,
which hold nothing of what was said (the resume snapshot carries them).

The Mandarin head is fitted by `depscreen train --char-head --dataset eatd --data DIR` (`train.char_head`) on
the EATD training split's transcripts and shipped as `model/weights/mandarin-text-chars.npz`, in the same form
and with the same two numbers of session state: that form held up better in repeated cross-validation than an
additive LSA projection of the running n-gram counts (docs/MODEL_CARD.md).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from depscreen.engine.features.text import CHAR_BUCKETS, char_ngram_counts, unit_rows

WEIGHTS = Path(__file__).resolve().parent.parent / "model" / "weights"


@dataclass(frozen=True)
class ShippedHead:
    """A head file in the package, its checksum and what it was trained on (for notices and the model card)."""

    file: str
    sha256: str
    trained_on: str


SHIPPED_HEADS = {
    "en": ShippedHead(
        file="english-text-chars.npz",
        sha256="a0447d2c4df750ced1195ce1bd494afb663aa67a07a2fe6abd7d4a65a1f52797",
        trained_on="English forum posts (DepSign 2022, Naseem 2022, a Reddit depression set), not interviews",
    ),
    "zh": ShippedHead(
        file="mandarin-text-chars.npz",
        sha256="cb0f9576d6f76f4200a5d5d89a8d54378649b4935ebfe10a15a4d641f58be7bf",
        trained_on="the EATD-Corpus training split's transcripts (82 Mandarin-speaking volunteers; research use only)",
    ),
}
"""The languages that have their own text head, by primary language code."""


@dataclass(frozen=True)
class LanguageTextHead:
    """Logistic regression on a text's hashed character 1-3-grams, IDF-weighted and scaled to unit length."""

    coef: np.ndarray
    """`[CHAR_BUCKETS]` weights."""
    intercept: float
    idf: np.ndarray
    """`[CHAR_BUCKETS]` inverse document frequencies of the training texts."""
    language: str = ""
    """The primary code of the language it reads ("" for a head not loaded as a shipped one)."""

    def logits(self, texts: list[str]) -> np.ndarray:
        """`[N]` the head's logit of each text on its own."""
        return char_head_inputs(texts, self.idf) @ self.coef + self.intercept

    def session_logit(self, sentences: list[str]) -> float:
        """The logit of a session told in `sentences`, as a live session accumulates it (`TextHeadAccount`)."""
        account = TextHeadAccount()
        for sentence, logit in zip(sentences, self.logits(sentences), strict=True):
            account.add(float(logit), sentence)
        return account.logit

    def save(self, path: Path) -> None:
        np.savez(path, coef=self.coef, intercept=np.float32(self.intercept), idf=self.idf)

    @classmethod
    def load(cls, path: Path) -> LanguageTextHead:
        with np.load(path) as saved:
            head = cls(saved["coef"].astype(np.float32), float(saved["intercept"]), saved["idf"].astype(np.float32))
        if head.coef.shape != (CHAR_BUCKETS,) or head.idf.shape != (CHAR_BUCKETS,):
            raise ValueError(f"{path} is not a character n-gram head of {CHAR_BUCKETS} buckets")
        return head


def char_head_inputs(texts: list[str], idf: np.ndarray) -> np.ndarray:
    """`[N, CHAR_BUCKETS]` a character head's input rows: IDF-weighted n-gram counts of unit length (an empty
    text: zeros)."""
    return unit_rows(char_ngram_counts(texts) * idf)


@dataclass
class TextHeadAccount:
    """A session's running text-head evidence: the character-weighted sum of its sentences' logits."""

    logit_sum: float = 0.0
    chars: int = 0
    language: str = ""
    """The language of the head whose logits these are ("" before any, and in snapshots written before it)."""

    def add(self, logit: float, transcript: str, language: str = "") -> None:
        weight = len("".join(transcript.split()))
        self.logit_sum += weight * logit
        self.chars += weight
        self.language = language or self.language

    @property
    def logit(self) -> float:
        return self.logit_sum / self.chars if self.chars else 0.0

    @property
    def probability(self) -> float | None:
        """The session's text estimate so far; None before any sentence with text."""
        return 1.0 / (1.0 + math.exp(-self.logit)) if self.chars else None


@cache
def language_text_head(language: str) -> LanguageTextHead | None:
    """The shipped head of `language` (a primary code), None when it has none. Its file is checked against the
    pinned SHA-256 first: a damaged or replaced file raises ValueError saying how to restore it."""
    shipped = SHIPPED_HEADS.get(language)
    if shipped is None:
        return None
    path = WEIGHTS / shipped.file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != shipped.sha256:
        raise ValueError(
            f"{path} has SHA-256 {digest}, not the pinned {shipped.sha256}: the file is damaged or was replaced; "
            "reinstall depscreen (or restore the file from the repository)"
        )
    return replace(LanguageTextHead.load(path), language=language)
