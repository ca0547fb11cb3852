"""Zero-shot evaluation: sliding-window inference with the engine over seen ∪ unseen class names,
one confusion matrix over the whole validation set, mIoU(S), mIoU(U), hIoU, pixel accuracy.

The engine's segmenter averages window features and scores them, which equals averaging window logits
(see ``chimera_engine.tiling``), so evaluation runs exactly the inference users get.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chimera_engine.segmenter import Segmenter
from chimera_trainer.data.datasets import DatasetInfo
from chimera_trainer.metrics import ConfusionMatrix


def evaluate(segmenter: Segmenter, dataset, info: DatasetInfo, calibration: float = 0.0,
             images_per_batch: int = 4,
             on_progress: Callable[[int], None] = lambda n: None, refine: int = 0) -> dict:
    """Score every image of ``dataset`` in one process (under ``torchrun``, rank 0 evaluates alone).

    ``refine``: PAMR steps; 0 (the zero-shot protocol: no post-processing) whatever the model's own
    default, so numbers stay comparable across models and with the papers."""
    matrix = ConfusionMatrix(len(info.classes))
    for start in range(0, len(dataset), images_per_batch):
        samples = [dataset[i] for i in range(start, min(start + images_per_batch, len(dataset)))]
        encoded = segmenter.encode([s["image"] for s in samples])
        for sample, features in zip(samples, encoded):
            out = segmenter.segment(list(info.classes), background=(), features=features, calibration=calibration,
                                    min_confidence=0.0, refine=refine)
            matrix.update(out.labels, np.asarray(sample["label"]))
        on_progress(len(samples))
    result = matrix.summary(list(info.classes), list(info.unseen))
    result.update({"images": len(dataset), "calibration": calibration, "refine": refine, "model": segmenter.name})
    return result
