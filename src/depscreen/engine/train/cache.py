"""On-disk cache of a recording's sentence features, keyed by its files' content and the extractor version.

Extracting features (segmenter, eGeMAPS, text encoder) costs about a second per minute of speech; the cache
makes re-training cost seconds. A key is the SHA-256 of the input files' bytes, anything else that shapes the
features (the transcript, the gap between answers) and `extractor_version()`, so a changed file, a new
openSMILE, different segmenter settings or (for ASR text) another recogniser, model or decoding option miss the
cache instead of reusing stale features. Entries are
plain `.npz` files (no pickle), safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

from depscreen.engine.features.asr_backends import asr_cache_key
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import MODALITIES
from depscreen.engine.segment import SegmenterSettings

FEATURES_VERSION = 3
"""Bumped whenever the feature code changes in a way the package versions and settings below do not show
(3: Whisper's decoding is named by its options, no longer by a digest of its source file)."""

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "depscreen" / "features"
"""Where `depscreen train/eval` keep features unless `--cache DIR` says otherwise."""


def extractor_version(text_encoder: str, segmenter: SegmenterSettings | None = None, asr: str | None = None) -> str:
    """Everything besides the input bytes that the cached features depend on (default segmenter settings);
    `asr`: the `--asr` value whose models made the sentence text (None: the text is the dataset's own)."""
    facts: dict[str, object] = {
        "features": FEATURES_VERSION,
        "opensmile": version("opensmile"),
        "webrtcvad": version("webrtcvad-wheels"),
        "segmenter": asdict(segmenter or SegmenterSettings()),
        "text_encoder": text_encoder,
    }
    if asr is not None:
        facts["asr"] = asr_cache_key(asr)
    return json.dumps(facts, sort_keys=True)


def content_key(files: list[Path | None], extra: str) -> str:
    """SHA-256 over the files' bytes (a missing file counts as absent, distinctly) and `extra`."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(b"\x00absent" if path is None else b"\x01" + path.read_bytes())
    digest.update(extra.encode())
    return digest.hexdigest()


class FeatureCache:
    """Sentence features stored under `root/<key[:2]>/<key>.npz`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> list[SentenceFeatures] | None:
        """The features stored under `key`, or None when absent (or unreadable: then they are recomputed)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as blob:
                return _unpack(blob)
        except (OSError, ValueError, KeyError):
            return None

    def store(self, key: str, sentences: list[SentenceFeatures]) -> None:
        """Write atomically (a temporary file renamed into place), so readers never see half an entry."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temporary, **_pack(sentences))
        temporary.replace(path)


def _pack(sentences: list[SentenceFeatures]) -> dict[str, np.ndarray]:
    """Plain arrays: per sequence modality its frames end to end (`<name>`) and counts (`<name>_lengths`); per
    vector modality one row per sentence (`<name>`, zero where absent, `has_<name>` in the metadata)."""
    meta = [
        {
            "index": s.index,
            "start_ms": s.start_ms,
            "end_ms": s.end_ms,
            "speech_ms": s.speech_ms,
            "snr_db": s.snr_db,
            "video_frames": s.video_frames,
            "transcript": s.transcript,
            "transcript_source": s.transcript_source,
            "text_confidence": s.text_confidence,
            "audio_integrity": s.audio_integrity,
            **{f"has_{m.name}": m.present(s) for m in MODALITIES if not m.sequence},
        }
        for s in sentences
    ]
    arrays = {"meta": np.array(json.dumps(meta, ensure_ascii=False))}
    for m in MODALITIES:
        values = [m.values(s) for s in sentences]
        if m.sequence:
            arrays[m.name] = np.concatenate(values) if values else np.zeros((0, m.dim), np.float32)
            arrays[f"{m.name}_lengths"] = np.array([len(v) for v in values], dtype=np.int64)
        else:
            dim = next((len(v) for v in values if v is not None), 0)
            arrays[m.name] = (
                np.stack([v if v is not None else np.zeros(dim, np.float32) for v in values])
                if values
                else np.zeros((0, 0), np.float32)
            )
    return arrays


def _unpack(blob: np.lib.npyio.NpzFile) -> list[SentenceFeatures]:
    meta = json.loads(str(blob["meta"]))
    per_modality = {}
    for m in MODALITIES:
        if m.sequence:
            frames = np.split(blob[m.name], np.cumsum(blob[f"{m.name}_lengths"])[:-1]) if meta else []
            per_modality[m.name] = [f.astype(np.float32, copy=False) for f in frames]
        else:
            rows = blob[m.name]
            per_modality[m.name] = [
                rows[i].astype(np.float32, copy=True) if entry[f"has_{m.name}"] else None
                for i, entry in enumerate(meta)
            ]
    return [
        SentenceFeatures(
            index=entry["index"],
            start_ms=entry["start_ms"],
            end_ms=entry["end_ms"],
            speech_ms=entry["speech_ms"],
            snr_db=entry["snr_db"],
            video_frames=entry["video_frames"],
            transcript=entry["transcript"],
            transcript_source=entry["transcript_source"],
            text_confidence=entry["text_confidence"],
            audio_integrity=entry["audio_integrity"],
            **{name: values[i] for name, values in per_modality.items()},
        )
        for i, entry in enumerate(meta)
    ]
