"""Segmenter accuracy against human speaker turns: frame-level speech F1 of sentence spans vs RTTM turns.

Truth is the union of every speaker's turns in an RTTM file (`SPEAKER <uri> 1 <start s> <duration s> ...`);
the prediction is the union of the sentence spans the segmenter emits. Both are laid on 10 ms frames and a
frame counts as inside a span when its centre is. Precision, recall and F1 of the speech frames follow; over
several recordings they are pooled (every frame of every recording counts once) and also averaged per
recording.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depscreen.engine.media import SAMPLE_RATE, decode_audio_file

SCORE_FRAME_MS = 10
"""Frame of the score: 10 ms, as in the AMI anchors the README of the data set gives."""

Span = tuple[float, float]
"""A start and end in seconds."""


@dataclass(frozen=True)
class SpeechScore:
    """Frame counts of one or more recordings, and the rates that follow."""

    true_positive: int
    false_positive: int
    false_negative: int

    @property
    def precision(self) -> float:
        predicted = self.true_positive + self.false_positive
        return self.true_positive / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positive + self.false_negative
        return self.true_positive / actual if actual else 1.0

    @property
    def f1(self) -> float:
        wrong = self.false_positive + self.false_negative
        return 2 * self.true_positive / (2 * self.true_positive + wrong) if self.true_positive or wrong else 1.0

    def __add__(self, other: SpeechScore) -> SpeechScore:
        return SpeechScore(
            self.true_positive + other.true_positive,
            self.false_positive + other.false_positive,
            self.false_negative + other.false_negative,
        )


def read_rttm(path: str | Path) -> dict[str, list[Span]]:
    """Speaker turns per recording (`uri`) of an RTTM file, as (start, end) seconds; other record types are
    skipped. A malformed SPEAKER line raises ValueError naming the file and line."""
    turns: dict[str, list[Span]] = defaultdict(list)
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0] != "SPEAKER":
            continue
        try:
            start, duration = float(parts[3]), float(parts[4])
        except (IndexError, ValueError) as error:
            raise ValueError(
                f"{path}:{number}: not an RTTM SPEAKER line (SPEAKER <uri> <channel> <start s> <duration s> ...): "
                f"{line!r}"
            ) from error
        if duration < 0:
            raise ValueError(f"{path}:{number}: negative turn duration {duration}")
        turns[parts[1]].append((start, start + duration))
    return dict(turns)


def speech_frames(spans: Iterable[Span], duration_s: float) -> np.ndarray:
    """Boolean speech mask of 10 ms frames over `duration_s`: a frame is speech when its centre is in a span."""
    count = round(duration_s * 1000) // SCORE_FRAME_MS
    centres = (np.arange(count) + 0.5) * SCORE_FRAME_MS / 1000
    mask = np.zeros(count, dtype=bool)
    for start, end in spans:
        mask |= (centres >= start) & (centres < end)
    return mask


def score_spans(predicted: Iterable[Span], truth: Iterable[Span], duration_s: float) -> SpeechScore:
    """Frame-level speech score of predicted spans against true ones over a recording of `duration_s`."""
    guess, actual = speech_frames(predicted, duration_s), speech_frames(truth, duration_s)
    return SpeechScore(int(np.sum(guess & actual)), int(np.sum(guess & ~actual)), int(np.sum(~guess & actual)))


Segment = Callable[[np.ndarray], Sequence[Span]]
"""Spans (seconds) of the sentences a segmenter finds in 16 kHz mono int16 PCM."""


@dataclass(frozen=True)
class CorpusScore:
    """Scores of a segmenter over a folder of recordings, and the CPU it spent."""

    clips: dict[str, SpeechScore]
    cpu_s: float
    """Process CPU time spent segmenting (decoding excluded)."""
    audio_s: float

    @property
    def pooled(self) -> SpeechScore:
        """Every frame of every recording counted once."""
        return sum(self.clips.values(), SpeechScore(0, 0, 0))

    @property
    def mean_f1(self) -> float:
        """F1 averaged over the recordings."""
        return float(np.mean([s.f1 for s in self.clips.values()]))

    @property
    def cpu_ms_per_audio_s(self) -> float:
        return 1000 * self.cpu_s / self.audio_s


def load_corpus(folder: str | Path, rttm: str = "train.rttm") -> dict[str, tuple[np.ndarray, list[Span]]]:
    """Audio (16 kHz mono int16) and turns of every `<uri>.wav` the folder's RTTM file names."""
    folder = Path(folder)
    turns = read_rttm(folder / rttm)
    missing = [uri for uri in turns if not (folder / f"{uri}.wav").exists()]
    if missing:
        raise ValueError(f"{folder / rttm} names recordings with no .wav beside it: {', '.join(missing)}")
    return {uri: (decode_audio_file(folder / f"{uri}.wav"), spans) for uri, spans in sorted(turns.items())}


def score_corpus(corpus: dict[str, tuple[np.ndarray, list[Span]]], segment: Segment) -> CorpusScore:
    """Run `segment` on every recording and score it against the turns, timing its CPU."""
    clips: dict[str, SpeechScore] = {}
    cpu_s = 0.0
    audio_s = 0.0
    for uri, (pcm, turns) in corpus.items():
        start = time.process_time()
        spans = segment(pcm)
        cpu_s += time.process_time() - start
        duration_s = len(pcm) / SAMPLE_RATE
        audio_s += duration_s
        clips[uri] = score_spans(spans, turns, duration_s)
    return CorpusScore(clips, cpu_s, audio_s)
