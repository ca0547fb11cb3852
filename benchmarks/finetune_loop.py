"""The correction loop on the shapes world: pre-label → a simulated annotator corrects → fine-tune.

    python benchmarks/finetune_loop.py [--quick] [--points 10 20 40] [--out benchmarks/results/finetune_loop.json]

A project of 256 px shapes-world images in a **new appearance** (saturated, high-contrast backgrounds
— stripes, dots, rings — that the bundled models never saw; theirs are muted and low-contrast) with
classes ``background`` + ``PROJECT_SHAPES``: six shapes ``shapes-chimera`` was trained on and two it
never saw masks of (star, heart). A simulated annotator takes the images in order, pre-labels each
with the project's current model, corrects it to the ground truth through the app's own document
API (paint what is wrong, accept the rest: every pixel becomes a person's) and counts the pixels it
changed. After 10, 20 and 40 corrected images it runs ``chimera-train finetune`` (from
``shapes-chimera`` on every verified image so far, α chosen by the fine-tune) and makes the result
the project's model. Each model — the base and each version — is measured on the same images:

- pixels to correct per image: on the project images no one corrected (the last ``--measure``);
- mIoU on the project's classes (background included) on those images;
- mIoU on ``HELD_OUT_SHAPES``, shapes never in the project and never corrected, in images of the
  same appearance, scored over background + all 12 shape names;
- the same two groups under the bundled model's zero-shot protocol (background pixels ignored,
  the 12 shape names only), so background learning cannot flatter the held-out numbers.

Prints JSON, then a markdown table; ``--out`` also writes both (``.json`` and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chimera_app.project import Project, Region  # noqa: E402
from chimera_engine.devices import choose  # noqa: E402
from chimera_engine.models import build_model  # noqa: E402
from chimera_engine.segmenter import Segmenter  # noqa: E402
from chimera_trainer.finetune import FinetuneOptions, finetune  # noqa: E402
from chimera_trainer.metrics import ConfusionMatrix  # noqa: E402
from chimera_trainer.shapes import SHAPE_CLASSES  # noqa: E402
from chimera_trainer.shapes.world import render_sample  # noqa: E402

BASE = "shapes-chimera"
PROJECT_SHAPES = ["circle", "square", "triangle", "ring", "cross", "diamond", "star", "heart"]
NEVER_SAW_MASKS = ["star", "heart"]  # unseen in shapes-chimera's training
HELD_OUT_SHAPES = ["crescent", "pentagon", "arrow", "hexagon"]  # never in the project
PROJECT_CLASSES = ["background", *PROJECT_SHAPES]
ALL_CLASSES = ["background", *SHAPE_CLASSES]
PROJECT_SEED, HELD_OUT_SEED = 4242, 4343


# -- the project's world: shapes-world scenes on a new kind of background -------------------------
def bold_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A saturated base colour with a high-contrast pattern (stripes, dots or rings): unlike the
    muted, low-contrast textures of the shapes world."""
    hue, sat, val = rng.uniform(0, 180), rng.uniform(150, 230), rng.uniform(120, 220)
    base = cv2.cvtColor(np.uint8([[[hue, sat, val]]]), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.choice(["stripes", "dots", "rings"])
    if kind == "stripes":
        theta = rng.uniform(0, math.pi)
        along = xx * math.cos(theta) + yy * math.sin(theta)
        pattern = np.sign(np.sin(2 * math.pi * along / rng.uniform(0.08, 0.2)))
    elif kind == "dots":
        cell = rng.uniform(0.06, 0.14)
        dy, dx = (yy / cell) % 1 - 0.5, (xx / cell) % 1 - 0.5
        pattern = np.where(dx ** 2 + dy ** 2 < 0.09, 1.0, -1.0)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        pattern = np.sign(np.sin(2 * math.pi * np.hypot(xx - cx, yy - cy) / rng.uniform(0.08, 0.2)))
    image = base + pattern[..., None] * rng.uniform(35, 60)
    return np.clip(image, 0, 255).astype(np.float32)


def scene(seed: int, index: int, size: int, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, ground truth: 0 background, k = 1 + SHAPE_CLASSES index) on a bold background."""
    rng = np.random.default_rng([seed, index])
    s = render_sample(rng, size, classes=classes, min_objects=2, max_objects=4, noise=2.0, blur=0.0)
    coverage = np.zeros((size, size), np.float32)
    for shape in s.shapes:
        coverage = np.maximum(coverage, shape.alpha(size))
    a = coverage[..., None]
    image = s.image.astype(np.float32) * a + bold_background(rng, size) * (1 - a)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), s.labels


def to_index(gt: np.ndarray, classes: list[str]) -> np.ndarray:
    """Ground truth → index into ``classes`` (``background`` first); 255 for shapes not listed."""
    lut = np.full(256, 255, np.uint8)
    lut[0] = classes.index("background")
    for k, name in enumerate(SHAPE_CLASSES, start=1):
        if name in classes:
            lut[k] = classes.index(name)
    return lut[gt]


def shape_target(gt: np.ndarray) -> np.ndarray:
    """The bundled model's zero-shot protocol: index into SHAPE_CLASSES, background ignored (255)."""
    return np.where(gt == 0, 255, gt.astype(np.int64) - 1)


# -- measuring a model ---------------------------------------------------------------------------
def measure(model_name: str, project_eval, held_out_eval) -> dict:
    model = build_model(model_name)
    seg = Segmenter(model, choose("cpu", "fp32"), batch_size=8, cache_images=1)
    project_cm, changes = ConfusionMatrix(len(PROJECT_CLASSES)), []
    held_view, zs_project, zs_held = (ConfusionMatrix(len(ALL_CLASSES)), ConfusionMatrix(len(SHAPE_CLASSES)),
                                      ConfusionMatrix(len(SHAPE_CLASSES)))
    for image, gt in project_eval:
        features = seg.encode([image])[0]
        labels = seg.segment(PROJECT_CLASSES, features=features, min_confidence=0.0).labels
        target = to_index(gt, PROJECT_CLASSES)
        project_cm.update(labels, target)
        changes.append(int(np.count_nonzero(labels != target)))
        shapes = seg.segment(list(SHAPE_CLASSES), features=features, min_confidence=0.0).labels
        zs_project.update(shapes, shape_target(gt))
    for image, gt in held_out_eval:
        features = seg.encode([image])[0]
        held_view.update(seg.segment(ALL_CLASSES, features=features, min_confidence=0.0).labels, to_index(gt, ALL_CLASSES))
        shapes = seg.segment(list(SHAPE_CLASSES), features=features, min_confidence=0.0).labels
        zs_held.update(shapes, shape_target(gt))
    project = project_cm.summary(PROJECT_CLASSES, [])
    held = held_view.summary(ALL_CLASSES, HELD_OUT_SHAPES)
    zs_p, zs_h = zs_project.summary(list(SHAPE_CLASSES), []), zs_held.summary(list(SHAPE_CLASSES), HELD_OUT_SHAPES)

    def mean(summary, names):
        values = [summary["per_class_iou"][n] for n in names if summary["per_class_iou"][n] is not None]
        return round(100 * float(np.mean(values)), 2) if values else None

    return {
        "pixels_to_correct_per_image": round(float(np.mean(changes)), 1),
        "miou_project_classes": round(100 * project["mIoU"], 2),
        "miou_project_shapes": mean(project, PROJECT_SHAPES),
        "miou_never_saw_masks": mean(project, NEVER_SAW_MASKS),
        "iou_project_classes": {k: None if v is None else round(100 * v, 1) for k, v in project["per_class_iou"].items()},
        "miou_held_out_classes": mean(held, HELD_OUT_SHAPES),
        "iou_held_out_classes": {n: None if held["per_class_iou"][n] is None else round(100 * held["per_class_iou"][n], 1)
                                 for n in HELD_OUT_SHAPES},
        "zero_shot_protocol": {"miou_project_shapes": mean(zs_p, PROJECT_SHAPES),
                               "miou_held_out_classes": mean(zs_h, HELD_OUT_SHAPES)},
    }


# -- the annotator -------------------------------------------------------------------------------
def correct(project: Project, rel: str, gt: np.ndarray, ids: dict[str, int], segmenter: Segmenter,
            image: np.ndarray) -> int:
    """Pre-label ``rel`` with ``segmenter``, correct it to ``gt`` like a person (paint the wrong
    pixels, accept the rest); returns the pixels changed."""
    labels = segmenter.segment(PROJECT_CLASSES, features=segmenter.encode([image])[0], min_confidence=0.0).labels
    id_of = np.array([ids[c] for c in PROJECT_CLASSES], np.uint16)
    target = to_index(gt, PROJECT_CLASSES)
    doc = project.load_document(rel)
    doc.set_prediction(id_of[labels], np.ones(labels.shape, np.float32))
    wrong = labels != target
    for index, name in enumerate(PROJECT_CLASSES):
        mask = wrong & (target == index)
        if mask.any():
            doc.paint(Region.full(mask), ids[name])
    doc.accept_prediction()  # everything left is right: the person accepts it (and verifies the image)
    project.save_document(rel, doc)
    return int(np.count_nonzero(wrong))


def run(args) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="chimera-finetune-loop-"))
    root = work / "project"
    root.mkdir(parents=True, exist_ok=True)
    total = max(args.points) + args.measure
    scenes = [scene(PROJECT_SEED, i, args.size, PROJECT_SHAPES) for i in range(total)]
    for i, (image, _) in enumerate(scenes):
        Image.fromarray(image).save(root / f"img{i:03d}.png")
    held_out_eval = [scene(HELD_OUT_SEED, i, args.size, HELD_OUT_SHAPES + PROJECT_SHAPES) for i in range(args.measure)]
    project_eval = scenes[max(args.points):]
    with Project.open(root) as project:
        ids = {name: project.classes.add(name).id for name in PROJECT_CLASSES}
        project.model = BASE
        project.save_meta()

    rows = [{"corrected_images": 0, "model": BASE, **measure(BASE, project_eval, held_out_eval)}]
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    current, annotated, changed = BASE, 0, []
    for point in sorted(args.points):
        segmenter = Segmenter(build_model(current), choose("cpu", "fp32"), batch_size=8, cache_images=1)
        with Project.open(root) as project:
            for i in range(annotated, point):
                changed.append(correct(project, f"img{i:03d}.png", scenes[i][1], ids, segmenter, scenes[i][0]))
        annotated = point
        started = time.perf_counter()
        result = finetune(FinetuneOptions(project=root, base=BASE, device="cpu", progress="none", activate=True,
                                          iterations=args.iterations, seed=args.seed))
        seconds = time.perf_counter() - started
        current = result["checkpoint"]
        row = {"corrected_images": point, "model": result["version"], "alpha": result["alpha"],
               "alpha_grid": result["alpha_grid"], "finetune_seconds": round(seconds, 1),
               "train_seconds": result["train_seconds"], "iterations": result["iterations"],
               "train_images": result["train_images"], "held_out_images": len(result["held_out_images"]),
               "annotator_pixels_changed_per_image_so_far": round(float(np.mean(changed)), 1),
               **measure(current, project_eval, held_out_eval)}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "alpha_grid"}), file=sys.stderr, flush=True)
    return {"benchmark": "finetune_loop", "base": BASE, "size": args.size, "project_classes": PROJECT_CLASSES,
            "never_saw_masks": NEVER_SAW_MASKS, "held_out_classes": HELD_OUT_SHAPES,
            "measured_on": {"project_images": len(project_eval), "held_out_class_images": len(held_out_eval)},
            "targets": _targets(rows), "rows": rows, "environment": _environment(), "work": str(work)}


def _targets(rows: list[dict]) -> dict:
    base = rows[0]
    at20 = next((r for r in rows if r["corrected_images"] == 20), None)
    out = {}
    if at20:
        halved = 0.5 * base["pixels_to_correct_per_image"]
        out["pixels_to_correct_halved_after_20"] = at20["pixels_to_correct_per_image"] <= halved
        out["finetune_20_images_within_5_min"] = at20["finetune_seconds"] <= 300
    worst = min(r["miou_held_out_classes"] for r in rows[1:]) if len(rows) > 1 else None
    worst_zs = min(r["zero_shot_protocol"]["miou_held_out_classes"] for r in rows[1:]) if len(rows) > 1 else None
    if worst is not None:
        out["held_out_within_2_points"] = worst >= base["miou_held_out_classes"] - 2
        base_zs = base["zero_shot_protocol"]["miou_held_out_classes"]
        out["held_out_within_2_points_zero_shot_protocol"] = worst_zs >= base_zs - 2
    return out


def _environment() -> dict:
    import open_clip

    return {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def markdown(report: dict) -> str:
    lines = ["| corrected images | model | α | pixels to correct / image | mIoU project classes | mIoU star, heart | "
             "mIoU held-out classes | held-out (zero-shot protocol) | fine-tune time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['corrected_images']} | {r['model']} | {r.get('alpha', '-')} | "
                     f"{r['pixels_to_correct_per_image']:.0f} | {r['miou_project_classes']:.1f} | "
                     f"{r['miou_never_saw_masks']} | {r['miou_held_out_classes']} | "
                     f"{r['zero_shot_protocol']['miou_held_out_classes']} | "
                     f"{str(r['finetune_seconds']) + ' s' if 'finetune_seconds' in r else '-'} |")
    env = report["environment"]
    lines.append("")
    lines.append(f"{report['size']} px images; measured on {report['measured_on']['project_images']} uncorrected project "
                 f"images and {report['measured_on']['held_out_class_images']} images of held-out shapes; "
                 f"torch {env['torch']}, {env['cores']} CPU cores. Targets: "
                 + ", ".join(f"{k} = {v}" for k, v in report["targets"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--measure", type=int, default=60, help="uncorrected images measured (and held-out images)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, help="fine-tune steps (default: the fine-tune's own rule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="where the project is written (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the JSON here and the markdown beside it (.md)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 and 8 images, 8 measured, 20 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.measure, args.iterations = [4, 8], 8, args.iterations or 20
    report = run(args)
    print(json.dumps(report, indent=1))
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(markdown(report) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
