"""What every dataset adapter yields: labelled sessions of sentence features, and what it had to skip."""

from __future__ import annotations

from dataclasses import dataclass, field

from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.transcript_error import ErrorCount


@dataclass(frozen=True)
class LabelledSession:
    """One interview (or one volunteer's answers) as the live server would see it, with its label."""

    label: int
    """1 = screens positive for depression by the dataset's own cut-off, 0 = not."""
    sentences: list[SentenceFeatures]
    session_id: str = ""
    score: float | None = None
    """The dataset's questionnaire score (SDS index, PHQ-8 total) where it has one."""


@dataclass(frozen=True)
class Skipped:
    """Something a dataset adapter did not use, and why (training reports these; nothing is dropped silently)."""

    item: str
    """Session id, or a file path."""
    reason: str


@dataclass
class DatasetLoad:
    """The sessions a dataset gave, plus everything it skipped."""

    name: str
    sessions: list[LabelledSession] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    text: str = "human"
    """Where the sentence text came from: the dataset's human transcripts, or the live ASR stage ("asr")."""
    asr_error: ErrorCount | None = None
    """With ASR text: its error against the dataset's human transcripts (characters for Mandarin), pooled
    over the sessions that have both; None with human text."""

    @property
    def positives(self) -> int:
        return sum(s.label for s in self.sessions)

    def summary(self) -> str:
        """One line: how many sessions, positives, sentences and skipped items."""
        sentences = sum(len(s.sentences) for s in self.sessions)
        line = (
            f"{self.name}: {len(self.sessions)} sessions ({self.positives} positive), {sentences} sentences, "
            f"{len(self.skipped)} skipped"
        )
        if self.asr_error is not None:
            line += (
                f"; ASR text, error {100 * self.asr_error.rate:.1f}% against the human transcripts "
                f"({self.asr_error.errors}/{self.asr_error.reference_units})"
            )
        return line
