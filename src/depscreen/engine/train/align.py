"""Spread an untimed transcript over the sentences the segmenter found, as a platform's captions would be.

EATD gives one transcript per answer and no timing. Its clauses (split at Chinese and Latin punctuation)
are laid along the answer in proportion to speech time: clause i goes to the sentence whose share of the
answer's speech contains the middle of clause i's share of the characters. A sentence that gets no clause
has no text (as a live sentence without captions or ASR would).
"""

from __future__ import annotations

import re

import numpy as np

CLAUSE_END = re.compile(r"(?<=[，。！？；、,.!?;])")
"""Split points: after each punctuation mark."""


def split_clauses(text: str) -> list[str]:
    """Non-empty clauses of `text`, punctuation kept, whitespace collapsed."""
    return [c for c in (" ".join(part.split()) for part in CLAUSE_END.split(text)) if c.strip("，。！？；、,.!?; ")]


def align_transcript(text: str, speech_ms: list[int]) -> list[str]:
    """One caption per sentence (possibly empty) for sentences with the given speech durations."""
    if not speech_ms:
        return []
    clauses = split_clauses(text)
    if not clauses:
        return [""] * len(speech_ms)
    lengths = np.array([len(c) for c in clauses], dtype=np.float64)
    middles = (np.cumsum(lengths) - lengths / 2) / lengths.sum()
    speech = np.asarray(speech_ms, dtype=np.float64).clip(min=1.0)
    bounds = np.cumsum(speech) / speech.sum()
    owners = np.searchsorted(bounds, middles, side="left").clip(max=len(speech_ms) - 1)
    captions: list[list[str]] = [[] for _ in speech_ms]
    for clause, owner in zip(clauses, owners, strict=True):
        captions[int(owner)].append(clause)
    return ["".join(parts) for parts in captions]
