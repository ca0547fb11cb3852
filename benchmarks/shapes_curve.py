"""The shapes recipe's learning curve: one run of the bundle's recipe, evaluated every ``--every`` iterations.

    python benchmarks/shapes_curve.py [--iterations 3000] [--every 500] [--work DIR] [--set KEY=VALUE ...]

Trains ``shapes-chimera``'s recipe (``DATASET_DEFAULTS["shapes"]``, the bundled shapes CLIP) on the
bundle's data (train seed 0, val seed 1, the bundle's image counts) in segments of ``--every``
iterations; training resumes between segments (exactly, as ``chimera-train zss`` does), so the
schedule is that of one ``--iterations`` run. After each segment the model is scored on val like the
bundle's evaluation (seen with background, seen shapes, unseen, hIoU, background kept). Prints one JSON
line per point, writes the curve to ``--out`` (default ``WORK/curve.json``) and leaves the final model
in ``WORK/model.safetensors``. The run in ``benchmarks/results/shapes_curve.json`` took 47 min on a
2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chimera_engine.atomic import atomic_write_json  # noqa: E402
from chimera_engine.clip_loading import bundled_model_path  # noqa: E402
from chimera_engine.models import save_model  # noqa: E402
from chimera_trainer.bundle import (SCHEDULES, SIZE, TRAIN_SEED, VAL_SEED, evaluate_model,  # noqa: E402
                                    shapes_train_config)
from chimera_trainer.config import TrainConfig, apply_overrides  # noqa: E402
from chimera_trainer.data.datasets import build_dataset, load_info  # noqa: E402
from chimera_trainer.shapes import write_dataset  # noqa: E402
from chimera_trainer.zss import train  # noqa: E402

METRICS = ("mIoU_seen", "mIoU_seen_shapes", "mIoU_unseen", "hIoU", "background_kept")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=None, help="the schedule (default: the shapes recipe's)")
    p.add_argument("--every", type=int, default=500, help="evaluate after this many iterations")
    p.add_argument("--work", type=Path, default=Path("build/shapes-curve"))
    p.add_argument("--out", type=Path, default=None, help="the curve's JSON (default: WORK/curve.json)")
    p.add_argument("--train-images", type=int, default=SCHEDULES["train_images"][0])
    p.add_argument("--val-images", type=int, default=SCHEDULES["val_images"][0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change the recipe")
    args = p.parse_args(argv)
    root = args.work / "shapes"
    if not (root / "val" / "split.json").is_file():
        write_dataset(root / "train", args.train_images, seed=TRAIN_SEED, size=SIZE)
        write_dataset(root / "val", args.val_images, seed=VAL_SEED, size=SIZE, twins=0)  # never trained on
    cfg = shapes_train_config(root, f"shapes-tiny/{bundled_model_path('shapes-clip')}", seed=TRAIN_SEED,
                              **({"iterations": args.iterations} if args.iterations else {}))
    cfg = TrainConfig.from_dict(apply_overrides(cfg.to_dict(), args.set))
    torch.manual_seed(TRAIN_SEED)
    info = load_info("shapes", root / "train")
    out = args.out or args.work / "curve.json"
    curve, started, done = [], time.perf_counter(), 0
    while done < cfg.iterations:
        model = train(cfg, str(args.work / "run"), build_dataset("shapes", root / "train", "train"), info,
                      device="cpu", fresh=done == 0, show_progress=False, stop_after=args.every)
        done = min(cfg.iterations, done + args.every)
        result = evaluate_model(model, root)
        curve.append({"iteration": done, "seconds": round(time.perf_counter() - started),
                      **{k: round(result[k] * 100, 1) for k in METRICS},
                      "per_class_iou": {c: None if v is None else round(v * 100, 1)
                                        for c, v in result["per_class_iou"].items()}})
        print(json.dumps(curve[-1]), flush=True)
        report = {"config": cfg.to_dict(), "torch": torch.__version__, "open_clip": open_clip.__version__,
                  "curve": curve}
        atomic_write_json(out, report)
    save_model(model, args.work / "model.safetensors", embed_clip=True, storage_dtype=torch.float16)
    return report


if __name__ == "__main__":
    main()
