"""DAIC-WOZ and E-DAIC adapter: clinical interviews with timed transcripts and PHQ-8 labels.

Layout, as the corpora are distributed (both have one folder per participant, `ROOT/<id>_P/`):
- DAIC-WOZ: `<id>_P/<id>_AUDIO.wav` and `<id>_P/<id>_TRANSCRIPT.csv`, tab-separated with the columns
  `start_time, stop_time, speaker, value` (seconds; speaker `Ellie` or `Participant`). Labels:
  `ROOT/train_split_Depression_AVEC2017.csv` and `dev_split_Depression_AVEC2017.csv` (`Participant_ID,
  PHQ8_Binary, PHQ8_Score, ...`), `full_test_split.csv` (`Participant_ID, PHQ_Binary, PHQ_Score, ...`).
- E-DAIC: `<id>_P/<id>_AUDIO.wav` and `<id>_P/<id>_Transcript.csv`, comma-separated with the columns
  `Start_Time, End_Time, Text, Confidence` (participant speech only). Labels: `ROOT/train_split.csv`,
  `dev_split.csv`, `test_split.csv` (`Participant_ID, Gender, PHQ_Binary, PHQ_Score`).

Only the participant's utterances are used; each is one sentence (`featurize.InterviewFeaturizer.utterances`:
its audio cut by the transcript's times through the live extractors, its text embedded). Every split file
present is read unless `splits` names some (e.g. {"train", "dev"}); a labelled participant without a folder
is an error naming it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from depscreen.engine.pipeline import Caption
from depscreen.engine.train.featurize import InterviewFeaturizer
from depscreen.engine.train.sessions import DatasetLoad, LabelledSession, Skipped

LABEL_COLUMNS = (("PHQ8_Binary", "PHQ8_Score"), ("PHQ_Binary", "PHQ_Score"))
"""(binary label, score) column pairs of the two corpora's split files."""


def read_daic_labels(root: Path, splits: set[str] | None) -> list[tuple[str, int, float, Path]]:
    """(participant, label, PHQ-8 score, split file) of every labelled participant."""
    files = sorted(p for p in Path(root).glob("*split*.csv") if splits is None or p.name.split("_")[0] in splits)
    if not files:
        raise FileNotFoundError(
            f"no *split*.csv label file in {root}: DAIC-WOZ/E-DAIC folders hold train/dev/test split CSVs"
        )
    labelled = []
    for path in files:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            names = [n.strip() for n in reader.fieldnames or []]
            pair = next((p for p in LABEL_COLUMNS if p[0] in names and p[1] in names), None)
            if "Participant_ID" not in names or pair is None:
                raise ValueError(f"{path} needs Participant_ID and PHQ8_Binary/PHQ8_Score or PHQ_Binary/PHQ_Score")
            for line, row in enumerate(reader, 2):
                row = {k.strip(): (v or "").strip() for k, v in row.items()}
                try:
                    label, score = int(float(row[pair[0]])), float(row[pair[1]])
                except ValueError as error:
                    raise ValueError(f"{path} line {line}: {error}") from error
                labelled.append((row["Participant_ID"], label, score, path))
    return labelled


def read_transcript(path: Path) -> list[Caption]:
    """The participant's timed utterances from either corpus's transcript CSV."""
    tab = path.name.endswith("_TRANSCRIPT.csv")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if tab else ",")
        fields = {n.strip().lower(): n for n in reader.fieldnames or []}
        start = fields.get("start_time")
        stop = fields.get("stop_time") or fields.get("end_time")
        text = fields.get("value") or fields.get("text")
        if not (start and stop and text):
            raise ValueError(f"{path} lacks start/stop time or text columns (it has {', '.join(fields)})")
        utterances = []
        for line, row in enumerate(reader, 2):
            if tab and (row.get(fields.get("speaker", ""), "") or "").strip() != "Participant":
                continue
            try:
                begin, end = float(row[start]), float(row[stop])
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path} line {line}: {error}") from error
            if end > begin:
                utterances.append(Caption(int(begin * 1000), int(end * 1000), (row[text] or "").strip()))
    return utterances


def load_daic(
    root: Path,
    featurizer: InterviewFeaturizer,
    splits: set[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetLoad:
    """DAIC-WOZ or E-DAIC sessions (see the module docstring)."""
    labelled = read_daic_labels(Path(root), splits)
    result = DatasetLoad("daic", text=featurizer.text)
    for done, (participant, label, score, label_file) in enumerate(labelled, 1):
        folder = Path(root) / f"{participant}_P"
        if not folder.is_dir():
            raise FileNotFoundError(f"{label_file} labels participant {participant} but {folder} does not exist")
        audio = folder / f"{participant}_AUDIO.wav"
        transcripts = [folder / f"{participant}_TRANSCRIPT.csv", folder / f"{participant}_Transcript.csv"]
        transcript = next((t for t in transcripts if t.is_file()), None)
        if not audio.is_file() or transcript is None:
            missing = audio if not audio.is_file() else transcripts[0]
            raise FileNotFoundError(f"{missing} does not exist: each labelled participant needs audio and transcript")
        sentences = featurizer.utterances(audio, transcript, read_transcript(transcript))
        if sentences:
            result.sessions.append(LabelledSession(label, sentences, participant, score))
        else:
            result.skipped.append(Skipped(participant, "no participant utterance of at least 60 ms"))
        if progress:
            progress(done, len(labelled))
    return result
