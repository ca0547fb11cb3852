"""``chimera-label``'s COCO path: pre-label a list of images into small, picklable records.

The labelling itself is the one pre-label pipeline (``chimera_app.service.prelabel``); this module
turns each result into COCO RLE masks (and an indexed PNG with ``--png-dir``). Under ``torchrun``
every process runs it on its own share of the images and the caller merges the records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chimera_app.project.mask_paths import png_path
from chimera_app.service.prelabel import Prelabeler
from chimera_engine.formats.coco import ClassMask, encode_label_map
from chimera_engine.formats.png_masks import write_index_png

__all__ = ["Failure", "LabelOptions", "LabeledImage", "label_images", "relative_name"]


@dataclasses.dataclass(frozen=True)
class LabeledImage:
    """One pre-labelled image, small enough to send between processes."""

    file_name: str  # relative to the image root, forward slashes
    width: int
    height: int
    masks: list[ClassMask]
    unlabeled_share: float  # fraction of pixels left unlabeled
    mean_confidence: float
    png_error: str | None = None  # why its --png-dir mask could not be written (it is still in the COCO)


@dataclasses.dataclass(frozen=True)
class Failure:
    file_name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class LabelOptions:
    classes: tuple[str, ...]
    background: tuple[str, ...] | None = None  # None: the model's own (Segmenter.segment)
    min_confidence: float | None = None
    png_dir: Path | None = None


def relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def label_images(segmenter, paths: Sequence[Path], root: Path, options: LabelOptions,
                 on_progress: Callable[[int], None] = lambda n: None) -> tuple[list[LabeledImage], list[Failure]]:
    """Pre-label ``paths`` (all under ``root``); returns results and failures.

    ``on_progress(n)`` is called as every n images are finished (labelled or failed).
    """
    run = Prelabeler([(relative_name(p, root), p) for p in paths], options.classes, background=options.background,
                     min_confidence=options.min_confidence, images_per_step=segmenter.batch_size,
                     decode_workers=2, decode_ahead=2 * segmenter.batch_size + 2)
    results: list[LabeledImage] = []
    failures: list[Failure] = []
    for result in run.results(segmenter):
        if not result.ok:
            failures.append(Failure(result.key, result.error))
        else:
            results.append(_finish(result.key, result.labels, result.confidence, options))
        on_progress(1)
    return results, failures


def _finish(name: str, class_ids: np.ndarray, confidence: np.ndarray, options: LabelOptions) -> LabeledImage:
    """``class_ids``: 0 = unlabeled, k = the k-th class (the pipeline's default ids)."""
    label_map = class_ids.astype(np.uint8) if len(options.classes) <= 255 else class_ids
    png_error = None
    if options.png_dir is not None:
        try:
            write_index_png(png_path(options.png_dir, name), label_map, num_classes=len(options.classes))
        except OSError as exc:  # e.g. a full disk: the labels still reach the COCO file
            png_error = exc.strerror or str(exc)
    height, width = label_map.shape
    return LabeledImage(name, width, height, encode_label_map(label_map, len(options.classes)),
                        float((label_map == 0).mean()), float(confidence.mean()), png_error)
