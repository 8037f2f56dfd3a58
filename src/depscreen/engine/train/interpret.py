"""What moves a trained model's estimate: PHQ-8 item similarities, acoustic descriptors and words.

- PHQ-8 items and eGeMAPS descriptors: gradient x (input - dataset mean) of the final session logit,
  summed over a session's sentences (and frames), averaged over sessions. Positive = pushes the estimate
  up when the feature is above its average.
- Words: occlusion. Each sentence's text is hidden in turn and the change of the final logit recorded
  (positive = its text pushed the estimate up); a word's effect is the mean over the sentences containing
  it. Mandarin has no spaces, so "words" are character bigrams; other text is split on whitespace.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import torch

from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.text import PHQ8_ITEMS
from depscreen.engine.modalities import MODALITY_NAMES
from depscreen.engine.model.screening import ScreeningModel
from depscreen.engine.runtime.screener import collate
from depscreen.engine.train.faces import attach_faces
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.trainer import layout_sessions, prefix_logits

MIN_WORD_SENTENCES = 5
"""A word must occur in at least this many sentences to be ranked."""
HAN = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class Attribution:
    items: dict[str, float]
    descriptors: dict[str, float]
    words: list[tuple[str, float, int]]
    """(word, mean logit change when its sentences are hidden, sentences), strongest effects first."""


def _words(text: str) -> set[str]:
    chars = [c for c in text if HAN.match(c)]
    if len(chars) >= 2:
        return {a + b for a, b in itertools.pairwise(chars)}
    return {w.lower() for w in re.findall(r"\w+", text) if len(w) > 2}


def attribute(model: ScreeningModel, sessions: list[LabelledSession], top: int = 15) -> Attribution:
    """Attribution of the final estimate (see the module docstring)."""
    model.eval()
    audio_mean = model.audio_mean.detach()
    texts = [s.text for session in sessions for s in session.sentences if s.text is not None]
    text_mean = torch.as_tensor(np.mean(texts, axis=0)) if texts else None
    items = np.zeros(len(PHQ8_ITEMS))
    descriptors = np.zeros(AudioFeatureExtractor.DIM)
    for session in sessions:
        audio, audio_grad, text, text_grad = _gradients(model, session)
        descriptors += ((audio - audio_mean) * audio_grad).sum(dim=(0, 1)).numpy()
        if text_mean is not None:
            items += ((text - text_mean) * text_grad)[:, -len(PHQ8_ITEMS) :].sum(0).numpy()
    effects: dict[str, list[float]] = defaultdict(list)
    for session in sessions:
        base = prefix_logits(model, [session])[0][-1]
        hidden = [
            replace(
                session, sentences=[replace(s, text=None) if j == i else s for j, s in enumerate(session.sentences)]
            )
            for i, s in enumerate(session.sentences)
            if s.text is not None and (len(s.audio) or len(s.video))
        ]
        spoken = [s for s in session.sentences if s.text is not None and (len(s.audio) or len(s.video))]
        for sentence, variant in zip(spoken, prefix_logits(model, hidden) if hidden else [], strict=True):
            for word in _words(sentence.transcript):
                effects[word].append(float(base - variant[-1]))
    ranked = sorted(
        ((w, float(np.mean(v)), len(v)) for w, v in effects.items() if len(v) >= MIN_WORD_SENTENCES),
        key=lambda x: -abs(x[1]),
    )
    n = max(len(sessions), 1)
    return Attribution(
        items=dict(zip(PHQ8_ITEMS, (items / n).round(4).tolist(), strict=True)),
        descriptors=dict(zip(AudioFeatureExtractor.NAMES, (descriptors / n).round(4).tolist(), strict=True)),
        words=ranked[:top],
    )


def _gradients(
    model: ScreeningModel, session: LabelledSession
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs and gradients of the final logit w.r.t. the raw audio LLDs and text features of one session."""
    batch = collate(session.sentences, model.config, model.head.weight.device)
    inputs = batch.values["audio"].requires_grad_(True), batch.values["text"].requires_grad_(True)
    encoded, _ = layout_sessions(model.encode_sessions(batch, [len(session.sentences)]), [len(session.sentences)])
    logit = model.forward_session(encoded).logit[0, -1]
    audio_grad, text_grad = torch.autograd.grad(logit, inputs, allow_unused=True)
    audio, text = (x.detach() for x in inputs)
    return (
        audio,
        torch.zeros_like(audio) if audio_grad is None else audio_grad,
        text,
        torch.zeros_like(text) if text_grad is None else text_grad,
    )


@torch.no_grad()
def video_gate_weight(model: ScreeningModel, sessions: list[LabelledSession], faces: np.ndarray) -> dict[str, float]:
    """Mean gate weight per modality over the sentences of `sessions`, each given a window of `faces`: how
    much the model trusts video it never saw with a label (low is honest)."""
    rng = random.Random(0)
    sentences = [attach_faces(s, faces, rng) for session in sessions for s in session.sentences]
    batch = collate(sentences, model.config, model.head.weight.device)
    weights = model.encode_sessions(batch, [len(session.sentences) for session in sessions]).weights.mean(0)
    return {name: round(float(w), 4) for name, w in zip(MODALITY_NAMES, weights, strict=True)}
