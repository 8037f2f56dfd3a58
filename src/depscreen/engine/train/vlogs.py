"""D-Vlog and LMVD adapters: vlogs with precomputed per-second features, fixed windows as sentences.

D-Vlog (Yoon et al., AAAI 2022), as distributed: `ROOT/labels.csv` with columns `index, label, duration,
gender, fold` (`label` is `depression` or `normal`; `fold` is `train`, `valid` or `test`) and per vlog
`ROOT/<index>/<index>_acoustic.npy` `[T, 25]` (eGeMAPS LLDs, 1 Hz) and `<index>_visual.npy` `[T, 136]` (68
facial landmarks, x0, y0, x1, y1, ..., pixels, 1 Hz).

LMVD (He et al., 2024), as distributed: `ROOT/Audio_feature/<index>.npy` `[T, 128]` (VGGish embeddings,
one per 0.96 s) and `ROOT/Video_feature/<index>.csv` (OpenFace 2 output: `frame, face_id, timestamp,
confidence, success, ..., x_0..x_67, y_0..y_67, ...`, column names possibly padded with spaces). LMVD ships
no label file: give `ROOT/labels.csv` with columns `index, label` (`depression`/`normal` or 1/0) and an
optional `fold`, as the commonly used `lmvd_labels.csv` has. OpenFace rows with `success` 0 (no face) are
dropped, as the live landmarker drops frames without a face.

Both: `windows.fixed_windows` turns each vlog into sentences. A model for LMVD needs `audio_dim = 128`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from depscreen.engine.modalities import modality
from depscreen.engine.train.sessions import DatasetLoad, LabelledSession, Skipped
from depscreen.engine.train.windows import fixed_windows, normalise_landmarks, require_finite

POSITIVE = {"depression", "depressed", "1"}
NEGATIVE = {"normal", "0"}
LMVD_AUDIO_HOP_S = 0.96
"""VGGish: one embedding per 0.96 s of audio."""


def read_vlog_labels(path: Path, folds: set[str] | None) -> list[tuple[str, int]]:
    """(index, label) rows of a vlog dataset's labels.csv, keeping only `folds` when given."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the dataset needs a labels.csv (index, label[, fold])")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        names = [n.strip() for n in reader.fieldnames or []]
        if "index" not in names or "label" not in names:
            raise ValueError(f"{path} needs the columns index and label (it has {', '.join(names)})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    result = []
    for line, row in enumerate(rows, 2):
        label = row["label"].lower()
        if label not in POSITIVE | NEGATIVE:
            raise ValueError(f"{path} line {line}: label {row['label']!r} is neither depression/1 nor normal/0")
        if folds is None or row.get("fold", "") in folds:
            result.append((row["index"], int(label in POSITIVE)))
    return result


def _load_npy(path: Path, dim: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: every labelled vlog needs its feature files")
    try:
        values = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path} is not a numpy .npy array ({error})") from error
    if values.ndim != 2 or values.shape[1] != dim:
        raise ValueError(f"{path} has shape {values.shape}, expected [frames, {dim}]")
    return require_finite(values, path)


def _openface_landmarks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(normalised landmarks `[F, 136]`, their timestamps in s) of the rows where OpenFace found a face."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: every labelled vlog needs its OpenFace CSV")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        rows = list(reader)
    needed = ["timestamp", "success"] + [f"{a}_{i}" for i in range(68) for a in ("x", "y")]
    if missing := [c for c in needed if c not in header]:
        raise ValueError(f"{path} is not an OpenFace CSV: it lacks {', '.join(missing[:4])}")
    column = {name: header.index(name) for name in needed}
    try:
        table = np.array([[float(r[column[c]]) for c in needed] for r in rows], dtype=np.float64).reshape(-1, 138)
    except (ValueError, IndexError) as error:
        raise ValueError(f"{path} has a malformed row ({error})") from error
    table = table[table[:, 1] > 0.5]
    require_finite(table, path)
    return normalise_landmarks(table[:, 2:]), table[:, 0]


def _load_sessions(
    name: str,
    rows: list[tuple[str, int]],
    windows_of: Callable[[str], list],
    empty_reason: str,
    progress: Callable[[int, int], None] | None,
) -> DatasetLoad:
    """One labelled session per row from its fixed windows; a session with no window is skipped, saying why."""
    result = DatasetLoad(name)
    for done, (index, label) in enumerate(rows, 1):
        sentences = windows_of(index)
        if sentences:
            result.sessions.append(LabelledSession(label, sentences, index))
        else:
            result.skipped.append(Skipped(index, empty_reason))
        if progress:
            progress(done, len(rows))
    return result


def load_dvlog(
    root: Path, folds: set[str] | None = None, progress: Callable[[int, int], None] | None = None
) -> DatasetLoad:
    """D-Vlog sessions (see the module docstring); `folds` picks e.g. {"train", "valid"}."""

    def windows(index: str) -> list:
        folder = Path(root) / index
        audio = _load_npy(folder / f"{index}_acoustic.npy", modality("audio").dim)
        video = normalise_landmarks(_load_npy(folder / f"{index}_visual.npy", modality("video").dim))
        return fixed_windows(audio, np.arange(len(audio), dtype=float), video, np.arange(len(video), dtype=float))

    rows = read_vlog_labels(Path(root) / "labels.csv", folds)
    return _load_sessions("dvlog", rows, windows, "its feature files have no frames", progress)


def load_lmvd(
    root: Path, folds: set[str] | None = None, progress: Callable[[int, int], None] | None = None
) -> DatasetLoad:
    """LMVD sessions (see the module docstring)."""

    def windows(index: str) -> list:
        audio = _load_npy(Path(root) / "Audio_feature" / f"{index}.npy", 128)
        video, times = _openface_landmarks(Path(root) / "Video_feature" / f"{index}.csv")
        return fixed_windows(audio, np.arange(len(audio)) * LMVD_AUDIO_HOP_S, video, times)

    rows = read_vlog_labels(Path(root) / "labels.csv", folds)
    return _load_sessions("lmvd", rows, windows, "no audio frame and no face in its feature files", progress)
