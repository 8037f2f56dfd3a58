"""Video frames as the engine takes them: decoded RGB pixels, or the encoded bytes a wire carried (decoded only
when a frame is analysed, by `face.py`). Light on purpose: no image library is loaded to name a frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodedImage:
    """A frame as a wire carries it: JPEG, PNG or packed RGB24 bytes (`fmt` as `decode_image` takes it, with
    `width` and `height` for RGB24); decoded only when the frame is analysed."""

    data: bytes
    fmt: str
    width: int = 0
    height: int = 0


Image = np.ndarray | EncodedImage
"""A video frame: RGB uint8 pixels `[H, W, 3]` (what a media decoder yields), or an EncodedImage."""
