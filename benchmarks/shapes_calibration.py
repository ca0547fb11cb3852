"""Does calibration (PAPER.md §5: γ subtracted from the seen classes' probabilities) help the bundled
``shapes-chimera`` find unseen shapes?

    python benchmarks/shapes_calibration.py [--model shapes-chimera] [--images 60] [--pamr]

Scores the app's way (``Segmenter.segment`` over the twelve shape names, the model's background prompt
competing, unlabeled counted as background), without PAMR unless ``--pamr`` (then with the model's
own PAMR default, as the app pre-labels; γ applies to the refined scores), for each γ of a grid, on
two seeds no training or validation set uses: 31337 (where a γ would be chosen) and 424242 (the bundled-model tests'
held-out seed, where it would be reported). Each image is encoded once and scored at every γ.
Prints one JSON object: per seed and γ, hIoU, mIoU over the seen shapes, mIoU(U) and the share of
background left unlabeled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402

from chimera_engine import load_segmenter  # noqa: E402
from chimera_trainer.metrics import ConfusionMatrix  # noqa: E402
from chimera_trainer.shapes import BACKGROUND, SHAPE_CLASSES, SPLIT, sample  # noqa: E402

GAMMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
SEEDS = {"choose": 31337, "held_out": 424242}
CLASSES = [BACKGROUND, *SHAPE_CLASSES]  # label 0 = background = unlabeled in the app


def sweep(segmenter, seed: int, images: int, gammas=GAMMAS, refine: int | None = 0) -> dict:
    """``refine``: PAMR steps, 0 none, None the model's default."""
    matrices = {g: ConfusionMatrix(len(CLASSES)) for g in gammas}
    for i in range(images):
        s = sample(seed, i, 64)
        segmenter.set_image(s.image)
        for g in gammas:
            out = segmenter.segment(list(SHAPE_CLASSES), min_confidence=0.0, calibration=g, refine=refine)
            matrices[g].update(out.labels + 1, s.labels)
    table = {}
    for g, matrix in matrices.items():
        r = matrix.summary(CLASSES, list(SPLIT["unseen"]))
        seen = [r["per_class_iou"][c] for c in SPLIT["seen"] if r["per_class_iou"][c] is not None]  # None: absent
        table[str(g)] = {"hIoU": round(r["hIoU"], 3), "seen_shapes": round(float(np.mean(seen)), 3),
                         "unseen": round(r["mIoU_unseen"], 3),
                         "background_kept": round(r["per_class_recall"][BACKGROUND], 3)}
    return table


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes-chimera")
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--pamr", action="store_true", help="score with the model's PAMR default (the app's rule)")
    args = p.parse_args(argv)
    refine = None if args.pamr else 0
    segmenter = load_segmenter(args.model, device="cpu", precision="fp32")
    report = {"model": args.model, "images": args.images, "pamr": args.pamr, "torch": torch.__version__,
              "open_clip": open_clip.__version__,
              **{name: {"seed": seed, "by_gamma": sweep(segmenter, seed, args.images, refine=refine)}
                 for name, seed in SEEDS.items()}}
    chosen = max(report["choose"]["by_gamma"], key=lambda g: report["choose"]["by_gamma"][g]["hIoU"])
    report["chosen_gamma"] = float(chosen)
    report["held_out_at_chosen"] = report["held_out"]["by_gamma"][chosen]
    report["held_out_at_zero"] = report["held_out"]["by_gamma"]["0.0"]
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
