"""Score ``shapes-chimera`` candidates the way the app shows them, side by side.

    python benchmarks/shapes_candidates.py shapes-chimera path/to/candidate.safetensors \
        [--labels shipped candidate] [--out benchmarks/results/NAME.json]

For each model (a name or a checkpoint path): the app's rule (``chimera_trainer.shapes.app_rule``:
the 12 shape names typed, the model's background prompt competing, unlabeled counted as background)
on the bundled-model tests' held-out seed 424242 (200 images) with the model's PAMR default and without
PAMR, on a second seed no training, validation or choice used (2718, 300 images), and on the demo
images ``chimera-app --demo`` opens (shape by shape), and on 200 images drawn like them (the demo's
seed and size: the demo's 8 images and 192 more, to tell a changed model from the demo's 22 shapes'
luck). Prints one JSON object with the machine and library versions; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_latency import machine_facts  # noqa: E402
from chimera_engine import load_segmenter  # noqa: E402
from chimera_engine.atomic import atomic_write_json  # noqa: E402
from chimera_trainer.bundle import DEMO_IMAGES, DEMO_SEED, DEMO_SIZE  # noqa: E402
from chimera_trainer.shapes.app_rule import demo_scores, held_out_scores  # noqa: E402

SEEDS = {"424242": 200, "2718": 300}  # the tests' held-out seed; one no choice was ever made on
DEMO_WORLD_IMAGES = 200


def _brief(summary: dict) -> dict:
    return {"hIoU": round(summary["hIoU"], 3), "seen_shapes": round(summary["mIoU_seen_shapes"], 3),
            "unseen": round(summary["mIoU_unseen"], 3),
            "background_kept": round(summary["per_class_recall"]["background"], 3),
            "per_class_iou": {k: None if v is None else round(v, 3) for k, v in summary["per_class_iou"].items()}}


def _demo_world(segmenter, images: int) -> dict:
    demo = demo_scores(segmenter, DEMO_SEED, images, DEMO_SIZE)
    shapes, right = Counter(), Counter()
    for _, truth, label in demo["per_shape"]:
        shapes[truth] += 1
        right[truth] += truth == label
    return {"images": images, "shape_pixels_right": round(demo["shape_pixels_right"], 3),
            "background_kept": round(demo["background_kept"], 3),
            "shapes_right_by_majority": demo["shapes_right_by_majority"], "shapes": demo["shapes"],
            "right_by_class": {name: [right[name], shapes[name]] for name in sorted(shapes)}}


def score(model: str, seeds: dict[str, int], demo_world_images: int) -> dict:
    seg = load_segmenter(model, device="cpu", precision="fp32")
    out = {f"{seed}_pamr": _brief(held_out_scores(seg, int(seed), n)) for seed, n in seeds.items()}
    out["424242_plain"] = _brief(held_out_scores(seg, 424242, seeds["424242"], refine=0))
    demo = demo_scores(seg, DEMO_SEED, DEMO_IMAGES, DEMO_SIZE)
    out["demo"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in demo.items()}
    out["demo_world"] = _demo_world(seg, demo_world_images)
    out["file_bytes"] = Path(model).stat().st_size if Path(model).is_file() else None
    info = seg.model.info
    out["val_zero_shot_protocol"] = info.get("evaluation")
    out["training"] = info.get("training")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model names or checkpoint paths")
    p.add_argument("--labels", nargs="*", default=None, help="a label per model (default: the names)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--images", type=int, default=None, help="at most this many images per seed (a smoke test)")
    args = p.parse_args(argv)
    labels = args.labels or args.models
    if len(labels) != len(args.models):
        p.error("give one label per model")
    seeds = {seed: min(n, args.images or n) for seed, n in SEEDS.items()}
    demo_world = min(DEMO_WORLD_IMAGES, args.images or DEMO_WORLD_IMAGES)
    report = {"machine": machine_facts(), "held_out_images": seeds,
              "candidates": {label: {"model": model, **score(model, seeds, demo_world)}
                             for label, model in zip(labels, args.models)}}
    if args.out:
        atomic_write_json(args.out, report)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
