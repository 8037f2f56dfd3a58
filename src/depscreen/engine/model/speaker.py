"""Speaker normalisation: a session's running statistics of its audio descriptors, and the descriptors
normalised by them, so that the audio encoder hears how a voice changes rather than whose voice it is.

The statistics are moments of the descriptors after the training standardisation, over the voiced frames
(pitch above 0) of the session's sentences so far: `[..., 3, 25]` = (voiced frame count, sum, sum of
squares) per descriptor, in float64 so that an hour of speech sums without loss. A sentence is normalised by
its session's moments up to and including itself: the whole sentence is there when it closes (as for the
bidirectional sentence encoder), and the first sentence is then normalised by its own voice.

- Mean: the session's voiced mean as soon as one frame is voiced; before that, 0 (the training mean).
- Variance: the session's voiced variance shrunk towards the training population's (1 after
  standardisation) by `prior_frames` pseudo-frames, so a first short sentence is not stretched to unit
  variance from a handful of frames; with no voiced frame yet the descriptors pass through unchanged.
- Unvoiced frames: the voiced-only descriptors (`audio.VOICED_ONLY`, 0 there meaning "undefined") keep their
  training-standardised value, the same for every speaker (normalising it would carry the speaker's mean
  pitch into every pause); the other descriptors are normalised as in voiced frames.

Live, the moments are part of the session state (`RecurrentState.audio_moments`), advanced by each sentence;
offline, `preceding` sums them within each session. Both give the same numbers (prefix parity).
"""

from __future__ import annotations

import torch

from depscreen.engine.features.audio import PITCH, VOICED_ONLY

MOMENTS = 3
"""Rows of a moments tensor: voiced frame count, sum, sum of squares."""


def voiced_frames(raw: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`[n, frames]` bool: the frame is within its sentence and voiced (raw descriptors `[n, frames, 25]`)."""
    t = torch.arange(raw.shape[1], device=raw.device).unsqueeze(0)
    return (t < lengths.unsqueeze(1)) & (raw[..., PITCH] > 0)


def sentence_moments(standardised: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """`[n, 3, dim]` moments of each sentence's voiced frames of its standardised descriptors."""
    weight = voiced.to(torch.float64).unsqueeze(-1)
    values = standardised.to(torch.float64) * weight
    count = weight.sum(1).expand(-1, standardised.shape[-1])
    return torch.stack([count, values.sum(1), (values * values).sum(1)], dim=1)


def preceding(moments: torch.Tensor, sessions: list[int]) -> torch.Tensor:
    """Sentences of whole sessions, flat, session after session (`sessions` sentences each): the moments of
    each sentence's session before that sentence (0 for a first sentence), as a state would hold them."""
    if sum(sessions) != moments.shape[0]:
        raise ValueError(f"sessions of {sum(sessions)} sentences in all, but {moments.shape[0]} sentences given")
    parts = [torch.cat([torch.zeros_like(s[:1]), torch.cumsum(s, dim=0)[:-1]]) for s in moments.split(sessions)]
    return torch.cat(parts) if parts else moments


def normalise(
    standardised: torch.Tensor, voiced: torch.Tensor, moments: torch.Tensor, prior_frames: float
) -> torch.Tensor:
    """Standardised descriptors `[n, frames, dim]` normalised by their session's `moments` `[n, 3, dim]`
    (up to and including the sentence; see the module docstring)."""
    count, total, squares = moments.unbind(1)
    mean = total / count.clamp(min=1)
    spread = (squares - count * mean * mean).clamp(min=0)
    std = torch.sqrt((spread + prior_frames) / (count + prior_frames))
    dtype = standardised.dtype
    normalised = (standardised - mean.unsqueeze(1).to(dtype)) / std.unsqueeze(1).to(dtype)
    voiced_only = torch.tensor(VOICED_ONLY, device=standardised.device)
    keep = voiced_only & ~voiced.unsqueeze(-1)
    return torch.where(keep, standardised, normalised)
