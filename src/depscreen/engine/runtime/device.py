"""Device choice: `auto` takes CUDA when a GPU is visible, else the CPU."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choose_device(name: str) -> torch.device:
    """Resolve `auto|cpu|cuda` to a torch device; asking for CUDA without one is an error that says so."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"device {name!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU: use --device cpu or auto")
    return torch.device(name)
