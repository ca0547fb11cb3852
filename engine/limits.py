"""The sizes a file may declare, checked before anything of that size is allocated.

A small file can declare an enormous thing: a 388 KB PNG of 20000 x 20000 pixels, a COCO polygon
whose corners lie a billion pixels apart, a checkpoint whose CLIP config asks for width 65536. Every
reader checks the declared size against one of these limits *before* it decodes or allocates, and a
refusal is a ``LimitError`` that names the limit, the value and where it came from.

The numbers (also in the README):

* ``MAX_IMAGE_PIXELS`` = 200 megapixels, and ``MAX_IMAGE_SIDE`` = 65535 pixels per side. An open
  image costs about 10 bytes per pixel in the app (RGB 3, labels 2, provenance 1, confidence 4):
  2 GB at the limit, 4x the 48 MP photos the app is measured on. A 20000 x 20000 PNG (400 MP) took
  7 GB and a minute to decode before this limit existed. 65535 is JPEG's own per-side maximum.
* ``MAX_CLASSES`` = 2048 classes in one list (LVIS has 1203): scores cost classes x feature cells.
* ``MAX_COCO_BYTES`` = 512 MiB of COCO JSON (Python's parser needs ~10x that in memory), and
  polygons of at most ``MAX_POLYGON_PERIMETER`` = 10 million pixels of outline each and
  ``MAX_COCO_POLYGON_PERIMETER`` = 100 million in one file: pycocotools rasterises a polygon by
  walking its outline, with memory and time proportional to it. Coordinates must be finite and lie
  within one image size around the image.
* CLIP configs: ``CLIP_CONFIG_LIMITS`` bounds every dimension of a stored open_clip config, and a
  stored model must not declare more tensors than its file holds (see chimera_engine.checkpoints).
"""

from __future__ import annotations

import math
from typing import Any

from chimera_engine.errors import ChimeraError, ImageLoadError

__all__ = ["LimitError", "ImageTooLargeError", "MAX_IMAGE_FILE_BYTES", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "MAX_CLASSES", "MAX_COCO_BYTES",
           "MAX_POLYGON_PERIMETER", "MAX_COCO_POLYGON_PERIMETER", "MAX_INFERENCE_SIDE",
           "CLIP_CONFIG_LIMITS", "check_image_size", "check_class_count", "check_file_size",
           "check_int"]

MAX_IMAGE_PIXELS = 200_000_000
MAX_IMAGE_SIDE = 65_535
MAX_IMAGE_FILE_BYTES = 2 * 2**30  # an uncompressed 16-bit RGBA TIFF at the pixel limit is 1.6 GB
MAX_CLASSES = 2048
MAX_COCO_BYTES = 512 * 2**20
MAX_POLYGON_PERIMETER = 10_000_000
MAX_COCO_POLYGON_PERIMETER = 100_000_000
MAX_REFINE_STEPS = 100  # PAMR steps a checkpoint may ask for by default (the papers use 10)
MAX_REFINE_DILATION = 64  # PAMR neighbour distance a checkpoint may ask for (the papers use 8 and 16)
MAX_INFERENCE_SIDE = 8192  # window / short side / long side of a checkpoint's inference settings

# Every integer of an open_clip config dict (vision_cfg / text_cfg / top level): (lowest, highest).
# The highest values are above every published CLIP (ViT-bigG: width 1664, 48 layers, 224 px).
CLIP_CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "embed_dim": (1, 8192),
    "image_size": (16, 4096),
    "patch_size": (1, 256),
    "layers": (1, 128),
    "width": (1, 8192),
    "head_width": (1, 8192),
    "heads": (1, 256),
    "context_length": (1, 2048),
    "vocab_size": (1, 1_000_000),
    "output_dim": (1, 8192),
}


class LimitError(ChimeraError):
    """A file declares a size beyond one of this module's limits; nothing of that size was allocated."""


class ImageTooLargeError(ImageLoadError, LimitError):
    """An image file declares more pixels (or a longer side) than the limits allow."""


def check_image_size(width: Any, height: Any, where: str, max_pixels: int = MAX_IMAGE_PIXELS,
                     error: type[ChimeraError] = LimitError) -> None:
    """Refuse a declared image size that is not positive integers, or beyond the pixel/side limits.
    ``error`` is the class raised (a LimitError subclass, e.g. ImageTooLargeError)."""
    if not (_is_int(width) and _is_int(height)) or width < 1 or height < 1:
        raise error(f"{where}: image size {width!r} x {height!r} is not two positive whole numbers")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise error(f"{where}: image is too large ({width}x{height}: a side exceeds the limit of "
                         f"{MAX_IMAGE_SIDE} pixels)")
    if width * height > max_pixels:
        raise error(f"{where}: image is too large ({width}x{height} = {width * height / 1e6:.4g} "
                         f"megapixels, limit {max_pixels / 1e6:.4g})")


def check_class_count(count: int, where: str) -> None:
    if count > MAX_CLASSES:
        raise LimitError(f"{where}: {count} classes is more than the limit of {MAX_CLASSES}")


def check_file_size(size: int, limit: int, where: str, what: str) -> None:
    if size > limit:
        raise LimitError(f"{where}: the {what} is {size / 2**20:.1f} MiB, more than the limit of "
                         f"{limit / 2**20:.0f} MiB")


def check_int(value: Any, low: int, high: int, where: str) -> int:
    """``value`` if it is a whole number (not a bool) in ``low..high``; LimitError otherwise."""
    if not _is_int(value):
        raise LimitError(f"{where} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise LimitError(f"{where} = {value} is outside the allowed range {low}..{high}")
    return value


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
