"""StatePool: the recurrent state of up to `capacity` sessions in preallocated device tensors, one slot each.

Each session owns a slot index. A batched step gathers the slots of the sessions in the batch, advances them
together and writes them back. A session idle for long can `export` its slot (a small CPU copy) and release
it; `load` brings it back into any free slot later, so idle sessions cost no device memory. The pool holds a
`RecurrentState` of `capacity` rows and uses only its row-wise operations, so it never names the state's parts.
"""

from __future__ import annotations

import torch

from depscreen.engine.model.screening import ScreeningModel
from depscreen.engine.model.state import RecurrentState


class PoolExhausted(RuntimeError):
    """Every slot is taken."""


class StatePool:
    """A `capacity`-row session state on the model's device, one row per slot."""

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
        return self._initial.nbytes

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

    def gather(self, slots: torch.Tensor) -> RecurrentState:
        """The states of `slots` (a 1-D long tensor) as one batch."""
        return self._state.rows(slots)

    def scatter(self, slots: torch.Tensor, state: RecurrentState) -> None:
        """Write a batch of states back into `slots`."""
        self._state.write_rows(slots, state)

    def export(self, slot: int) -> RecurrentState:
        """A CPU copy of one slot's state (to snapshot an idle session)."""
        return self._state.cpu_row(slot)

    def load(self, slot: int, state: RecurrentState) -> None:
        """Put a one-session state (from `export`, or the initial state) into `slot`."""
        device = self._state.device
        self.scatter(torch.tensor([slot], device=device), state.to(device))
