"""RecurrentState: the recurrent model state of a batch of sessions, and the row-wise operations on it.

The state is a tree of tensors whose first dimension is the session (row i belongs to session i): the
session Mamba layers' conv and SSM states, the running per-modality sums and counts and, for a
speaker-normalised model, the running moments of its audio descriptors. Every operation here walks that
tree, so the state pool and the snapshot format never name its parts; a new part of the state is declared
on `RecurrentState`, created in `ScreeningModel.initial_state`, and follows everywhere else. A part a model may
not have is optional (`Tensor | None`): None in a model without it, left out of the plain form then (so the
plain form of such a model is the one it had before the part existed), and None when a plain form lacks it.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch

from depscreen.engine.model.mamba import MambaState

Plain = dict[str, Any]
"""A state as plain containers of tensors (what `torch.load(weights_only=True)` reads back)."""


@dataclass
class RecurrentState:
    """Fixed-size recurrent state of a batch of sessions; its size never grows with the sentence count."""

    layers: list[MambaState]
    modality_sum: torch.Tensor
    """`[batch, modalities, d_model]` sum of each modality's sentence vectors so far."""
    modality_count: torch.Tensor
    """`[batch, modalities]` number of sentences in which each modality was available."""
    audio_moments: torch.Tensor | None = None
    """`[batch, 3, audio_dim]` float64 moments of the audio descriptors' voiced frames so far
    (`model.speaker`); None for a model without speaker normalisation."""

    @classmethod
    def parts(cls) -> tuple[str, ...]:
        """Names of the state's top-level parts (the keys of `to_plain`)."""
        return tuple(f.name for f in fields(cls))

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the state, in a fixed order."""
        return _leaves(self)

    @property
    def device(self) -> torch.device:
        return self.modality_count.device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in self.tensors())

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RecurrentState:
        """A state of the same shape with `fn` applied to every tensor."""
        return _map(self, fn)

    def rows(self, index: torch.Tensor) -> RecurrentState:
        """The sessions at `index` (a 1-D long tensor on the state's device) as a new batch."""
        return self.map(lambda t: t[index])

    def write_rows(self, index: torch.Tensor, rows: RecurrentState) -> None:
        """Overwrite the sessions at `index` with the batch `rows`, in place."""
        for target, source in zip(self.tensors(), rows.tensors(), strict=True):
            target.index_copy_(0, index, source)

    def to(self, device: torch.device | str) -> RecurrentState:
        """The state on `device` (the same tensors when they are there already)."""
        return self.map(lambda t: t.to(device))

    def cpu_row(self, row: int) -> RecurrentState:
        """A CPU copy (never a view) of session `row`, as a one-session state."""
        return self.map(lambda t: t[row : row + 1].to("cpu", copy=True))

    def to_plain(self) -> Plain:
        """The state as plain containers: a dict by field name (an optional part that is None left out),
        lists kept, nested records as tuples of their fields in declaration order. This is the layout resume
        snapshots have always stored."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_plain(cls, plain: Plain) -> RecurrentState:
        """The state `to_plain` gave (ValueError naming the part that does not fit)."""
        return _record(cls, plain, "state")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RecurrentState | None:
        """The state whose parts sit at the top level of `record` beside other keys (a resume snapshot);
        None when its required parts are None (no sentence scored yet)."""
        if any(record.get(name) is None for name in _required(cls)):
            return None
        return cls.from_plain({name: record[name] for name in cls.parts() if record.get(name) is not None})


def _leaves(node: Any) -> list[torch.Tensor]:
    if node is None:
        return []
    if isinstance(node, torch.Tensor):
        return [node]
    if is_dataclass(node):
        return [t for f in fields(node) for t in _leaves(getattr(node, f.name))]
    if isinstance(node, list | tuple):
        return [t for child in node for t in _leaves(child)]
    raise TypeError(f"a session state holds tensors, lists and records, not {type(node).__name__}")


def _map(node: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if node is None:
        return None
    if isinstance(node, torch.Tensor):
        return fn(node)
    if is_dataclass(node):
        return type(node)(**{f.name: _map(getattr(node, f.name), fn) for f in fields(node)})
    if isinstance(node, list | tuple):
        return type(node)(_map(child, fn) for child in node)
    raise TypeError(f"a session state holds tensors, lists and records, not {type(node).__name__}")


def _plain(node: Any) -> Any:
    if is_dataclass(node):
        return tuple(_plain(getattr(node, f.name)) for f in fields(node))
    if isinstance(node, list):
        return [_plain(child) for child in node]
    return node


def _optional(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _required(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in fields(cls) if not _optional(hints[f.name])]


def _record(cls: type, values: Any, where: str) -> Any:
    """A `cls` record from a dict by field name (the top level; optional parts may be missing) or a tuple in
    field order (nested)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    if isinstance(values, dict):
        if not set(_required(cls)) <= set(values) <= set(names):
            raise ValueError(f"{where}: expected the parts {names}, got {sorted(values)}")
        values = [values.get(name) for name in names]
    elif not isinstance(values, tuple | list) or len(values) != len(names):
        raise ValueError(f"{where}: expected {len(names)} parts ({', '.join(names)})")
    return cls(
        **{name: _typed(hints[name], value, f"{where}.{name}") for name, value in zip(names, values, strict=True)}
    )


def _typed(hint: Any, value: Any, where: str) -> Any:
    if _optional(hint):
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return None if value is None else _typed(inner, value, where)
    if hint is torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: expected a tensor, got {type(value).__name__}")
        return value
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        return [_typed(item, child, f"{where}[{i}]") for i, child in enumerate(value)]
    if is_dataclass(hint):
        return _record(hint, value, where)
    raise TypeError(f"{where}: a session state cannot hold {hint}")
