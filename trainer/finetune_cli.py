"""The ``finetune`` subcommand of ``chimera-train``: its options and what it prints.

Exit statuses follow ``chimera_trainer.cli``: 0 a new version was written, 1 the project cannot be
fine-tuned (too few verified images, a class without pixels, no model, a damaged file), 2 bad
arguments, 130 interrupted (the run was saved: the same command resumes it).

With ``--progress json`` a refusal (exit 1) is also one JSON line on stderr before the message, for
programs: ``{"event": "refused", "reason": "empty_classes", "classes": ["triangle"], "nowhere": [],
"all_classes": false, "held_out": ["img03.png"], "train_images": 3, "message": ...}`` (reasons:
``no_classes``, ``too_few_images`` with ``verified`` and ``needed``, ``empty_classes``, ``no_model``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chimera_engine.formats.model_versions import MIN_VERIFIED_IMAGES

DESCRIPTION = """\
Fine-tune the project's model on its human-verified images (only pixels a person decided or
accepted), keeping it open-vocabulary: CLIP's text tower and the CSH's CLIP tail stay frozen, SGD
and SAM stay on, and the result is a blend of base and fine-tuned weights whose factor α is chosen
on held-out verified images. Writes IMAGES_DIR/.chimera/models/vN.safetensors + vN.json and lists it
in models/index.json (the active version changes only with --activate). Running the same command
again resumes an interrupted fine-tune."""


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"the blend factor must lie in 0..1, got {value}")
    return value


def _share(text: str) -> float:
    value = _alpha(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"the held-out share must lie strictly between 0 and 1, got {value}")
    return value


def add_finetune_parser(sub, func, device_name, positive_int) -> argparse.ArgumentParser:
    """Register ``finetune`` on ``chimera-train``'s subparsers (``func`` runs it)."""
    f = sub.add_parser("finetune", help="fine-tune on a project's verified masks (versioned, open-vocabulary)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--project", required=True, type=Path, metavar="IMAGES_DIR", help="the project's image folder")
    f.add_argument("--project-dir", type=Path, help="the project's data folder, if not IMAGES_DIR/.chimera")
    f.add_argument("--base", help="model to start from (default: the project's model, else its active version): "
                                  "shapes-chimera, a checkpoint, clip:<arch>/<tag>, ...")
    f.add_argument("--iterations", type=positive_int, help="training steps (default: 20 per training image, "
                                                           "200..2000)")
    f.add_argument("--batch-size", type=positive_int, default=8)
    f.add_argument("--lr", type=float, help="learning rate (default: half the base's training rate)")
    f.add_argument("--crop-size", type=positive_int, help="training crop (default: the base's, else its window)")
    f.add_argument("--body", help="body preset of a new Chimera-Seg on a training-free CLIP (default: by device)")
    f.add_argument("--alpha", type=_alpha, help="force the blend factor (0 = base, 1 = fine-tuned) instead of "
                                                "choosing it on the held-out images")
    f.add_argument("--alpha-metric", default="decided_accuracy", choices=["decided_accuracy", "mIoU"],
                   help="held-out score α is chosen on: the share of person-decided pixels the pre-label gets "
                        "right (default), or mIoU over the project's classes")
    f.add_argument("--alpha-tolerance", type=_alpha, default=0.01,
                   help="take the smallest α whose held-out score is within this much of the best (default 0.01, "
                        "one point)")
    f.add_argument("--holdout", type=_share, default=0.2, help="share of verified images held out (at least one)")
    f.add_argument("--min-images", type=positive_int, default=MIN_VERIFIED_IMAGES,
                   help=f"refuse below this many verified images (default {MIN_VERIFIED_IMAGES})")
    f.add_argument("--skip-empty-classes", action="store_true",
                   help="leave classes without any verified pixel out of training instead of refusing")
    f.add_argument("--activate", action="store_true", help="make the new version the project's active model")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a training config key")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto", type=device_name, help="auto, cpu, cuda, cuda:N or mps")
    f.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="training autocast: auto = bf16 on GPUs, fp32 on CPUs")
    f.add_argument("--out", type=Path, help="work folder of the resumable run (default: <project data>/finetune-run)")
    f.add_argument("--fresh", action="store_true", help="start over even if an unfinished run exists")
    f.add_argument("--progress", default="bar", choices=["bar", "json", "none"],
                   help="progress on stderr: a bar with ETA, JSON lines (for the app), or nothing")
    f.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    f.set_defaults(func=func)
    return f


def run_finetune(args) -> int:
    from chimera_trainer.cli import EXIT_INTERRUPTED, _check_device_available
    from chimera_trainer.finetune import FinetuneDataError, FinetuneOptions, finetune

    _check_device_available(args.device)
    opts = FinetuneOptions(
        project=args.project, project_dir=args.project_dir, base=args.base, iterations=args.iterations,
        device=args.device, out=args.out, fresh=args.fresh, alpha=args.alpha, alpha_tolerance=args.alpha_tolerance,
        alpha_metric=args.alpha_metric,
        holdout=args.holdout, min_images=args.min_images, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
        crop_size=args.crop_size, body=args.body, precision=args.precision, activate=args.activate,
        skip_empty_classes=args.skip_empty_classes, overrides=args.set or [], progress=args.progress)
    try:
        result = finetune(opts)
    except FinetuneDataError as refusal:
        if args.progress == "json":  # for programs (the app): why, in fields, before the message
            record = {"event": "refused", "reason": refusal.reason, **refusal.details, "message": str(refusal)}
            print(json.dumps(record), file=sys.stderr, flush=True)
        raise
    if not result:  # another torchrun process: rank 0 reports
        return 0
    if "version" not in result:
        print(f"interrupted at step {result['step']} of {result['iterations']}; the run is saved in {result['run']} "
              "— run the same command to resume")
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(describe(result))
    return 0


def describe(result: dict) -> str:
    """A short human summary: the new version, α, and the held-out numbers before and after."""
    before, after = result["before"], result["after"]

    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    lines = [f"wrote {result['version']} ({result['checkpoint']}) from {result['base']}: "
             f"{result['train_images']} training images, {len(result['held_out_images'])} held out, "
             f"{result['iterations']} iterations in {result['train_seconds']:.0f} s, blend α = {result['alpha']:g} "
             f"({result['alpha_rule']})",
             f"{'class':<24}{'IoU before':>12}{'IoU after':>12}"]
    for name in result["classes"]:
        lines.append(f"{name:<24}{pct(before['per_class_iou'].get(name)):>12}{pct(after['per_class_iou'].get(name)):>12}")
    lines.append(f"{'mIoU':<24}{pct(before['mIoU']):>12}{pct(after['mIoU']):>12}")
    ptc_b, ptc_a = before["pixels_to_change_per_image"], after["pixels_to_change_per_image"]
    lines.append(f"{'pixels to change / image':<24}{ptc_b:>12.0f}{ptc_a:>12.0f}")
    active = result["index_entry"]["name"] if result.get("activated") else None
    lines.append(f"active version: {active}" if active else
                 "not activated: choose it in chimera-app or rerun with --activate")
    return "\n".join(lines)
