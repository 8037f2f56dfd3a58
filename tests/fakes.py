"""Fakes of the server's parts that implement the real interfaces, for tests of the protocol, the session,
admission, faults and resume: they answer at once and load no feature model.

- `FakeRecogniser` (the `asr.Transcriber` protocol): says the texts it was given, in order, for any language.
- `FakeTextFeaturizer` (a `text.TextFeaturizer`): a deterministic unit vector per text, of the real encoder's
  size, so a model trained on that encoder reads it.
- `FakeAudioExtractor` (the `pipeline.AudioExtractor` protocol): as many frames as eGeMAPS would make, each
  the frame's log energy and zero crossings, so loud speech and silence differ.

The screener stays the real one over the shipped synthetic demo model (a few hundred thousand parameters,
loaded in tens of milliseconds): the batcher, the state pool and resume need its real state layout, and prefix
and resume parity are checked on it. `test_fakes.py` checks that each fake keeps its interface's signatures.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from depscreen.engine.features.asr import NO_TRANSCRIPT, Transcript, primary_language
from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.text import PHQ8_ITEMS, TEXT_ENCODERS, TextFeaturizer
from depscreen.engine.pipeline import Extractors
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.runtime.screener import Screener
from depscreen.streamer.parts import ServerParts

FRAME = 320
"""Samples per frame (20 ms at 16 kHz, eGeMAPS' energy window)."""
HOP = 160
"""Samples per hop (10 ms)."""
SPAN = 800
"""Samples eGeMAPS' first frame spans: `T = (n - SPAN) // HOP + 1` frames for n >= MIN_SAMPLES."""


class FakeRecogniser:
    """A recogniser that says `texts` one after another (then "" forever), at once, for the primary languages
    in `languages` (None: every language)."""

    def __init__(self, texts: Iterable[str] = (), name: str = "fake", languages: frozenset[str] | None = None) -> None:
        self.name = name
        self.languages = languages
        self._texts = deque(texts)
        self._lock = threading.Lock()
        self.heard: list[tuple[int, str]] = []
        """(samples, language) of each call, in order."""

    def model_for(self, language: str) -> str:
        """The fake's name for a language it knows, else ""."""
        known = self.languages is None or primary_language(language) in self.languages
        return self.name if known else ""

    def preload(self, language: str) -> None:
        """Nothing to load."""

    def transcribe(self, pcm: np.ndarray, language: str, said_before: str = "", recheck: bool = True) -> Transcript:
        """The next given text (NO_TRANSCRIPT once they are used up), confidence 1."""
        with self._lock:
            self.heard.append((len(pcm), language))
            text = self._texts.popleft() if self._texts else ""
        return Transcript(text, 1.0) if text else NO_TRANSCRIPT


class FakeTextFeaturizer(TextFeaturizer):
    """The text encoder `name`'s size and name with a cheap deterministic vector: a unit vector seeded by the
    text's hash, and similarities that are the vector's first eight values folded into 0..1."""

    def __init__(self, name: str) -> None:
        real = TEXT_ENCODERS[name]
        self.NAME, self.DIM, self.LANGUAGES = real.NAME, real.DIM, real.LANGUAGES
        self.NGRAM_COUNTS = real.NGRAM_COUNTS

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.zeros((len(texts), self.DIM), np.float32)
        for i, text in enumerate(texts):
            if text.strip():
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                vector = np.random.default_rng(seed).standard_normal(self.DIM)
                vectors[i] = vector / np.linalg.norm(vector)
        similarities = np.abs(vectors[:, : len(PHQ8_ITEMS)]).astype(np.float32)
        return vectors, similarities


class FakeAudioExtractor:
    """eGeMAPS' frame count and size: column 0 the frame's log energy, column 1 its zero-crossing rate, the
    others zero."""

    DIM = AudioFeatureExtractor.DIM
    MIN_SAMPLES = AudioFeatureExtractor.MIN_SAMPLES

    def extract(self, pcm: np.ndarray) -> np.ndarray:
        frames = (len(pcm) - SPAN) // HOP + 1 if len(pcm) >= self.MIN_SAMPLES else 0
        out = np.zeros((frames, self.DIM), np.float32)
        signal = pcm.astype(np.float32) / 32768.0
        for t in range(frames):
            frame = signal[t * HOP : t * HOP + FRAME]
            out[t, 0] = np.log10(np.mean(frame**2) + 1e-10)
            out[t, 1] = np.mean(np.abs(np.diff(np.sign(frame)))) / 2
        return out


def fake_extractors(
    texts: Iterable[str] = (), text_encoder: str = "minilm-l6-v2", languages: frozenset[str] | None = None
) -> Extractors:
    """Fake extractors and recogniser (saying `texts` in `languages`) for a model trained on `text_encoder`."""
    return Extractors(
        text=FakeTextFeaturizer(text_encoder),
        transcriber=FakeRecogniser(texts, languages=languages),
        audio=FakeAudioExtractor(),
        asr_workers=ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-asr"),
    )


def fake_parts(
    texts: Iterable[str] = (), model: Path = DEMO_MODEL, languages: frozenset[str] | None = None
) -> ServerParts:
    """A server's parts on fakes: the real screener over `model` (the synthetic demo by default), fake
    extractors, and a recogniser saying `texts` in `languages` (None: every language)."""
    screener = Screener.from_checkpoint(model, "cpu")
    return ServerParts(screener, fake_extractors(texts, screener.facts.text_encoder, languages))
