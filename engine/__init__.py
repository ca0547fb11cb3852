"""Chimera's engine: open-vocabulary segmentation models and cached inference. Qt-free.

    from chimera_engine import load_segmenter, load_image
    seg = load_segmenter("clip:ViT-B-16/openai", device="auto")
    seg.set_image(load_image("photo.jpg"))
    out = seg.segment(["road", "car; automobile", "tree"])

Importing ``chimera_engine`` (or ``chimera_engine.errors``, ``chimera_engine.class_names``, ``chimera_engine.model_names``) is cheap:
torch, open_clip and OpenCV are imported when a name that needs them is first used (PEP 562), so
the project store, ``chimera-app --help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib
import os

# OpenMP threads sleep at barriers instead of spinning (set before torch loads; a value the user
# set wins). benchmarks/cpu_load.py, 2 cores, ViT-B-16 512² windows, 2 threads: idle 2.71 vs 2.87 s
# per image, beside two busy processes 5.68 vs 7.44 s — a spinning thread burns the time slice its
# partner needs to reach the barrier.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import TYPE_CHECKING

from chimera_engine.errors import (CheckpointError, ChimeraError, ClassNameError, ImageLoadError, ModelNameError,
                           WeightsNotFoundError)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from chimera_engine.images import find_images, load_image
    from chimera_engine.segmenter import ImageFeatures, Segmentation, Segmenter, load_segmenter

_LAZY = {  # public name -> the module that defines it (imported on first use)
    "find_images": "chimera_engine.images",
    "load_image": "chimera_engine.images",
    "ImageFeatures": "chimera_engine.segmenter",
    "Segmentation": "chimera_engine.segmenter",
    "Segmenter": "chimera_engine.segmenter",
    "load_segmenter": "chimera_engine.segmenter",
}

__all__ = [
    "CheckpointError", "ChimeraError", "ClassNameError", "ImageLoadError", "ModelNameError",
    "WeightsNotFoundError", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chimera_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
