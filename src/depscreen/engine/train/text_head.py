"""A depressive-language text head trained on English Reddit corpora, evaluated held out and on Mandarin.

Corpora (`shared/data/text`, research use only, never copied into the repository):
- `ltedi2022_depsign/`: DepSign shared task, `dev.tsv` (PID, Text data, Label) for training and `test.tsv`
  (Pid, text data, Class labels) held out; label = not "not depression" (moderate or severe).
- `naseem2022_severity/Reddit_depression_dataset.csv` (text, label): label = not "minimum"; a seeded
  stratified `HELD_OUT` share is held out.
- `reddit_depression_cleaned/reddit_depression.csv` (clean_text, is_depression; latin-1; weak subreddit
  labels): rows with an empty label are skipped and counted; a seeded `HELD_OUT` share is held out.

Two heads are fitted on the same training posts (each post's first `MAX_CHARS` characters), each a
class-balanced logistic regression, and reported side by side on the same held-out posts:
- on the multilingual sentence embedding. Because the encoder maps Mandarin and English to one space, this
  head also scores Mandarin transcripts with no Mandarin training data (`zero_shot`: the mean embedding of a
  session's sentences);
- on character 1-3-grams (`char_ngram_counts`, the EATD recipe's text input) weighted by an IDF fitted on the
  training posts and L2-normalised: English character n-grams, with nothing to say about Mandarin text. This
  is the English `LanguageTextHead` live English sessions use, recalibrated on the training posts for text that
  arrives sentence by sentence; it is also reported on the held-out posts cut into sentences and scored as a
  live session scores them (`held_out_by_sentence`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from depscreen.engine.features.language_head import LanguageTextHead, char_head_inputs
from depscreen.engine.features.text import MULTILINGUAL, char_ngram_counts, make_text_embedder, unit_rows
from depscreen.engine.train.metrics import best_f1_threshold, logistic, platt_scaling, screening_report
from depscreen.engine.train.sessions import LabelledSession

HELD_OUT = 0.2
MAX_CHARS = 1000
"""Characters of a post that are embedded (long posts are cut: the encoder averages over its tokens)."""


@dataclass
class Corpus:
    name: str
    train_texts: list[str] = field(default_factory=list)
    train_labels: list[int] = field(default_factory=list)
    test_texts: list[str] = field(default_factory=list)
    test_labels: list[int] = field(default_factory=list)
    skipped: int = 0


def _rows(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: --data must be the folder holding the text corpora")
    csv.field_size_limit(1 << 30)
    with path.open(newline="", encoding=encoding) as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def _column(rows: list[dict[str, str]], path: Path, *names: str) -> str:
    for name in names:
        if rows and name in rows[0]:
            return name
    raise ValueError(f"{path} has none of the columns {', '.join(names)}")


def _split(corpus: Corpus, texts: list[str], labels: list[int], seed: int) -> Corpus:
    rng = np.random.default_rng(seed)
    labels_array = np.array(labels)
    held = set()
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels_array == value))
        held |= set(members[: round(HELD_OUT * len(members))].tolist())
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        (corpus.test_texts if i in held else corpus.train_texts).append(text)
        (corpus.test_labels if i in held else corpus.train_labels).append(label)
    return corpus


def load_corpora(root: Path, seed: int = 0) -> list[Corpus]:
    """The three corpora with their train/held-out splits (see the module docstring)."""
    root = Path(root)
    depsign = Corpus("ltedi2022_depsign")
    for part, texts, labels in (
        ("dev", depsign.train_texts, depsign.train_labels),
        ("test", depsign.test_texts, depsign.test_labels),
    ):
        path = root / "ltedi2022_depsign" / f"{part}.tsv"
        rows = _rows(path, "\t")
        text, label = _column(rows, path, "Text data", "text data"), _column(rows, path, "Label", "Class labels")
        for row in rows:
            texts.append(row[text][:MAX_CHARS])
            labels.append(int(row[label].strip() != "not depression"))
    path = root / "naseem2022_severity" / "Reddit_depression_dataset.csv"
    rows = _rows(path)
    naseem = _split(
        Corpus("naseem2022_severity"),
        [r["text"][:MAX_CHARS] for r in rows],
        [int(r["label"].strip().lower() != "minimum") for r in rows],
        seed,
    )
    path = root / "reddit_depression_cleaned" / "reddit_depression.csv"
    rows = _rows(path, encoding="latin-1")
    labelled = [r for r in rows if r["is_depression"].strip() in ("0", "1")]
    weak = _split(
        Corpus("reddit_depression_cleaned", skipped=len(rows) - len(labelled)),
        [r["clean_text"][:MAX_CHARS] for r in labelled],
        [int(r["is_depression"]) for r in labelled],
        seed,
    )
    return [depsign, naseem, weak]


def train_text_head(corpora: list[Corpus], eatd: list[LabelledSession] | None, out: Path, seed: int = 0) -> dict:
    """Fit both heads on every corpus's training posts; report held-out metrics per corpus, and the embedding
    head zero-shot on `eatd` sessions (when given); write `text_head.npz` (embedding), `text_head_chars.npz`
    and `text_head.json` (both heads' results; the character head's under `chars`) to `out`."""
    train_texts = [text for c in corpora for text in c.train_texts]
    train_y = np.concatenate([c.train_labels for c in corpora])
    embedder = make_text_embedder(MULTILINGUAL)

    def embed(texts: list[str]) -> np.ndarray:
        return embedder.embed(texts)[0]

    head, threshold, held_out = _fit_and_report(corpora, embed(train_texts), train_y, embed, seed)
    results: dict[str, object] = {
        "encoder": MULTILINGUAL,
        "train_posts": len(train_y),
        "threshold": threshold,
        "skipped_unlabelled": {c.name: c.skipped for c in corpora},
        "held_out": held_out,
    }
    if eatd:
        probabilities = head.predict_proba(np.stack([zero_shot_input(s) for s in eatd]))[:, 1]
        results["eatd_zero_shot"] = screening_report(np.array([s.label for s in eatd]), probabilities, threshold, seed)
    train_counts = char_ngram_counts(train_texts)  # counted once: it is the costliest step here
    idf = char_idf(train_counts)
    chars, chars_threshold, chars_held_out = _fit_and_report(
        corpora, unit_rows(train_counts * idf), train_y, lambda texts: char_head_inputs(texts, idf), seed
    )
    char_head, sentence_threshold = _for_sentences(
        LanguageTextHead(chars.coef_[0].astype(np.float32), float(chars.intercept_[0]), idf), train_texts, train_y
    )
    results["chars"] = {
        "features": "hashed character 1-3-grams, IDF, L2",
        "threshold": chars_threshold,
        "held_out": chars_held_out,
        "sentence_threshold": sentence_threshold,
        "held_out_by_sentence": {
            corpus.name: _by_sentence_report(char_head, corpus, sentence_threshold, seed) for corpus in corpora
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "text_head.npz", coef=head.coef_[0], intercept=head.intercept_, threshold=threshold)
    char_head.save(out / "text_head_chars.npz")
    (out / "text_head.json").write_text(json.dumps(results, indent=2))
    return results


def spoken_sentences(post: str) -> list[str]:
    """A post cut where a speaker would pause: after a full stop, question or exclamation mark, and at line
    breaks (how a live session hands the head one transcribed sentence at a time)."""
    return [part for part in re.split(r"(?<=[.!?])\s+|\n+", post) if part.strip()] or [post]


def _sentence_wise_logits(head: LanguageTextHead, posts: list[str]) -> np.ndarray:
    """`[N]` each post's logit as a live session scores its text: cut into sentences, the character-weighted
    mean of the sentences' logits (`LanguageTextHead.session_logit`)."""
    return np.array([head.session_logit(spoken_sentences(post)) for post in posts])


def _for_sentences(
    head: LanguageTextHead, train_texts: list[str], train_y: np.ndarray
) -> tuple[LanguageTextHead, float]:
    """The head recalibrated for text told sentence by sentence, and its best-F1 threshold there, both on the
    training posts: a sentence alone is a shorter, sparser input than the posts the head was fitted on, and its
    logits sit elsewhere. A class-balanced logistic regression on the training posts' sentence-wise logits gives
    a scale and shift, folded into the head's weights (the mean of affine logits is the affine of their mean)."""
    logits = _sentence_wise_logits(head, train_texts)
    scale, shift = platt_scaling(logits, train_y)
    calibrated = LanguageTextHead(head.coef * scale, head.intercept * scale + shift, head.idf)
    return calibrated, best_f1_threshold(train_y, logistic(logits * scale + shift))


def _by_sentence_report(head: LanguageTextHead, corpus: Corpus, threshold: float, seed: int) -> dict:
    """The held-out posts scored sentence by sentence, as a live session scores its text."""
    probabilities = logistic(_sentence_wise_logits(head, corpus.test_texts))
    return screening_report(np.array(corpus.test_labels), probabilities, threshold, seed)


def char_idf(counts: np.ndarray) -> np.ndarray:
    """Smoothed inverse document frequency of each n-gram bucket over the training posts' counts."""
    documents = (counts > 0).sum(axis=0)
    return (np.log((1 + len(counts)) / (1 + documents)) + 1).astype(np.float32)


def _fit_and_report(
    corpora: list[Corpus],
    train_x: np.ndarray,
    train_y: np.ndarray,
    inputs: Callable[[list[str]], np.ndarray],
    seed: int,
) -> tuple[LogisticRegression, float, dict[str, dict]]:
    """A class-balanced logistic regression on the training posts' inputs `train_x`, its best-F1 threshold on
    them, and its report on each corpus's held-out posts (made into inputs by `inputs`)."""
    head = LogisticRegression(C=1.0, class_weight="balanced", max_iter=3000).fit(train_x, train_y)
    threshold = best_f1_threshold(train_y, head.predict_proba(train_x)[:, 1])
    held_out = {
        corpus.name: screening_report(
            np.array(corpus.test_labels), head.predict_proba(inputs(corpus.test_texts))[:, 1], threshold, seed
        )
        for corpus in corpora
    }
    return head, threshold, held_out


def zero_shot_input(session: LabelledSession) -> np.ndarray:
    """The unit mean of a session's sentence embeddings (the encoder's part of its text features)."""
    vectors = [s.text[:-8] for s in session.sentences if s.text is not None]
    mean = np.mean(vectors, axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)
