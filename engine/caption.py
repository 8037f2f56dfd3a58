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
