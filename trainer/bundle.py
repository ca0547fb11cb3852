"""Rebuild the two bundled offline models with fixed seeds (``chimera-train bundle``).

1. pre-train the tiny shapes CLIP on captions of **all** shapes → ``shapes-clip`` (training-free dense CLIP);
2. generate shapes-world train (seed 0) and val (seed 1) folders;
3. train Chimera-Seg on the **seen** shapes' masks only → ``shapes-chimera``;
4. evaluate both on the val folder (seen and unseen shapes) and record the numbers in the checkpoints;
5. draw the demo images ``chimera-app --demo`` copies (``resources/demo``; the app never imports the trainer).

Both files embed their CLIP in fp16, so each works alone on an offline machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from chimera_engine import distributed, pamr
from chimera_engine.clip_loading import ClipSpec
from chimera_engine.devices import choose
from chimera_engine.models import dense_clip_model, save_model
from chimera_engine.segmenter import Segmenter
from chimera_engine.tiling import InferenceConfig
from chimera_trainer.config import DATASET_DEFAULTS, ConfigError, TrainConfig
from chimera_trainer.data.datasets import build_dataset, load_info
from chimera_trainer.evaluate import evaluate
from chimera_trainer.shapes.world import BACKGROUND

SIZE = 64  # shapes-world image side; the shapes CLIP's native input size
TRAIN_SEED, VAL_SEED = 0, 1
# PAMR the shapes models apply by default (the app, chimera-label): their flat-coloured shapes are what
# PAMR snaps labels to. Its papers' neighbour distances (8, 16 px) are for ~448 px images; at 64 px
# (4, 8) scored best on seed 31337 of (8, 16), (4, 8), (2, 4), (1, 2), (1, 2, 4, 8) (hIoU 0.311 vs 0.290
# at (8, 16), 0.184 without PAMR). On the held-out seed 424242, the app's rule, shapes-chimera's hIoU
# 0.105 → 0.202 (0.178 at (8, 16)). Evaluations here follow the zero-shot protocol, without PAMR.
SHAPES_REFINE, SHAPES_REFINE_DILATIONS = pamr.DEFAULT_STEPS, (4, 8)
DEMO_SEED, DEMO_IMAGES, DEMO_SIZE = 7, 8, 256  # demo: a seed no training or test uses, drawn larger
ZSS_ITERATIONS = DATASET_DEFAULTS["shapes"]["iterations"]
# full / quick (smoke test). The CLIP's bank: 200,000 scenes (``--clip-scenes``) closed its generalisation
# gap (87.7 % held out, 89.5 % on its own scenes, against 86.2 / 93.7 %), but Chimera-Seg distilled from
# that CLIP scored 28-37 hIoU against 48-51 (benchmarks/SHAPES.md, stop 31): the default stays 50,000.
SCHEDULES = {
    "clip_steps": (12000, 20), "clip_scenes": (50_000, 2_560), "train_images": (4000, 64), "val_images": (300, 16),
    "zss_iterations": (ZSS_ITERATIONS, 20),
}
# How the tiny CLIP's steps are spent (``--clip-schedule``). "native": every step at 64 px (the shipped
# pair's CLIP, 86.2 %). "low-res": the first 5/6 of the steps see images shrunk to 40 px, the last 1/6
# at 64 px on a schedule of their own peaking at 0.3 x the rate: 86.0 % zero-shot, its steps 0.27 s at
# 40 px against 0.56 s at 64 px (benchmarks/results/wait_policy_clip.json;
# the bundle end to end with it: benchmarks/SHAPES.md).
CLIP_SCHEDULES = {"native": {}, "low-res": {"low_res_size": 40, "native_lr": 0.3, "native_share": 1 / 6}}


def clip_schedule(name: str, steps: int) -> dict:
    """``pretrain``'s keyword arguments for the named schedule of ``steps`` steps."""
    if name not in CLIP_SCHEDULES:
        raise ValueError(f"unknown CLIP schedule {name!r}; choose one of {', '.join(CLIP_SCHEDULES)}")
    spec = dict(CLIP_SCHEDULES[name])
    native_share = spec.pop("native_share", 0.0)
    if native_share:
        spec["low_res_steps"] = steps - max(1, round(steps * native_share))
    return {"steps": steps, **spec}


def shapes_inference() -> InferenceConfig:
    return InferenceConfig(short_side=SIZE, window=SIZE, stride=SIZE * 3 // 4)


# What the bundle decides itself for its Chimera-Seg stage: its data, its CLIP, its dataset.
BUNDLE_OWNED_KEYS = ("dataset", "data_root", "clip")


def check_zss_overrides(overrides: dict) -> None:
    """ConfigError unless ``overrides`` applied to the shapes recipe make a valid training config (an
    unknown key, a bad value, or a key the bundle sets itself)."""
    owned = sorted(set(overrides) & set(BUNDLE_OWNED_KEYS))
    if owned:
        raise ConfigError(f"the bundle sets {', '.join(owned)} itself; override the recipe's other keys")
    shapes_train_config(Path("shapes"), "shapes-tiny/random", **overrides)


def shapes_train_config(data_root: Path, clip: str, **overrides) -> TrainConfig:
    data = {**TrainConfig(dataset="shapes").to_dict(), **json.loads(json.dumps(DATASET_DEFAULTS["shapes"]))}
    data.update({"data_root": str(data_root), "clip": clip, **overrides})
    return TrainConfig.from_dict(data)


def evaluate_model(model, data_root: Path) -> dict:
    val = data_root / "val"
    segmenter = Segmenter(model, choose("cpu", "fp32"), batch_size=32)
    info = load_info("shapes", val)
    result = evaluate(segmenter, build_dataset("shapes", val, "val"), info)
    out = {k: result[k] for k in ("mIoU_seen", "mIoU_unseen", "hIoU", "pixel_accuracy", "per_class_iou")}
    if info.background:  # mIoU_seen counts background as a seen class (VOC's rule); also without it
        shapes = [result["per_class_iou"][c] for c in info.seen if c != info.background]
        out["mIoU_seen_shapes"] = float(np.mean([v for v in shapes if v is not None]))
        out["background_kept"] = result["per_class_recall"][info.background]  # bg pixels left unlabeled
    return out


def write_demo_images(out_dir: str | Path) -> list[Path]:
    """The demo folder's images: shapes-world scenes (seen and unseen shapes) at ``DEMO_SIZE`` px."""
    from PIL import Image

    from chimera_trainer.shapes import SHAPE_CLASSES, sample

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(DEMO_IMAGES):
        paths.append(out / f"demo{i + 1:02d}.png")
        Image.fromarray(sample(DEMO_SEED, i, DEMO_SIZE, min_objects=2).image).save(paths[-1], optimize=True)
    (out / "classes.txt").write_text("\n".join(SHAPE_CLASSES) + "\n")  # the app cannot import the trainer
    return paths


def build_bundled_models(out: str | Path, work: str | Path, quick: bool = False, reuse_clip: bool = False,
                         zss_overrides: dict | None = None, clip_schedule_name: str = "native",
                         single_share: float = 0.0, clip_scenes: int | None = None) -> dict:
    """Run the whole recipe; ``reuse_clip`` keeps a CLIP already pre-trained in ``work``;
    ``zss_overrides``: TrainConfig fields that replace the shapes recipe's (recipe experiments);
    ``clip_schedule_name``: a key of ``CLIP_SCHEDULES``; ``single_share``: the share of Chimera-Seg's
    training images drawn with exactly one shape (the rest hold 1-4); ``clip_scenes``: the size of
    the CLIP's scene bank (default: the schedule's)."""
    pick = 1 if quick else 0
    out, work = Path(out), Path(work)
    clip_kwargs = {**clip_schedule(clip_schedule_name, SCHEDULES["clip_steps"][pick]),  # refused before any work
                   "scenes": SCHEDULES["clip_scenes"][pick] if clip_scenes is None else clip_scenes}
    check_zss_overrides(zss_overrides or {})  # likewise: not after two hours of CLIP pre-training
    if not 0.0 <= single_share <= 1.0:
        raise ConfigError(f"single_share must lie in 0..1, got {single_share}")
    context = distributed.start("cpu")  # under torchrun both stages share one process group
    try:
        report = _build(out, work, pick, reuse_clip, zss_overrides, clip_kwargs, single_share, context)
    finally:
        context.close()
    return report


def _build(out: Path, work: Path, pick: int, reuse_clip: bool, zss_overrides: dict | None, clip_kwargs: dict,
           single_share: float, context: distributed.Context) -> dict:
    """``build_bundled_models``' stages. With several processes, both trainings split their batches
    between them; rank 0 alone writes files and evaluates, the others wait for it at barriers."""
    from chimera_trainer.clip_pretrain import pretrain, report_path
    from chimera_trainer.shapes import write_dataset
    from chimera_trainer.zss import train

    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "processes": context.world_size,
                    "zss_overrides": dict(zss_overrides or {}), "train_single_share": single_share}

    clip_weights = work / "shapes-clip-weights.safetensors"
    if reuse_clip and clip_weights.is_file() and report_path(clip_weights).is_file():
        report["clip_pretraining"] = json.loads(report_path(clip_weights).read_text())
    else:
        report["clip_pretraining"] = pretrain(clip_weights, seed=TRAIN_SEED, **clip_kwargs,
                                              log=lambda r: print(json.dumps(r), file=sys.stderr, flush=True))
    report["clip_seconds"] = round(time.perf_counter() - started, 1)

    data_root = work / "shapes"
    dense_path = out / "shapes-clip.safetensors"
    cfg = shapes_train_config(data_root, f"shapes-tiny/{dense_path}",
                              **{"iterations": SCHEDULES["zss_iterations"][pick], "seed": TRAIN_SEED,
                                 **(zss_overrides or {})})
    if context.is_main:
        write_dataset(data_root / "train", SCHEDULES["train_images"][pick], seed=TRAIN_SEED, size=SIZE,
                      single_share=single_share, twins=cfg.twin_count)
        # Validation never trains, so it needs no twins.
        write_dataset(data_root / "val", SCHEDULES["val_images"][pick], seed=VAL_SEED, size=SIZE, twins=0)
        torch.manual_seed(TRAIN_SEED)
        dense = dense_clip_model(ClipSpec("shapes-tiny", str(clip_weights)))
        dense.templates, dense.inference, dense.background = "single", shapes_inference(), [BACKGROUND]
        dense.refine, dense.refine_dilations = SHAPES_REFINE, SHAPES_REFINE_DILATIONS
        report["shapes_clip_eval"] = evaluate_model(dense, data_root)
        save_model(dense, dense_path, embed_clip=True, storage_dtype=torch.float16,
                   info={"evaluation": report["shapes_clip_eval"], "zero_shot": report["clip_pretraining"]})
    context.barrier()  # the data and the CLIP file the training reads are written

    info = load_info("shapes", data_root / "train")
    tick = time.perf_counter()
    model = train(cfg, str(work / "run"), build_dataset("shapes", data_root / "train", "train"), info,
                  device="cpu", fresh=True, show_progress=context.is_main)
    report["chimera_seconds"] = round(time.perf_counter() - tick, 1)
    if context.is_main:
        model.clip_spec = ClipSpec("shapes-tiny", "bundled:shapes-clip")
        model.name = "shapes-chimera"
        model.refine, model.refine_dilations = SHAPES_REFINE, SHAPES_REFINE_DILATIONS
        report["shapes_chimera_eval"] = evaluate_model(model, data_root)
        save_model(model, out / "shapes-chimera.safetensors", embed_clip=True, storage_dtype=torch.float16,
                   info={"evaluation": report["shapes_chimera_eval"], "training": cfg.to_dict()})
        write_demo_images(out.parent / "demo")
        report["files"] = {p.name: p.stat().st_size for p in sorted(out.glob("shapes-*.safetensors"))}
        report["seconds"] = round(time.perf_counter() - started, 1)
    return context.broadcast(report)
