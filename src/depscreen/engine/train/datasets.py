"""The datasets `depscreen train/eval --dataset NAME` know: how to load each, its language and its terms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from depscreen.engine.features.text import CHAR_NGRAMS, MULTILINGUAL
from depscreen.engine.modalities import modality
from depscreen.engine.train.daic import load_daic
from depscreen.engine.train.eatd import LANGUAGE as EATD_LANGUAGE
from depscreen.engine.train.eatd import EatdDataset
from depscreen.engine.train.featurize import InterviewFeaturizer
from depscreen.engine.train.sessions import DatasetLoad
from depscreen.engine.train.vlogs import load_dvlog, load_lmvd

LoadProgress = Callable[[int, int], None]
"""Called with (sessions done, sessions in all) while a dataset loads."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    terms: str
    """The data's licence or use terms, copied into the model card of a model trained on it."""
    language: str
    load: Callable[[Path, InterviewFeaturizer, LoadProgress | None], DatasetLoad]
    """(data folder, featurizer of its recordings, progress) → sessions and what was skipped."""
    audio_dim: int = modality("audio").dim
    """Audio features per frame: eGeMAPS LLDs (25) unless the dataset ships others (LMVD: VGGish, 128)."""


def _load_eatd(data: Path, featurizer: InterviewFeaturizer, progress: LoadProgress | None) -> DatasetLoad:
    return EatdDataset(data).load(featurizer, progress=progress)


def _load_daic(data: Path, featurizer: InterviewFeaturizer, progress: LoadProgress | None) -> DatasetLoad:
    return load_daic(data, featurizer, progress=progress)


def _no_recordings(name: str, featurizer: InterviewFeaturizer) -> None:
    if featurizer.transcribes:
        raise ValueError(f"{name} ships features, not recordings: there is no speech to transcribe (drop --text asr)")


def _load_dvlog(data: Path, featurizer: InterviewFeaturizer, progress: LoadProgress | None) -> DatasetLoad:
    _no_recordings("dvlog", featurizer)
    return load_dvlog(data, progress=progress)


def _load_lmvd(data: Path, featurizer: InterviewFeaturizer, progress: LoadProgress | None) -> DatasetLoad:
    _no_recordings("lmvd", featurizer)
    return load_lmvd(data, progress=progress)


DATASETS: dict[str, DatasetSpec] = {
    "eatd": DatasetSpec(
        name="eatd",
        description=(
            "EATD-Corpus (Shen et al., ICASSP 2022): Mandarin-speaking volunteers answering three interview "
            "prompts; label = SDS index >= 53"
        ),
        terms="no licence stated; public for research use only, cite Shen et al. 2022; never redistributed here",
        language=EATD_LANGUAGE,
        load=_load_eatd,
    ),
    "daic": DatasetSpec(
        name="daic",
        description=(
            "DAIC-WOZ / E-DAIC (Gratch et al. 2014; Ringeval et al. 2019): English clinical interviews with a "
            "virtual interviewer; label = PHQ-8 >= 10"
        ),
        terms="USC ICT End User License Agreement: academic research only, no redistribution",
        language="en",
        load=_load_daic,
    ),
    "dvlog": DatasetSpec(
        name="dvlog",
        description="D-Vlog (Yoon et al., AAAI 2022): YouTube vlogs, 1 Hz eGeMAPS and landmark features",
        terms="D-Vlog data use agreement: research only, granted by the authors on request",
        language="en",
        load=_load_dvlog,
    ),
    "lmvd": DatasetSpec(
        name="lmvd",
        description="LMVD (He et al., 2024): vlogs with VGGish audio and OpenFace features",
        terms="LMVD terms: research only, cite the authors",
        language="zh",
        load=_load_lmvd,
        audio_dim=128,
    ),
}
"""Datasets by the name `--dataset` takes."""

DEFAULT_TEXT_ENCODER_FOR_TRAINING = CHAR_NGRAMS
"""Models trained with `depscreen train --dataset` read character n-grams of the text (PHQ-8 similarities
from the multilingual encoder)."""
REFERENCE_TEXT_ENCODER = MULTILINGUAL
"""The sentence encoder of the `sentence-embedding-text` ablation (the text pathway the n-grams replaced)."""


def dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]
