"""``chimera-train``: reproduce Chimera-Seg's zero-shot training, evaluate it, and build the shapes world.

    chimera-train zss --dataset voc --data-root DATA --out runs/voc
    chimera-train eval --checkpoint runs/voc/model.safetensors --dataset voc --data-root DATA
    chimera-train shapes-data --out data/shapes/train --images 4000 --seed 0
    chimera-train shapes-clip --out build/shapes-clip.safetensors
    chimera-train bundle --out resources/models
"""

from __future__ import annotations

import sys

from chimera_engine.interrupts import interrupted, raise_on_interrupt, watching

raise_on_interrupt()  # the first thing the module does: an interrupt during the imports below counts
INTERRUPTED = ("interrupted before it finished; nothing was written beyond the run's last save "
               "(run the same command to start or resume it)")

try:
    import argparse
    import errno
    import json
    import re
    from pathlib import Path

    from chimera_engine.errors import ChimeraError
    from chimera_trainer.config import DATASET_DEFAULTS, ConfigError, TrainConfig, apply_overrides, read_config_file
except KeyboardInterrupt:
    print(f"chimera-train: {INTERRUPTED}", file=sys.stderr)
    raise SystemExit(130) from None

# Exit statuses (also in --help): 0 done, 1 failed (data, model, disk, a damaged run), 2 bad
# arguments (options, config file, --set values, device name), 130 interrupted by Ctrl+C.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_DEVICE_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# PAPER.md §7: each ablation is a flag that sets config keys.
ABLATIONS = {
    "no_csh": {"head": "linear"},
    "no_sgd": {"sgd_weight": 0.0},
    "sgd_fixed_ratio": {"sgd_ratio_end": 1.0},
    "sgd_random": {"sgd_selection": "random"},
    "no_sam": {"sam_weight": 0.0},
}


def split_root(dataset: str, root: Path, split: str) -> Path:
    """A shapes data root may hold ``train/`` and ``val/`` folders (one shapes-data run each)."""
    return root / split if dataset == "shapes" and (root / split).is_dir() else root


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < dataset defaults < --config < flags < --set, validated once at the end."""
    data = TrainConfig.defaults()
    data.update(json.loads(json.dumps(DATASET_DEFAULTS.get(args.dataset, {}))))
    if args.config:
        data.update(read_config_file(args.config))
    data.update({"dataset": args.dataset, "data_root": str(args.data_root)})
    for flag, keys in ABLATIONS.items():
        if getattr(args, flag):
            data.update(keys)
    for key in ("iterations", "batch_size", "csh_depth", "tau", "seed", "clip", "body"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    return TrainConfig.from_dict(apply_overrides(data, args.set or []))


def cmd_zss(args) -> int:
    cfg = resolve_config(args)  # before the heavy imports: a bad argument answers at once
    _check_device_available(args.device)
    from chimera_engine import distributed
    from chimera_trainer.data.datasets import build_dataset, load_info
    from chimera_trainer.zss import train

    root = split_root(cfg.dataset, Path(cfg.data_root), "train")
    info = load_info(cfg.dataset, root)
    model = train(cfg, args.out, build_dataset(cfg.dataset, root, "train"), info, device=args.device,
                  fresh=args.fresh, show_progress=not args.quiet)
    if args.eval and distributed.is_main_process():  # training has left its process group
        val_root = split_root(cfg.dataset, Path(cfg.data_root), "val")
        _run_eval(model, cfg.dataset, val_root, Path(args.out) / "eval.json", cfg.calibration, args.device)
    return 0


def _run_eval(model, dataset: str, root: Path, out: Path, calibration: float, device: str,
              batch_size: int = 8) -> dict:
    from chimera_engine.atomic import atomic_write_json
    from chimera_engine.devices import choose
    from chimera_engine.segmenter import Segmenter
    from chimera_trainer.data.datasets import build_dataset, load_info
    from chimera_trainer.evaluate import evaluate
    from chimera_trainer.metrics import format_table

    info = load_info(dataset, root)
    segmenter = Segmenter(model, choose(device, "fp32"), batch_size=batch_size)
    result = evaluate(segmenter, build_dataset(dataset, root, "val"), info, calibration)
    print(format_table(result, info.unseen))
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return result


def cmd_eval(args) -> int:
    from chimera_engine.models import build_model

    _check_device_available(args.device)
    model = build_model(args.checkpoint)
    out = args.out or Path(args.checkpoint).with_suffix(".eval.json")
    root = split_root(args.dataset, Path(args.data_root), args.split)
    _run_eval(model, args.dataset, root, Path(out), args.calibration, args.device, args.batch_size)
    return 0


def cmd_shapes_data(args) -> int:
    import json

    from chimera_trainer.shapes import write_dataset

    path = write_dataset(args.out, images=args.images, seed=args.seed, size=args.size, twins=args.twins)
    twins = json.loads((path / "split.json").read_text())["twins"]  # None: the shapes recipe's count
    print(f"wrote {args.images} shapes images ({twins} twin(s) each) to {path}")
    return 0


def cmd_shapes_clip(args) -> int:
    from chimera_trainer.clip_pretrain import pretrain

    report = pretrain(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      scenes=args.scenes, eval_every=args.eval_every, matched_positives=args.matched_positives,
                      init=args.init, warmup=args.warmup, low_res_steps=args.low_res_steps,
                      low_res_size=args.low_res_size, native_lr=args.native_lr, twin_share=args.twin_share,
                      log=lambda r: print(json.dumps(r), file=sys.stderr, flush=True))
    _print_once(report)
    return 0 if report["accuracy"] >= 0.9 else 3


def cmd_finetune(args) -> int:
    from chimera_trainer.finetune_cli import run_finetune

    return run_finetune(args)


def cmd_bundle(args) -> int:
    from chimera_trainer.bundle import build_bundled_models

    overrides = apply_overrides({}, args.set or [])  # validated by build_bundled_models before any work
    report = build_bundled_models(args.out, args.work, quick=args.quick, reuse_clip=args.reuse_clip,
                                  zss_overrides=overrides, clip_schedule_name=args.clip_schedule,
                                  single_share=args.single_share, clip_scenes=args.clip_scenes)
    _print_once(report)
    return 0


def _print_once(report: dict) -> None:
    """The JSON report on stdout, from rank 0 only under ``torchrun`` (every rank holds it)."""
    from chimera_engine import distributed

    if distributed.is_main_process():
        print(json.dumps(report, indent=1))


def device_name(text: str) -> str:
    """argparse type of --device: the syntax here (exit 2); availability when training starts."""
    if not _DEVICE_NAME.match(text.strip()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use auto, cpu, cuda, cuda:N or mps")
    return text.strip()


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def image_side(text: str) -> int:
    value = positive_int(text)
    if not 16 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"expected a side of 16..1024 pixels, got {value}")
    return value


def twin_count(text: str) -> int:
    from chimera_trainer.shapes.world import MAX_TWINS

    value = _whole_number(text)
    if not 0 <= value <= MAX_TWINS:
        raise argparse.ArgumentTypeError(f"expected 0..{MAX_TWINS} twins, got {value}")
    return value


def _check_device_available(device: str) -> None:
    from chimera_engine.devices import resolve_device

    try:
        resolve_device(device)
    except (ValueError, RuntimeError) as exc:
        raise DeviceUnavailableError(str(exc)) from exc


class DeviceUnavailableError(ChimeraError):
    """--device names a device this machine does not have."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chimera-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__ + "\nExit status: 0 done, 1 failed (data, model, disk, damaged run), "
                                     "2 bad arguments (options, config file, --set values, device), 130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True)

    z = sub.add_parser("zss", help="inductive zero-shot training (seen masks only)",
                       description="Train Chimera-Seg on the seen classes of a dataset. Resumes when OUT "
                                   "holds a run. Every PAPER.md [choice] is a config key: --set key=value.")
    z.add_argument("--dataset", required=True, choices=["voc", "coco-stuff", "shapes"])
    z.add_argument("--data-root", required=True, type=Path)
    z.add_argument("--out", required=True, type=Path, help="run folder (config, metrics.jsonl, checkpoints)")
    z.add_argument("--config", type=Path, help="JSON file of TrainConfig keys")
    z.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (repeatable)")
    for key, kind in (("iterations", positive_int), ("batch_size", positive_int), ("csh_depth", int),
                      ("tau", float), ("seed", int), ("clip", str), ("body", str)):
        z.add_argument(f"--{key.replace('_', '-')}", type=kind, dest=key)
    z.add_argument("--no-csh", action="store_true", help="ablation: body + linear projection to CLIP space")
    z.add_argument("--no-sgd", action="store_true", help="ablation: no Selective Global Distillation")
    z.add_argument("--sgd-fixed-ratio", action="store_true", help="ablation: SGD keeps all tokens (no shrinking)")
    z.add_argument("--sgd-random", action="store_true", help="ablation: SGD selects random tokens")
    z.add_argument("--no-sam", action="store_true", help="ablation: no Semantic Alignment Module")
    z.add_argument("--device", default="auto", type=device_name, help="auto, cpu, cuda, cuda:N or mps")
    z.add_argument("--fresh", action="store_true", help="start over even if OUT holds a run")
    z.add_argument("--eval", action="store_true", help="evaluate on the val split at the end")
    z.add_argument("--quiet", action="store_true")
    z.set_defaults(func=cmd_zss)

    e = sub.add_parser("eval", help="sliding-window evaluation: per-class IoU, mIoU(S), mIoU(U), hIoU")
    e.add_argument("--checkpoint", required=True, help="a checkpoint or any model name chimera-label accepts")
    e.add_argument("--dataset", required=True, choices=["voc", "coco-stuff", "shapes"])
    e.add_argument("--data-root", required=True, type=Path)
    e.add_argument("--split", default="val", choices=["train", "val"])
    e.add_argument("--calibration", type=float, default=0.0, help="γ subtracted from seen-class probabilities")
    e.add_argument("--out", type=Path, help="JSON result (default: beside the checkpoint)")
    e.add_argument("--device", default="auto", type=device_name, help="auto, cpu, cuda, cuda:N or mps")
    e.add_argument("--batch-size", type=positive_int, default=8)
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("shapes-data", help="generate a shapes-world dataset folder")
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--images", type=positive_int, default=1000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--size", type=image_side, default=64, help="image side in pixels (16..1024)")
    d.add_argument("--twins", type=twin_count, default=None, metavar="K",
                   help="twins written per image for SGD's twin contrast (0 up to one per other shape class; "
                        "default: the shapes recipe's twin_count)")
    d.set_defaults(func=cmd_shapes_data)

    c = sub.add_parser("shapes-clip", help="pre-train the tiny shapes CLIP on image-caption pairs")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--steps", type=positive_int, default=12000)
    c.add_argument("--batch-size", type=positive_int, default=128)
    c.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (AdamW, cosine decay)")
    c.add_argument("--scenes", type=positive_int, default=50_000, help="pre-rendered scenes the pairs are drawn from")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--eval-every", type=int, default=500, help="zero-shot accuracy every N steps (0 = end only)")
    c.add_argument("--matched-positives", action="store_true",
                   help="captions match every batch image they describe (see trainer/clip_pretrain.py)")
    c.add_argument("--init", type=Path, default=None,
                   help="start from these CLIP weights (.safetensors state dict) instead of random ones")
    c.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    c.add_argument("--low-res-steps", type=int, default=0,
                   help="the first N steps see images shrunk to --low-res-size (cheaper steps; CLIPA's resizing)")
    c.add_argument("--low-res-size", type=int, default=40, help="image side of the low-resolution steps (px)")
    c.add_argument("--native-lr", type=float, default=0.0,
                   help="give the native-size steps after the low-resolution ones a schedule of their own, "
                        "peaking at this fraction of --lr (0: one cosine over all steps)")
    c.add_argument("--twin-share", type=float, default=0.0, metavar="F",
                   help="share of each batch given as scene-twin pairs: the same scene with one shape "
                        "redrawn as another class (hard negatives; 0..1, default 0)")
    c.set_defaults(func=cmd_shapes_clip)

    b = sub.add_parser("bundle", help="rebuild the bundled shapes-clip and shapes-chimera models")
    b.add_argument("--out", type=Path, default=Path("resources/models"))
    b.add_argument("--work", type=Path, default=Path("build/bundle"))
    b.add_argument("--quick", action="store_true", help="tiny schedule, for smoke tests")
    b.add_argument("--reuse-clip", action="store_true", help="keep the CLIP already pre-trained in --work")
    b.add_argument("--clip-schedule", choices=("native", "low-res"), default="native",
                   help="native: every CLIP step at 64 px (the shipped pair); low-res: 5/6 of them at 40 px, "
                        "then 64 px on a schedule of their own (faster)")
    b.add_argument("--clip-scenes", type=positive_int, default=None, metavar="N",
                   help="scenes in the CLIP's pre-rendered bank (default 50,000, the shipped CLIP's)")
    b.add_argument("--single-share", type=float, default=0.0, metavar="F",
                   help="share of Chimera-Seg's training images drawn with exactly one shape "
                        "(the rest hold 1-4; default %(default)s)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the shapes recipe's Chimera-Seg training (recipe experiments: "
                        "seed=1, sgd_weight=3; repeatable)")
    b.set_defaults(func=cmd_bundle)

    from chimera_trainer.finetune_cli import add_finetune_parser  # options live beside the command (chimera_trainer.finetune)

    add_finetune_parser(sub, cmd_finetune, device_name, positive_int)
    return parser


def main(argv: list[str] | None = None) -> int:
    with watching():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)  # exits 2 itself for unknown options and bad values
        return args.func(args)
    except KeyboardInterrupt:  # before the training loop took over Ctrl+C, or after it: one line, no traceback
        return _report(INTERRUPTED, EXIT_INTERRUPTED)
    except (ConfigError, DeviceUnavailableError) as exc:
        return _report(exc, EXIT_USAGE)
    except (ChimeraError, ValueError, OSError) as exc:
        if interrupted():  # the interrupt, disguised by the code it stopped (chimera_engine.interrupts)
            return _report(INTERRUPTED, EXIT_INTERRUPTED)
        return _report(_describe_os_error(exc) if isinstance(exc, OSError) else exc, EXIT_FAILED)
    except MemoryError:
        return _report("not enough memory (try a smaller --set batch_size or crop_size)", EXIT_FAILED)


def _report(message: object, status: int) -> int:
    print(f"chimera-train: {message}", file=sys.stderr)
    return status


def _describe_os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}; the last complete checkpoint was kept — free space and run the same command"
    return f"{exc.strerror or exc}{where}"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # between main's return and the exit
        sys.exit(EXIT_INTERRUPTED)
