"""Zero-shot segmentation metrics from one confusion matrix over the whole validation set.

mIoU(S) = mean IoU over seen classes, mIoU(U) = over unseen classes, hIoU = 2·S·U / (S + U), and
pixel accuracy; ignored pixels (255) never count (PAPER.md §1).
"""

from __future__ import annotations

import numpy as np

IGNORE = 255


class ConfusionMatrix:
    """``matrix[gt, pred]`` pixel counts over ``num_classes`` classes."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)
        self.unlabeled = np.zeros(num_classes, np.int64)  # ground-truth pixels predicted "unlabeled"

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """``prediction`` (class ids; negative = unlabeled, counted as wrong) and ``target`` (255 ignored)."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
        target = target.astype(np.int64).ravel()
        prediction = prediction.astype(np.int64).ravel()
        keep = target != IGNORE
        if bool(((target[keep] < 0) | (target[keep] >= self.num_classes)).any()):
            raise ValueError("target holds class ids outside 0..num_classes-1 (and not 255)")
        target, prediction = target[keep], prediction[keep]
        labeled = (prediction >= 0) & (prediction < self.num_classes)
        n = self.num_classes
        self.matrix += np.bincount(target[labeled] * n + prediction[labeled], minlength=n * n).reshape(n, n)
        # Unlabeled predictions are misses: they count in the ground-truth class's total only.
        self.unlabeled += np.bincount(target[~labeled], minlength=n)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        gt = self.matrix.sum(1) + self.unlabeled
        pred = self.matrix.sum(0)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def summary(self, class_names: list[str], unseen: list[str]) -> dict:
        iou = self.iou()
        tp, gt = np.diag(self.matrix).astype(np.float64), self.matrix.sum(1) + self.unlabeled
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(gt > 0, tp / gt, np.nan)  # share of a class's pixels labelled as it
        unseen_set = set(unseen)
        seen_ids = [i for i, c in enumerate(class_names) if c not in unseen_set]
        unseen_ids = [i for i, c in enumerate(class_names) if c in unseen_set]

        def mean(ids):
            values = iou[ids]
            values = values[~np.isnan(values)]
            return float(values.mean()) if values.size else float("nan")

        s, u = mean(seen_ids), mean(unseen_ids)
        h = 2 * s * u / (s + u) if s + u > 0 else 0.0
        total = self.matrix.sum() + self.unlabeled.sum()
        return {
            "mIoU_seen": s, "mIoU_unseen": u, "hIoU": h,
            "mIoU": mean(list(range(len(class_names)))),
            "pixel_accuracy": float(np.trace(self.matrix) / total) if total else float("nan"),
            "per_class_iou": {c: (None if np.isnan(v) else float(v)) for c, v in zip(class_names, iou)},
            "per_class_recall": {c: (None if np.isnan(v) else float(v)) for c, v in zip(class_names, recall)},
            "pixels": int(total),
        }


def format_table(summary: dict, unseen: list[str]) -> str:
    """A plain-text table of per-class IoU and the headline numbers."""
    lines = [f"{'class':<24}{'split':<8}{'IoU':>8}"]
    for name, value in summary["per_class_iou"].items():
        split = "unseen" if name in unseen else "seen"
        lines.append(f"{name:<24}{split:<8}{'-' if value is None else f'{100 * value:.1f}':>8}")
    lines.append("")
    lines.append(f"mIoU(S) {100 * summary['mIoU_seen']:.1f}   mIoU(U) {100 * summary['mIoU_unseen']:.1f}   "
                 f"hIoU {100 * summary['hIoU']:.1f}   pixel acc {100 * summary['pixel_accuracy']:.1f}")
    return "\n".join(lines)
