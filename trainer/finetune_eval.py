"""Held-out evaluation of a fine-tune, the WiSE-FT weight blend, and the choice of its factor.

Blend (Wortsman et al., "Robust fine-tuning of zero-shot models", the WiSE-FT rule):
``θ(α) = (1 − α)·θ_base + α·θ_tuned`` on every floating tensor of the encoder (the frozen CLIP tail
is identical in both, so only the body and the adapter move; integer buffers such as BatchNorm's
batch counter come from the tuned model). α = 0 is the base model, α = 1 the fine-tuned one.

Choice of α: each α of the grid is scored on the held-out verified images, by default on the share
of person-decided pixels its pre-label gets right (``decided_accuracy`` = 1 − pixels a person would
have had to change / pixels a person decided: the annotator's work, which the loop exists to cut),
optionally on mIoU over the project's classes. The verified images only hold the project's
classes, so they cannot show what a blend costs on the classes nobody corrected; the rule therefore
takes the **smallest** α whose score is within ``tolerance`` (default 1 point) of the best one: the
blend closest to the open-vocabulary base that gives up at most that much on the project.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from chimera_engine.devices import choose
from chimera_engine.models import SegmentationModel
from chimera_engine.segmenter import Segmenter
from chimera_trainer.metrics import ConfusionMatrix
from chimera_trainer.project_data import VerifiedImage

ALPHA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
ALPHA_TOLERANCE = 0.01
ALPHA_METRICS = ("decided_accuracy", "mIoU")


def blend(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 − alpha)·base + alpha·tuned`` for floating tensors; the tuned value for the others."""
    if set(base) != set(tuned):
        raise ValueError("the base and fine-tuned models have different parameters; they cannot be blended")
    out = {}
    for key, value in tuned.items():
        if value.is_floating_point():
            out[key] = torch.lerp(base[key].to(value.device, torch.float32), value.float(), float(alpha))
        else:
            out[key] = value.clone()
    return out


def eval_device(device: str) -> str:
    """Precision of the held-out evaluation: bf16 on a GPU (as inference runs there), fp32 on a CPU."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


def held_out_segmenter(model: SegmentationModel, device: str = "cpu") -> Segmenter:
    """A segmenter for ``evaluate_held_out``. It runs ``model.encoder`` as it is at each call, so one
    segmenter serves every blend loaded into the same model (``encode`` never caches features)."""
    return Segmenter(model, choose(device, eval_device(device)), batch_size=4, cache_images=1)


def evaluate_held_out(segmenter: Segmenter, images: Sequence[VerifiedImage], prompts: Sequence[str],
                      names: Sequence[str], on_image: Callable[[], None] = lambda: None) -> dict:
    """Score the segmenter's model on held-out verified images as the app would pre-label them
    (every pixel gets its best class). Returns mIoU and per-class IoU over the project's classes
    (pixels a person decided with a class; nothing else counts) and the pixels a person would have
    had to change per image (decided pixels whose pre-label differs from the person's decision,
    "unlabeled" included).
    """
    matrix = ConfusionMatrix(len(prompts))
    changes = []
    for item in images:
        features = segmenter.encode([item.image])[0]
        labels = segmenter.segment(list(prompts), features=features, min_confidence=0.0).labels
        matrix.update(labels, item.target)
        changes.append(int(np.count_nonzero(item.decided & (labels != item.person_labels))))
        on_image()
    summary = matrix.summary(list(names), [])
    decided = sum(int(np.count_nonzero(item.decided)) for item in images)
    return {"mIoU": _finite(summary["mIoU"]), "pixel_accuracy": _finite(summary["pixel_accuracy"]),
            "decided_accuracy": 1.0 - sum(changes) / decided if decided else None,
            "per_class_iou": summary["per_class_iou"], "pixels": summary["pixels"],
            "pixels_to_change_per_image": float(np.mean(changes)) if changes else None,
            "pixels_to_change": changes}


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def choose_alpha(scores: dict[float, float | None], tolerance: float = ALPHA_TOLERANCE) -> float:
    """The smallest α whose score is within ``tolerance`` of the best (None scores never win)."""
    known = {a: s for a, s in scores.items() if s is not None}
    if not known:
        return max(scores)  # nothing measurable on the held-out images: trust the fine-tune
    best = max(known.values())
    return min(a for a, s in known.items() if s >= best - tolerance)
