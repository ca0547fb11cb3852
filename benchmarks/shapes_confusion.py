"""Where each shape's pixels go: the confusions behind a ``shapes-chimera`` candidate's per-class IoU.

    python benchmarks/shapes_confusion.py shapes-chimera shapes-clip [--seed 424242] [--images 200]
        [--out benchmarks/results/NAME.json]

For each model (a name or a checkpoint path), labelled by the app's rule on the held-out seed
(``app_rule.held_out_confusion``: the 12 shape names typed, the model's background prompt and PAMR
default): for every true class, the share of its pixels given each of the ``--top`` most frequent
labels (its row of the confusion matrix, "background" = unlabeled); the pixels labelled as each
class over all images; and the cosine similarities of the class names' text embeddings as the
model's segmenter encodes them (its CLIP text tower and templates). Prints one JSON object with the
machine and library versions; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.engine_latency import machine_facts, publish  # noqa: E402
from chimera_engine import load_segmenter  # noqa: E402
from chimera_trainer.shapes.app_rule import CLASSES, held_out_confusion  # noqa: E402
from chimera_trainer.shapes.world import BACKGROUND, SHAPE_CLASSES, SPLIT  # noqa: E402


def confusions(model: str, seed: int, images: int, top: int) -> dict:
    seg = load_segmenter(model, device="cpu", precision="fp32")
    matrix = held_out_confusion(seg, seed, images).matrix
    rows = {}
    for k, name in enumerate(CLASSES):
        total = matrix[k].sum()
        if total:
            rows[name] = {CLASSES[j]: round(float(matrix[k, j] / total), 3)
                          for j in np.argsort(-matrix[k], kind="stable")[:top] if matrix[k, j]}
    with torch.no_grad():
        text = torch.nn.functional.normalize(seg.text.encode([*SHAPE_CLASSES, BACKGROUND]).float(), dim=-1)
    names = [*SHAPE_CLASSES, BACKGROUND]
    cosine = (text @ text.t()).numpy()
    return {"where_pixels_go": rows,
            "pixels_labelled": {name: int(matrix[:, j].sum()) for j, name in enumerate(CLASSES)},
            "text_cosine": {a: {b: round(float(cosine[i, j]), 3) for j, b in enumerate(names) if j != i}
                            for i, a in enumerate(names)}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model names or checkpoint paths")
    p.add_argument("--seed", type=int, default=424242)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--top", type=int, default=4, help="labels listed per true class")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    report = {"machine": machine_facts(), "seed": args.seed, "images": args.images, "unseen": list(SPLIT["unseen"]),
              "models": {m: confusions(m, args.seed, args.images, args.top) for m in args.models}}
    return publish(report, args.out)


if __name__ == "__main__":
    main()
