"""Stable class colours: the PASCAL VOC palette, so class k always gets VOC colour k.

Index 0 is unlabeled and black; index 1 is (128, 0, 0), 2 is (0, 128, 0), 3 is (128, 128, 0) ...
The VOC rule interleaves the bits of the index into the high bits of R, G and B, which keeps
neighbouring indices visually distinct and is what VOC-style tools expect in a palette PNG.
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_color", "palette"]

# 8 rounds of 3 bits cover indices below 2**24, each with a unique colour.
_MAX_INDEX = (1 << 24) - 1


def class_color(index: int) -> tuple[int, int, int]:
    """The (r, g, b) colour of 1-based class ``index``; 0 (unlabeled) is (0, 0, 0).

    Raises:
        ValueError: ``index`` is negative or not below 2**24.
    """
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"class index must be in 0..{_MAX_INDEX}, got {index}")
    r = g = b = 0
    c = int(index)
    for bit in range(7, -1, -1):
        r |= (c & 1) << bit
        g |= ((c >> 1) & 1) << bit
        b |= ((c >> 2) & 1) << bit
        c >>= 3
    return r, g, b


def palette(n: int) -> np.ndarray:
    """Colours of indices 0..n: an (n+1, 3) uint8 array whose row k is ``class_color(k)``."""
    if not 0 <= n <= _MAX_INDEX:
        raise ValueError(f"number of classes must be in 0..{_MAX_INDEX}, got {n}")
    c = np.arange(n + 1, dtype=np.int64)
    colors = np.zeros((n + 1, 3), dtype=np.int64)
    for bit in range(7, -1, -1):  # same bit interleaving as class_color, for all rows at once
        for channel in range(3):
            colors[:, channel] |= ((c >> channel) & 1) << bit
        c >>= 3
    return colors.astype(np.uint8)
