"""Chimera's engine: open-vocabulary segmentation models and cached inference. Qt-free.

    from engine import load_segmenter, load_image
    seg = load_segmenter("clip:ViT-B-16/openai", device="auto")
    seg.set_image(load_image("photo.jpg"))
    out = seg.segment(["road", "car; automobile", "tree"])
"""

from engine.errors import (CheckpointError, ChimeraError, ClassNameError, ImageLoadError, ModelNameError,
                           WeightsNotFoundError)
from engine.images import find_images, load_image
from engine.segmenter import ImageFeatures, Segmentation, Segmenter, load_segmenter

__all__ = [
    "CheckpointError", "ChimeraError", "ClassNameError", "ImageLoadError", "ModelNameError",
    "WeightsNotFoundError", "find_images", "load_image", "ImageFeatures", "Segmentation", "Segmenter",
    "load_segmenter",
]
