"""StatePool: the recurrent state of up to `capacity` sessions in preallocated device tensors, one slot each.

Each session owns a slot index. A batched step gathers the slots of the sessions in the batch, advances them
together and writes them back. A session idle for long can `export` its slot (a small CPU copy) and release
it; `load` brings it back into any free slot later, so idle sessions cost no device memory.
"""

from __future__ import annotations

import torch

from depscreen.engine.model.mamba import MambaState
from depscreen.engine.model.screening import ScreeningModel, SessionState


class PoolExhausted(RuntimeError):
    """Every slot is taken."""


class StatePool:
    """Per-layer `[capacity, ...]` tensors for the session Mamba stack plus the per-modality running sums."""

    def __init__(self, model: ScreeningModel, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"state pool capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._initial = model.initial_state(1)
        self._state = model.initial_state(capacity)
        self._free = list(range(capacity - 1, -1, -1))

    @property
    def slots_used(self) -> int:
        return self.capacity - len(self._free)

    @property
    def bytes_per_slot(self) -> int:
        return sum(t.element_size() * t.numel() for t in _tensors(self._initial))

    def acquire(self) -> int:
        """A free slot, reset to the initial state."""
        if not self._free:
            raise PoolExhausted(f"all {self.capacity} state slots are in use")
        slot = self._free.pop()
        self.load(slot, self._initial)
        return slot

    def release(self, slot: int) -> None:
        if not 0 <= slot < self.capacity or slot in self._free:
            raise ValueError(f"slot {slot} is not in use")
        self._free.append(slot)

    def gather(self, slots: torch.Tensor) -> SessionState:
        """The states of `slots` (a 1-D long tensor) as one batch."""
        return SessionState(
            layers=[MambaState(conv=s.conv[slots], ssm=s.ssm[slots]) for s in self._state.layers],
            modality_sum=self._state.modality_sum[slots],
            modality_count=self._state.modality_count[slots],
        )

    def scatter(self, slots: torch.Tensor, state: SessionState) -> None:
        """Write a batch of states back into `slots`."""
        for pooled, new in zip(self._state.layers, state.layers, strict=True):
            pooled.conv.index_copy_(0, slots, new.conv)
            pooled.ssm.index_copy_(0, slots, new.ssm)
        self._state.modality_sum.index_copy_(0, slots, state.modality_sum)
        self._state.modality_count.index_copy_(0, slots, state.modality_count)

    def export(self, slot: int) -> SessionState:
        """A CPU copy of one slot's state (to checkpoint an idle session)."""
        return cpu_row(self.gather(torch.tensor([slot], device=self._state.modality_sum.device)), 0)

    def load(self, slot: int, state: SessionState) -> None:
        """Put a one-session state (from `export`, or the initial state) into `slot`."""
        device = self._state.modality_sum.device
        moved = SessionState(
            layers=[MambaState(conv=s.conv.to(device), ssm=s.ssm.to(device)) for s in state.layers],
            modality_sum=state.modality_sum.to(device),
            modality_count=state.modality_count.to(device),
        )
        self.scatter(torch.tensor([slot], device=device), moved)


def cpu_row(state: SessionState, row: int) -> SessionState:
    """A CPU copy (never a view) of one session (`row`) of a batch of states, as a one-session state."""

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[row : row + 1].to("cpu", copy=True)

    return SessionState(
        layers=[MambaState(conv=copy(s.conv), ssm=copy(s.ssm)) for s in state.layers],
        modality_sum=copy(state.modality_sum),
        modality_count=copy(state.modality_count),
    )


def _tensors(state: SessionState) -> list[torch.Tensor]:
    return [t for s in state.layers for t in (s.conv, s.ssm)] + [state.modality_sum, state.modality_count]
