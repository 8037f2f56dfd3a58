"""Word and character error of a transcript against a reference (WER for spaced languages, CER for Mandarin).

Both texts are normalised alike before they are compared: punctuation, symbols and whitespace are removed
(Chinese and Latin alike) and Latin letters lower-cased. Mandarin (`zh`, `cmn`, `zh-CN`, ...) is compared
character by character, every other language word by word. Script is not converted: a Traditional character
for a Simplified one counts as an error (the live ASR is prompted to write Simplified).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from depscreen.engine.language import primary_language

CHARACTER_LANGUAGES = frozenset({"zh"})
"""Languages (Whisper codes) scored by characters: written without spaces between words."""


def error_units(text: str, language: str) -> list[str]:
    """The words (lower-case, apostrophes kept) or, for Mandarin, the characters of `text`, without
    punctuation, symbols or whitespace."""
    if primary_language(language) in CHARACTER_LANGUAGES:
        return list(re.sub(r"[\W_]", "", text.lower()))
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance (substitutions, deletions and insertions) between two unit lists."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class ErrorCount:
    """Edit distance and reference length, summed over any number of transcripts (pool, then divide)."""

    errors: int = 0
    reference_units: int = 0

    @property
    def rate(self) -> float:
        """Errors per reference unit (0 for an empty reference)."""
        return self.errors / self.reference_units if self.reference_units else 0.0

    def __add__(self, other: ErrorCount) -> ErrorCount:
        return ErrorCount(self.errors + other.errors, self.reference_units + other.reference_units)


def transcript_error(reference: str, hypothesis: str, language: str) -> ErrorCount:
    """The error of `hypothesis` against `reference` in `language` (a BCP-47 tag), both normalised."""
    units = error_units(reference, language)
    return ErrorCount(edit_distance(units, error_units(hypothesis, language)), len(units))
