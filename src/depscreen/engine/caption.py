"""Caption: text already known for a span of the audio. Light on purpose: the typed session core names it
without loading the pipeline's models."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caption:
    """Text already known for a span of the audio (the patient's words): a client's caption, or a timed line of a
    dataset's transcript."""

    start_ms: int
    end_ms: int
    text: str


def checked_caption(start_ms: int, end_ms: int, text: str, max_chars: int) -> Caption:
    """The caption a client sent, its whitespace folded; ValueError naming what is wrong with an empty or negative
    span, text over `max_chars` characters, or blank text."""
    if start_ms < 0 or end_ms <= start_ms:
        raise ValueError(f"caption span [{start_ms}, {end_ms}] ms is empty or negative")
    if len(text) > max_chars:
        raise ValueError(f"caption of {len(text)} characters exceeds {max_chars}")
    if not text.strip():
        raise ValueError("caption text is empty")
    return Caption(start_ms, end_ms, " ".join(text.split()))
