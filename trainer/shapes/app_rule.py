"""Shapes-world scores of a model as the app shows it (not the zero-shot protocol).

The app types the 12 shape names, lets the model's own background prompt compete (its pixels stay
unlabeled) and applies the model's own PAMR default. ``held_out_scores`` scores that on a world seed
with one confusion matrix (``held_out_confusion``; unlabeled counts as background); ``demo_scores``
scores the images ``chimera-app --demo`` opens, shape by shape. The bundled-model tests and
``benchmarks/shapes_candidates.py`` share these, so a candidate is judged the way the tests judge the
shipped model.
"""

from __future__ import annotations

import numpy as np

from chimera_trainer.metrics import ConfusionMatrix
from chimera_trainer.shapes.world import BACKGROUND, SHAPE_CLASSES, SPLIT, sample

CLASSES = [BACKGROUND, *SHAPE_CLASSES]  # label 0 = background = unlabeled in the app
HELD_OUT_SIZE = 64  # the shapes models' native size


def held_out_confusion(segmenter, seed: int, images: int, refine: int | None = None) -> ConfusionMatrix:
    """The app's labels against the truth over images ``0..images-1`` of world ``seed`` (``CLASSES``
    order, unlabeled counted as background); ``refine`` None: the model's PAMR default."""
    matrix = ConfusionMatrix(len(CLASSES))
    for i in range(images):
        s = sample(seed, i, HELD_OUT_SIZE)
        segmenter.set_image(s.image)
        out = segmenter.segment(list(SHAPE_CLASSES), min_confidence=0.0, refine=refine)
        matrix.update(out.labels + 1, s.labels)  # unlabeled (-1) counts as background (0)
    return matrix


def held_out_scores(segmenter, seed: int, images: int, refine: int | None = None) -> dict:
    """``ConfusionMatrix.summary`` of ``held_out_confusion`` (plus ``mIoU_seen_shapes``: seen classes
    without background)."""
    summary = held_out_confusion(segmenter, seed, images, refine).summary(CLASSES, list(SPLIT["unseen"]))
    shapes = [summary["per_class_iou"][c] for c in SPLIT["seen"]]
    summary["mIoU_seen_shapes"] = float(np.mean([v for v in shapes if v is not None]))  # None: never present
    return summary


def visible_masks(s) -> list[np.ndarray]:
    """The visible pixels of each painted shape of a ``Sample`` (later shapes hide earlier ones)."""
    size = s.labels.shape[0]
    masks, covered = [], np.zeros(s.labels.shape, bool)
    for shape in reversed(s.shapes):
        mask = (shape.alpha(size) >= 0.5) & ~covered
        covered |= mask
        masks.append(mask)
    return masks[::-1]


def demo_scores(segmenter, seed: int, images: int, size: int) -> dict:
    """The demo's images (``sample(seed, i, size, min_objects=2)``, as ``bundle.write_demo_images``
    draws them): the share of shape pixels given their own class, background pixels left unlabeled,
    and per shape (image, truth, the label most of its pixels got: a class or "background")."""
    right = shape_pixels = kept = background = 0
    per_shape = []
    for i in range(images):
        s = sample(seed, i, size, min_objects=2)
        segmenter.set_image(s.image)
        labels = segmenter.segment(list(SHAPE_CLASSES), min_confidence=0.0).labels + 1  # 0 = unlabeled
        is_background = s.labels == 0
        kept += int(np.count_nonzero(labels[is_background] == 0))
        background += int(np.count_nonzero(is_background))
        right += int(np.count_nonzero((labels == s.labels) & ~is_background))
        shape_pixels += int(np.count_nonzero(~is_background))
        for shape, mask in zip(s.shapes, visible_masks(s)):
            if mask.any():
                majority = int(np.bincount(labels[mask], minlength=len(CLASSES)).argmax())
                per_shape.append((i, shape.name, CLASSES[majority]))
    return {"shape_pixels_right": right / max(shape_pixels, 1), "background_kept": kept / max(background, 1),
            "shapes_right_by_majority": sum(t == p for _, t, p in per_shape), "shapes": len(per_shape),
            "per_shape": per_shape}
