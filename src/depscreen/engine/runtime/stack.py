"""The stacked estimate: a logistic model over the logits of the heads a checkpoint names, and each head's share.

A checkpoint with a stack (`ModelFacts.stack`, fitted by `train.stack` on out-of-fold logits inside the
training folds) gets its screening probability from it: sigmoid(bias + sum of weight x logit over the stacked
heads that have evidence so far; a head without evidence counts 0). A head's share of the estimate is
|weight x logit| over the sum of those of every stacked head (the wire's modality `weight`). Before any stacked
head has evidence the estimate is the stack's base rate (the training prevalence; sigmoid(bias) in checkpoints
written before it was recorded), resting on nothing.

Head names: `text:<language>` is the language's shipped character head (`features.language_head`), whose
running logit a session of that language keeps in its evidence account. A checkpoint naming a head this version
cannot build is refused when the server starts (`check_stack`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from depscreen.engine.features.language_head import SHIPPED_HEADS

TEXT_HEAD = "text:"


@dataclass(frozen=True)
class Stack:
    heads: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    base_rate: float | None = None
    """The estimate before any stacked head has evidence: the training prevalence (a head in its own balanced
    calibration would say 0.5); None in checkpoints written before it, where it is sigmoid(bias)."""

    def combine(self, logits: dict[str, float]) -> tuple[float, dict[str, float]]:
        """(the stacked probability, each stacked head's share) from the logits of the heads with evidence."""
        terms = {
            head: weight * logits[head] for head, weight in zip(self.heads, self.weights, strict=True) if head in logits
        }
        if not terms and self.base_rate is not None:
            return self.base_rate, dict.fromkeys(self.heads, 0.0)
        total = sum(abs(term) for term in terms.values())
        shares = {head: abs(terms.get(head, 0.0)) / total if total > 0 else 0.0 for head in self.heads}
        return 0.5 * (1.0 + math.tanh((self.bias + sum(terms.values())) / 2)), shares  # sigmoid, never overflows

    def text_language(self) -> str:
        """The language of the stacked text head ("" when none is stacked)."""
        return next((head.removeprefix(TEXT_HEAD) for head in self.heads if head.startswith(TEXT_HEAD)), "")


def check_stack(stack: Stack, model_id: str) -> None:
    """ValueError naming every stacked head this version cannot build, and what to do."""
    unknown = [
        head
        for head in stack.heads
        if not (head.startswith(TEXT_HEAD) and head.removeprefix(TEXT_HEAD) in SHIPPED_HEADS)
    ]
    base_rate_ok = stack.base_rate is None or 0.0 < stack.base_rate < 1.0
    finite = all(map(math.isfinite, (*stack.weights, stack.bias)))
    if unknown or len(stack.weights) != len(stack.heads) or not finite or not base_rate_ok:
        what = f"heads this version cannot build ({', '.join(unknown)})" if unknown else "malformed weights"
        raise ValueError(
            f"model {model_id} stacks {what}; this version builds {', '.join(TEXT_HEAD + x for x in SHIPPED_HEADS)}: "
            "serve it with the depscreen version that trained it, or retrain it"
        )
