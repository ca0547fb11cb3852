"""Indexed PNG masks (PASCAL VOC SegmentationClass style) and the class list beside them.

Pixel value = class index (0 = unlabeled, k = k-th class). Up to index 255 the PNG is 8-bit
palette ("P") with the VOC colours, so image viewers show class colours while readers that open
it as indices still get the class numbers. Beyond 255 it is a 16-bit grayscale PNG.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from chimera_engine.atomic import atomic_write_bytes, atomic_write_json
from chimera_engine.formats.palette import class_color, palette
from chimera_engine.limits import check_image_size

__all__ = ["write_index_png", "encode_index_png", "read_index_png", "write_class_list", "CLASS_LIST_NAME"]

CLASS_LIST_NAME = "classes.json"
_MAX_8BIT = 255


def _palette_bytes(colors: np.ndarray | None) -> list[int]:
    """The 768-entry PIL palette: ``colors`` rows first (Kx3 uint8), VOC colours for the rest."""
    table = palette(_MAX_8BIT)
    if colors is not None:
        given = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[: _MAX_8BIT + 1]
        table[: len(given)] = given
    return table.ravel().tolist()


def _encode_png(label_map: np.ndarray, colors: np.ndarray | None, sixteen_bit: bool) -> bytes:
    """PNG bytes of an HxW label map: 8-bit palette, or 16-bit grayscale when ``sixteen_bit``."""
    height, width = label_map.shape
    if sixteen_bit:
        # "I;16" is little-endian 16-bit; Pillow writes it as a 16-bit grayscale PNG.
        image = Image.frombytes("I;16", (width, height), label_map.astype("<u2").tobytes())
    else:
        image = Image.frombytes("P", (width, height), label_map.astype(np.uint8).tobytes())
        image.putpalette(_palette_bytes(colors))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_index_png(path: str | os.PathLike[str], label_map: np.ndarray,
                    colors: np.ndarray | None = None, num_classes: int | None = None) -> None:
    """Write an HxW integer label map as an indexed PNG, atomically.

    Args:
        label_map: HxW integer array (uint8/uint16/int32), values in 0..65535.
        colors: optional Kx3 uint8 palette rows for indices 0..K-1 (8-bit files only); indices
            without a row get their VOC colour.
        num_classes: when given, the format follows the class count (8-bit up to 255 classes)
            so every mask of one dataset has the same format; otherwise the map's maximum decides.

    Raises:
        ValueError: not a 2-D integer array, a negative value, a value above 65535, or a value
            above 255 when ``num_classes`` asked for 8-bit.
    """
    atomic_write_bytes(path, encode_index_png(label_map, colors, num_classes))


def encode_index_png(label_map: np.ndarray, colors: np.ndarray | None = None,
                     num_classes: int | None = None) -> bytes:
    """The PNG bytes ``write_index_png`` writes (same arguments and ValueErrors), for callers that
    commit several files together."""
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label map must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise ValueError(f"label values must lie in 0..65535, got {low}..{high}")
    sixteen_bit = (num_classes if num_classes is not None else high) > _MAX_8BIT
    if not sixteen_bit and high > _MAX_8BIT:
        raise ValueError(f"label value {high} does not fit an 8-bit PNG for {num_classes} classes")
    return _encode_png(labels, colors, sixteen_bit)


def read_index_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an indexed PNG as an HxW array of class indices: uint8 (8-bit) or uint16 (16-bit).

    Palette images give their indices, not their colours. Colour (RGB) masks are refused.
    """
    with Image.open(path) as image:
        check_image_size(*image.size, f"cannot read '{path}'")  # the header's size, before decoding
        if image.mode in ("P", "L"):
            return np.array(image, dtype=np.uint8)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            values = np.array(image)
            if values.size and (values.min() < 0 or values.max() > np.iinfo(np.uint16).max):
                raise ValueError(f"{path}: values outside 0..65535 are not class indices")
            return values.astype(np.uint16)
        raise ValueError(f"{path}: mode {image.mode} is not an index mask (expected P, L or 16-bit)")


def write_class_list(directory: str | os.PathLike[str], class_names: Sequence[str]) -> Path:
    """Write ``classes.json`` (index, name and colour of every class) into ``directory``.

    Format: ``{"unlabeled_index": 0, "classes": [{"index": k, "name": ..., "color": [r, g, b]}]}``
    with k from 1 in the project's class order. Returns the file's path.
    """
    path = Path(directory) / CLASS_LIST_NAME
    classes = [{"index": k, "name": name, "color": list(class_color(k))}
               for k, name in enumerate(class_names, start=1)]
    atomic_write_json(path, {"unlabeled_index": 0, "classes": classes})
    return path
