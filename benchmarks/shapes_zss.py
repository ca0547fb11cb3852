"""The paper's table in miniature: zero-shot segmentation on the shapes world, with ablations.

    python benchmarks/shapes_zss.py            # 3 seeds, the full schedule (CPU: ~30 min)
    python benchmarks/shapes_zss.py --quick    # 1 seed, a short schedule (smoke test, ~3 min)

Rows: training-free dense CLIP (the bundled shapes CLIP), body + linear projection (no CSH, no SGD,
no SAM), full Chimera-Seg, full − SGD, SGD without shrinking, full − SAM, CSH depth N ∈ {1, 2, 4}.
Every trained row sees masks of the *seen* shapes only (split.json); evaluation is over all shapes on
images drawn with a seed never used in training, ignoring unlabeled ground truth (the VOC protocol).
Prints one JSON object (per-seed numbers, mean ± std) and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chimera_engine.clip_loading import ClipSpec, bundled_model_path  # noqa: E402
from chimera_engine.models import dense_clip_model  # noqa: E402
from chimera_trainer.bundle import SIZE, evaluate_model, shapes_inference, shapes_train_config  # noqa: E402
from chimera_trainer.data.datasets import build_dataset, load_info  # noqa: E402
from chimera_trainer.shapes import write_dataset  # noqa: E402
from chimera_trainer.zss import train  # noqa: E402

ROWS = {
    "dense CLIP (training-free)": None,
    "body + linear (no CSH/SGD/SAM)": {"head": "linear", "sgd_weight": 0.0, "sam_weight": 0.0},
    "Chimera-Seg (full)": {},
    "full − SGD": {"sgd_weight": 0.0},
    "full, SGD ratio fixed at 1.0": {"sgd_ratio_end": 1.0},
    "full − SAM": {"sam_weight": 0.0},
    "CSH depth N=1": {"csh_depth": 1},
    "CSH depth N=4": {"csh_depth": 4},
}
TRAIN_SEED_OFFSET = 100  # the benchmark's data seeds are never the bundled model's (0 and 1)


def run_row(name, overrides, data_root: Path, clip: str, seed: int, iterations: int, work: Path) -> dict:
    if overrides is None:
        model = dense_clip_model(ClipSpec.parse(clip))
        model.templates, model.inference = "single", shapes_inference()
        return evaluate_model(model, data_root)
    cfg = shapes_train_config(data_root, clip, iterations=iterations, seed=seed, workers=1, **overrides)
    torch.manual_seed(seed)
    info = load_info("shapes", data_root / "train")
    model = train(cfg, str(work / f"run-{seed}"), build_dataset("shapes", data_root / "train", "train"),
                  info, device="cpu", fresh=True, show_progress=False)
    return evaluate_model(model, data_root)


def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU"):
        values = np.array([r[key] for r in per_seed]) * 100
        out[key] = {"mean": round(float(values.mean()), 1), "std": round(float(values.std()), 1),
                    "runs": [round(float(v), 1) for v in values]}
    return out


def markdown(rows: dict) -> str:
    lines = ["| model | mIoU(S) | mIoU(U) | hIoU |", "|---|---|---|---|"]
    for name, r in rows.items():
        cells = [f"{r[k]['mean']:.1f} ± {r[k]['std']:.1f}" for k in ("mIoU_seen", "mIoU_unseen", "hIoU")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, short schedule, small data")
    p.add_argument("--seeds", type=int, nargs="*", default=None)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--clip", default=None, help="CLIP spec (default: the bundled shapes CLIP)")
    p.add_argument("--rows", nargs="*", default=None, help="subset of row names")
    p.add_argument("--train-images", type=int, default=None, help="training images (default 2000, quick 400)")
    p.add_argument("--val-images", type=int, default=None, help="evaluation images (default 200, quick 60)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.rows or ()) - set(ROWS))
    if unknown:
        p.error(f"unknown rows {unknown}; rows are {list(ROWS)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    iterations = args.iterations or (150 if args.quick else 600)
    clip = args.clip or f"shapes-tiny/{bundled_model_path('shapes-clip')}"
    rows = {k: v for k, v in ROWS.items() if not args.rows or k in args.rows}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "shapes"
        train_images = args.train_images or (400 if args.quick else 2000)
        write_dataset(data_root / "train", train_images, seed=TRAIN_SEED_OFFSET, size=SIZE)
        write_dataset(data_root / "val", args.val_images or (60 if args.quick else 200),
                      seed=TRAIN_SEED_OFFSET + 1, size=SIZE)
        results = {}
        for name, overrides in rows.items():
            runs = [run_row(name, overrides, data_root, clip, s, iterations, Path(tmp))
                    for s in (seeds if overrides is not None else seeds[:1])]
            results[name] = summarise(runs)
            print(f"{name}: {results[name]['hIoU']}", file=sys.stderr)
    report = {"seeds": seeds, "iterations": iterations, "clip": clip, "rows": results,
              "seconds": round(time.perf_counter() - started, 1),
              "best_hIoU_row": max(results, key=lambda k: results[k]["hIoU"]["mean"])}
    print(json.dumps(report, indent=1))
    print(markdown(results))
    return report


if __name__ == "__main__":
    main()
