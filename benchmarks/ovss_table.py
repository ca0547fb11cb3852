"""Reproduce the training-free open-vocabulary segmentation table (mIoU, ViT-B/16) with your CLIP weights.

    python benchmarks/ovss_table.py --data-root DATA --clip ViT-B-16/openai \\
        [--methods naclip sclip clearclip maskclip] [--pamr] [--sets voc21 context60 ...] [--limit N]

DATA holds the sets in their mmseg layouts (any subset; missing ones are reported and skipped unless
named with --sets): ``VOCdevkit/VOC2012``, ``VOCdevkit/VOC2010`` (Context), ``coco_stuff164k``
(COCO-Stuff and COCO-Object), ``cityscapes``, ``ADEChallengeData2016`` — see ``chimera_trainer.data.ovss``.
Each method runs with its authors' windows, short side, temperature and the 80 ImageNet templates;
the sets with a background (VOC21, Context60, COCO-Object) use the papers' background prompts and
probability threshold 0.1. mIoU comes from one confusion matrix per set (``chimera_trainer.metrics``).
Prints JSON (stdout) and a markdown table beside the published numbers (stderr, and ``--markdown``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chimera_engine import ChimeraError, load_segmenter  # noqa: E402
from chimera_engine.background import background_prompts  # noqa: E402
from chimera_engine.model_names import METHODS  # noqa: E402
from chimera_trainer.data import ovss  # noqa: E402
from chimera_trainer.metrics import ConfusionMatrix  # noqa: E402


def log(message: str) -> None:
    print(f"[ovss_table] {message}", file=sys.stderr, flush=True)


def evaluate_set(segmenter, name: str, root: Path, limit: int | None, refine: int) -> dict:
    bench = ovss.BENCHMARKS[name]
    data = ovss.dataset(name, root)
    info, classes = data.info, bench.classes()
    background = background_prompts(bench.background, classes) if bench.background else []
    matrix = ConfusionMatrix(info.num_classes)
    count = len(data) if limit is None else min(limit, len(data))
    start = time.perf_counter()
    for index in range(count):
        sample = data[index]
        segmenter.set_image(sample["image"])
        out = segmenter.segment(classes, background=background, min_confidence=bench.prob_threshold,
                                refine=refine)
        matrix.update(ovss.prediction_ids(out.labels, bench), np.asarray(sample["label"]))
    summary = matrix.summary(list(info.classes), [])
    return {"miou": round(100 * summary["mIoU"], 2), "pixel_accuracy": round(100 * summary["pixel_accuracy"], 2),
            "per_class_iou": summary["per_class_iou"], "images": count,
            "seconds": round(time.perf_counter() - start, 1)}


def markdown(results: dict, sets: list[str]) -> str:
    head = "| method | " + " | ".join(sets) + " | mean |\n|---|" + "---|" * (len(sets) + 1) + "\n"
    rows = []
    for method, by_set in results.items():
        ours = [by_set.get(s, {}).get("miou") for s in sets]
        published = ovss.PUBLISHED.get(method, {})
        cells = [f"{v:.1f}" if v is not None else "–" for v in ours]
        measured = [v for v in ours if v is not None]
        rows.append(f"| {method} (ours) | " + " | ".join(cells) + f" | {np.mean(measured):.1f} |" if measured
                    else f"| {method} (ours) | " + " | ".join(cells) + " | – |")
        if published:
            pub = [published.get(s) for s in sets]
            rows.append(f"| {method} (published) | " + " | ".join(f"{v:.1f}" for v in pub)
                        + f" | {np.mean(pub):.1f} |")
    return head + "\n".join(rows) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--clip", default="ViT-B-16/openai", help="<arch>/<tag or weights file> (open_clip)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--pamr", action="store_true", help="also run each method with PAMR (10 steps, dilations 8, 16)")
    p.add_argument("--sets", nargs="+", default=None, choices=list(ovss.BENCHMARKS))
    p.add_argument("--limit", type=int, default=None, help="images per set (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    sets = args.sets or list(ovss.BENCHMARKS)
    results: dict[str, dict] = {}
    for method in args.methods:
        try:
            segmenter = load_segmenter(f"clip:{args.clip}+{method}", args.device, args.precision)
        except ChimeraError as exc:
            log(f"cannot load clip:{args.clip}+{method}: {exc}")
            return 1
        for refine in ([0, 10] if args.pamr else [0]):
            label = method + ("+pamr" if refine else "")
            results[label] = {}
            for name in sets:
                try:
                    results[label][name] = evaluate_set(segmenter, name, args.data_root, args.limit, refine)
                except ChimeraError as exc:
                    if args.sets:
                        log(f"{name}: {exc}")
                        return 1
                    log(f"{name}: skipped ({str(exc).splitlines()[0]})")
                    continue
                log(f"{label} {name}: mIoU {results[label][name]['miou']} ({results[label][name]['images']} images)")
    table = markdown(results, sets)
    print(table, file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    print(json.dumps({"clip": args.clip, "results": results, "published": ovss.PUBLISHED}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
