"""Screener: a loaded model on a device, turning SentenceFeatures into running Estimates per session.

`step` advances one session by one sentence (what the server does live); `offline` scores a whole session
at once with the full-scan reference. Both share the encoder and the evidence/symptom accounting, so the
estimate after sentence k is the same either way (prefix parity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from depscreen.engine.features.language_head import TextHeadAccount
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.features.text import PHQ8_ITEMS
from depscreen.engine.modalities import MODALITIES, MODALITY_NAMES
from depscreen.engine.model.kernels import kernels_for
from depscreen.engine.model.screening import EncodedSentences, ModelConfig, ScreeningModel, SentenceBatch
from depscreen.engine.model.state import RecurrentState
from depscreen.engine.runtime.checkpoint import ModelFacts, load_checkpoint
from depscreen.engine.runtime.device import choose_device
from depscreen.engine.runtime.interval import ENOUGH_SPEECH_S, interval_for
from depscreen.engine.runtime.stack import TEXT_HEAD, Stack

EVIDENCE_TIME_CONSTANT_S = 60.0
"""Evidence = 1 - exp(-usable speech seconds / this): 0.63 after a minute of clean speech, 0.95 after three."""

SIMILARITY_FLOOR = 0.2
"""Cosine similarity to a PHQ-8 item below which text counts as unrelated to it (all-MiniLM-L6-v2 scale)."""
SIMILARITY_FULL = 0.6
"""Similarity at which a sentence counts as full evidence for the item."""


@dataclass(frozen=True)
class ModalityEstimate:
    modality: str
    available: bool
    quality: float
    weight: float
    probability: float


@dataclass(frozen=True)
class RunningEstimate:
    """The running estimate after a sentence."""

    probability: float
    evidence: float
    modalities: tuple[ModalityEstimate, ...]
    symptoms: tuple[float, ...]
    """One 0..1 score per PHQ-8 item, in `PHQ8_ITEMS` order."""
    interval_low: float = 0.0
    interval_high: float = 1.0
    """The calibrated interval around `probability` (`runtime.interval`); [0, 1] before enough speech or
    without a calibration in the checkpoint."""
    interval_level: float = 0.0
    """Its nominal coverage; 0 when the checkpoint carries no interval calibration."""
    enough_speech: bool = False
    """False until `runtime.interval.ENOUGH_SPEECH_S` of usable speech: "not enough speech yet"."""


@dataclass
class EvidenceAccount:
    """A session's running evidence and symptom accounting (everything but the model state)."""

    usable_speech_s: float = 0.0
    symptom_sum: np.ndarray = field(default_factory=lambda: np.zeros(len(PHQ8_ITEMS)))
    text_sentences: int = 0
    language_text: TextHeadAccount = field(default_factory=TextHeadAccount)
    """The text's own estimate under its language's text head, for a language the model did not learn."""

    def after(self, features: SentenceFeatures) -> EvidenceAccount:
        """A new account: this one with `features` added (this one is left as it is)."""
        account = replace(self, symptom_sum=self.symptom_sum.copy(), language_text=replace(self.language_text))
        account.account(features)
        return account

    def account(self, features: SentenceFeatures) -> None:
        """Add one sentence's usable speech and symptom evidence."""
        self.usable_speech_s += features.speech_ms / 1000.0 * features.audio_quality
        similarity = features.symptom_similarity
        if similarity is not None:
            span = SIMILARITY_FULL - SIMILARITY_FLOOR
            self.symptom_sum += np.clip((similarity - SIMILARITY_FLOOR) / span, 0.0, 1.0)
            self.text_sentences += 1
        if features.language_text_logit is not None:
            self.language_text.add(features.language_text_logit, features.transcript, features.language_text_head)

    @property
    def evidence(self) -> float:
        return 1.0 - math.exp(-self.usable_speech_s / EVIDENCE_TIME_CONSTANT_S)

    @property
    def symptoms(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.symptom_sum / max(self.text_sentences, 1))


def evidence_trajectory(sentences: list[SentenceFeatures]) -> tuple[np.ndarray, np.ndarray]:
    """(evidence, usable speech seconds) after each sentence of a session, as a live session accounts them."""
    account = EvidenceAccount()
    evidence, usable = [], []
    for features in sentences:
        account.account(features)
        evidence.append(account.evidence)
        usable.append(account.usable_speech_s)
    return np.asarray(evidence), np.asarray(usable)


@dataclass
class SessionTrack:
    """What a session carries from sentence to sentence: its model state and its evidence account.

    The one holder of that pair: a session scored on its own (`Screener.step`), a session in the server's
    pool (`PoolEntry.track`) and a resume snapshot all keep a `SessionTrack`.
    """

    state: RecurrentState | None = None
    """One-session model state after the last sentence; None: the initial state (no sentence yet)."""
    account: EvidenceAccount = field(default_factory=EvidenceAccount)

    def advance(self, state: RecurrentState | None, account: EvidenceAccount) -> None:
        """Go on to the state and account after one more sentence (its holder calls it, on its own thread)."""
        self.state, self.account = state, account


def collate(features: list[SentenceFeatures], config: ModelConfig, device: torch.device) -> SentenceBatch:
    """Pad the sentences' features into one model batch, modality by modality."""
    n = len(features)
    values, lengths = {}, {}
    for m in MODALITIES:
        dim = config.feature_dim(m.name)
        per_sentence = [m.values(f) for f in features]
        if m.sequence:
            padded = np.zeros((n, max(1, *(len(v) for v in per_sentence)), dim), dtype=np.float32)
            for i, v in enumerate(per_sentence):
                padded[i, : len(v)] = v
            counts = [len(v) for v in per_sentence]
        else:
            padded = np.zeros((n, dim), dtype=np.float32)
            for i, v in enumerate(per_sentence):
                if v is not None:
                    padded[i] = v
            counts = [int(v is not None) for v in per_sentence]
        values[m.name] = torch.as_tensor(padded, dtype=torch.float32, device=device)
        lengths[m.name] = torch.as_tensor(np.asarray(counts), dtype=torch.long, device=device)
    return SentenceBatch(
        values=values,
        lengths=lengths,
        available=torch.as_tensor(np.asarray([f.available for f in features]), dtype=torch.bool, device=device),
        quality=torch.as_tensor(np.asarray([f.quality for f in features]), dtype=torch.float32, device=device),
    )


class Screener:
    """A model on a device; thread-safe for concurrent sessions (inference only, state kept per session)."""

    def __init__(self, model: ScreeningModel, facts: ModelFacts, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self.facts = facts
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Screener:
        torch_device = choose_device(device)
        model, facts = load_checkpoint(path, torch_device)
        return cls(model, facts, torch_device)

    @property
    def kernels(self) -> str:
        return kernels_for(self.device)

    def new_session(self) -> SessionTrack:
        return SessionTrack(state=self.model.initial_state(1))

    def step(self, track: SessionTrack, features: SentenceFeatures) -> RunningEstimate:
        """Advance one session by one sentence and return its running estimate."""
        state = self.model.initial_state(1) if track.state is None else track.state.to(self.device)
        (estimate,), new_state, (account,) = self.step_batch([features], [track.account], state)
        track.advance(new_state, account)
        return estimate

    @torch.no_grad()
    def step_batch(
        self, features: list[SentenceFeatures], accounts: list[EvidenceAccount], state: RecurrentState
    ) -> tuple[list[RunningEstimate], RecurrentState, list[EvidenceAccount]]:
        """Advance a batch of sessions (row i: one sentence of session i, whose state is row i of `state` and
        whose account is `accounts[i]`): their estimates, new state and new accounts. The accounts given are left
        as they are: each session's holder moves on to the new ones itself (`SessionTrack.advance`)."""
        encoded = self.model.encode(collate(features, self.model.config, self.device), state.audio_moments)
        output, new_state = self.model.step(encoded, state)
        estimates, new_accounts = [], [account.after(f) for f, account in zip(features, accounts, strict=True)]
        for i, (f, account) in enumerate(zip(features, new_accounts, strict=True)):
            estimates.append(
                _estimate(
                    f,
                    account,
                    output.probability[i],
                    output.modality_probability[i],
                    encoded.weights[i],
                    self.facts,
                )
            )
        return estimates, new_state, new_accounts

    @torch.no_grad()
    def offline(self, features: list[SentenceFeatures]) -> list[RunningEstimate]:
        """Score a whole session with the full-scan reference: one estimate per prefix."""
        if not features:
            return []
        encoded = self.model.encode_sessions(collate(features, self.model.config, self.device), [len(features)])
        session = EncodedSentences(
            fused=encoded.fused.unsqueeze(0),
            tokens=encoded.tokens.unsqueeze(0),
            weights=encoded.weights.unsqueeze(0),
            available=encoded.available.unsqueeze(0),
        )
        output = self.model.forward_session(session)
        account = EvidenceAccount()
        estimates = []
        for k, f in enumerate(features):
            account.account(f)
            estimates.append(
                _estimate(
                    f,
                    account,
                    output.probability[0, k],
                    output.modality_probability[0, k],
                    encoded.weights[k],
                    self.facts,
                )
            )
        return estimates


def _estimate(
    features: SentenceFeatures,
    account: EvidenceAccount,
    probability: torch.Tensor,
    modality_probability: torch.Tensor,
    weights: torch.Tensor,
    facts: ModelFacts,
) -> RunningEstimate:
    """The estimate after a sentence: the model's fused head, or the stack of the checkpoint's heads."""
    calibration = facts.interval
    language_text = account.language_text.probability
    shares = [float(w) for w in weights]
    estimate = float(probability)
    if facts.stack is not None:
        estimate, shares, rests_on_something = _stacked(facts.stack, account)
        calibration = calibration if rests_on_something else None
    modalities = tuple(
        ModalityEstimate(
            modality=name,
            available=features.available[i],
            quality=float(features.quality[i]),
            weight=shares[i],
            probability=language_text
            if name == "text" and language_text is not None
            else float(modality_probability[i]),
        )
        for i, name in enumerate(MODALITY_NAMES)
    )
    low, high = interval_for(calibration, estimate, account.evidence, account.usable_speech_s)
    return RunningEstimate(
        probability=estimate,
        evidence=account.evidence,
        modalities=modalities,
        symptoms=account.symptoms,
        interval_low=low,
        interval_high=high,
        interval_level=calibration.level if calibration else 0.0,
        enough_speech=account.usable_speech_s >= ENOUGH_SPEECH_S,
    )


def _stacked(stack: Stack, account: EvidenceAccount) -> tuple[float, list[float], bool]:
    """(the stacked probability, each modality's share of it, whether any stacked head has evidence yet) from
    the session's running head logits."""
    logits = {}
    text = account.language_text
    if text.chars and f"{TEXT_HEAD}{text.language}" in stack.heads:
        logits[f"{TEXT_HEAD}{text.language}"] = text.logit
    probability, shares = stack.combine(logits)
    by_modality = [
        sum(share for head, share in shares.items() if head.split(":")[0] == name) for name in MODALITY_NAMES
    ]
    return probability, by_modality, bool(logits)
