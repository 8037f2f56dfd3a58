"""EATD-Corpus adapter: one volunteer = one session of three spoken answers with Mandarin transcripts.

Layout (Shen et al., ICASSP 2022, as converted in `shared/data/eatd`): `ROOT/labels.csv` with columns
`volunteer, sds_raw, sds_index, depressed, missing_answers` (answers separated by `;`), and per volunteer a
folder `ROOT/<volunteer>/` with `positive|neutral|negative.flac` (16 kHz mono) and `.txt` transcripts. The
label is the corpus's own cut-off, SDS index >= 53 (`depressed` = 1).

The answers are played back to back through the live pipeline (`featurize.InterviewFeaturizer`). With ASR
text, the load also measures its character error against the human transcripts (`DatasetLoad.asr_error`).
An answer that `missing_answers` declares absent is skipped and reported; a file missing without that
declaration, a folder without a label row or a label row without a folder is an error naming it (the label
file and the folders disagree, so nothing can be trusted).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from depscreen.engine.train.featurize import InterviewFeaturizer, Recording
from depscreen.engine.train.sessions import DatasetLoad, LabelledSession, Skipped
from depscreen.engine.transcript_error import ErrorCount, transcript_error

ANSWERS = ("positive", "neutral", "negative")
"""The three interview prompts, in the order they were asked."""
COLUMNS = ("volunteer", "sds_index", "depressed", "missing_answers")
"""Columns of labels.csv the adapter reads (the corpus also has `sds_raw`)."""
LANGUAGE = "zh"


@dataclass(frozen=True)
class EatdVolunteer:
    volunteer: str
    label: int
    sds_index: float
    folder: Path
    missing: frozenset[str]
    """Answers the label file declares absent."""


class EatdDataset:
    """The volunteers of one EATD split folder, validated against its `labels.csv` on construction."""

    name = "eatd"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.volunteers = _read_labels(self.root)

    def load(
        self,
        featurizer: InterviewFeaturizer,
        volunteers: list[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> DatasetLoad:
        """Sessions of the chosen volunteers (all by default); `progress(done, total)` after each one."""
        chosen = [v for v in self.volunteers if volunteers is None or v.volunteer in volunteers]
        if volunteers is not None and len(chosen) != len(set(volunteers)):
            unknown = sorted(set(volunteers) - {v.volunteer for v in chosen})
            raise ValueError(f"volunteers {', '.join(unknown)} are not in {self.root / 'labels.csv'}")
        asr_error = ErrorCount() if featurizer.transcribes else None
        result = DatasetLoad(self.name, text=featurizer.text, asr_error=asr_error)
        for done, volunteer in enumerate(chosen, 1):
            recordings = []
            for answer in ANSWERS:
                audio, text = volunteer.folder / f"{answer}.flac", volunteer.folder / f"{answer}.txt"
                if answer in volunteer.missing:
                    result.skipped.append(Skipped(str(audio), "declared missing in labels.csv"))
                    continue
                if not audio.is_file():
                    raise FileNotFoundError(
                        f"{audio} does not exist and labels.csv does not list '{answer}' in missing_answers for "
                        f"{volunteer.volunteer}: restore the file or declare it missing"
                    )
                recordings.append(Recording(audio, _read_transcript(text)))
            sentences = featurizer.session(recordings) if recordings else []
            if result.asr_error is not None and all(r.transcript for r in recordings):
                result.asr_error += transcript_error(
                    "".join(r.transcript or "" for r in recordings), "".join(s.transcript for s in sentences), LANGUAGE
                )
            if sentences:
                result.sessions.append(
                    LabelledSession(volunteer.label, sentences, volunteer.volunteer, volunteer.sds_index)
                )
            else:
                reason = "no answer audio" if not recordings else "the segmenter found no speech in its answers"
                result.skipped.append(Skipped(volunteer.volunteer, reason))
            if progress:
                progress(done, len(chosen))
        return result


def _read_transcript(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}): convert the transcript to UTF-8") from error


def _read_labels(root: Path) -> list[EatdVolunteer]:
    labels = root / "labels.csv"
    if not root.is_dir():
        raise FileNotFoundError(f"EATD folder {root} does not exist: pass --data PATH to the folder with labels.csv")
    if not labels.is_file():
        raise FileNotFoundError(
            f"{labels} does not exist: an EATD split folder needs labels.csv ({', '.join(COLUMNS)})"
        )
    with labels.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing_columns = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing_columns:
            raise ValueError(f"{labels} lacks the columns {', '.join(missing_columns)} (expected {', '.join(COLUMNS)})")
        rows = list(reader)
    volunteers = []
    for line, row in enumerate(rows, 2):
        name = row["volunteer"].strip()
        try:
            label = int(row["depressed"])
            sds_index = float(row["sds_index"])
        except ValueError as error:
            raise ValueError(f"{labels} line {line} ({name}): {error}") from error
        if label not in (0, 1):
            raise ValueError(f"{labels} line {line} ({name}): depressed must be 0 or 1, not {label}")
        missing = frozenset(a.strip() for a in (row["missing_answers"] or "").split(";") if a.strip())
        if unknown := missing - set(ANSWERS):
            raise ValueError(f"{labels} line {line} ({name}): unknown answers {sorted(unknown)} in missing_answers")
        volunteers.append(EatdVolunteer(name, label, sds_index, root / name, missing))
    listed = {v.volunteer for v in volunteers}
    folders = {p.name for p in root.iterdir() if p.is_dir()}
    if unlabelled := sorted(folders - listed):
        raise ValueError(f"{labels} does not match the folders: {', '.join(unlabelled)} have no label row")
    if absent := sorted(listed - folders):
        raise ValueError(f"{labels} does not match the folders: no folder for {', '.join(absent)}")
    return volunteers
