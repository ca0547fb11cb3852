"""``chimera-train finetune``: learn from a project's corrections, keep the model open-vocabulary.

    chimera-train finetune --project IMAGES_DIR [--project-dir DIR] [--base MODEL] [--iterations N]

1. Read the project without locking it (``chimera_trainer.project_data``): its classes are the "seen"
   classes, its human-verified images the data, and inside them only pixels a person decided.
2. Hold out a share of the verified images (at least one) for evaluation, drawn at random (seeded)
   but never the only image with person-decided pixels of a class (``split_images``); refuse when
   too few images are verified or a class has no pixel to learn from.
3. Start from the project's model (or ``--base``; ``chimera_trainer.finetune_base``) and train the body and
   the CSH adapter with zss's step: seen-class CE + SGD + SAM, CLIP's text tower and the CSH's CLIP
   tail and projection frozen (``chimera_trainer.finetune_train``). Resumable; Ctrl-C saves.
4. Blend base and fine-tuned weights (WiSE-FT), α chosen on the held-out images
   (``chimera_trainer.finetune_eval``), and report mIoU and pixels-to-change before and after.
5. Write ``vN.safetensors`` + ``vN.json`` into the project's models folder and list it in its index
   (``chimera_engine.formats.model_versions``, shared with the app); nothing is overwritten, and the
   active version only changes with ``--activate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chimera_engine import distributed
from chimera_engine.atomic import atomic_write_json
from chimera_engine.devices import resolve_device
from chimera_engine.errors import ChimeraError
from chimera_engine.models import load_model, save_model
from chimera_engine.text import TextEncoder, tokenizer_for
from chimera_trainer.config import TrainConfig
from chimera_trainer.finetune_base import BaseModel, resolve_base
from chimera_trainer.finetune_eval import (ALPHA_GRID, ALPHA_TOLERANCE, blend, choose_alpha, evaluate_held_out,
                                   held_out_segmenter)
from chimera_trainer.finetune_progress import Progress
from chimera_trainer.finetune_train import train_steps, training_stream
from chimera_engine.formats.model_versions import MIN_VERIFIED_IMAGES, active_checkpoint, add_version, models_dir
from chimera_trainer.project_data import IGNORE, ProjectSnapshot, VerifiedImage, read_journal, read_snapshot
from chimera_trainer.run_state import RunDir

MIN_VERIFIED = MIN_VERIFIED_IMAGES  # at least one held-out image and two to learn from (shared with the app)
WORK_DIR_NAME = "finetune-run"


class FinetuneDataError(ChimeraError):
    """The project cannot be fine-tuned on as it is: too few verified images, a class without
    pixels, no model to start from. The message says what to do; ``reason`` and ``details`` say
    the same for programs (``--progress json`` prints them as a ``refused`` record, which the app
    words for its own users and offers the way forward from)."""

    def __init__(self, message: str, reason: str = "", **details: Any):
        super().__init__(message)
        self.reason, self.details = reason, details


@dataclasses.dataclass
class FinetuneOptions:
    project: Path
    project_dir: Path | None = None
    base: str | None = None  # default: the active version, else project.json's model
    iterations: int | None = None  # default: ``default_iterations(training images)``
    device: str = "auto"
    out: Path | None = None  # the resumable work folder; default <project data>/finetune-run
    fresh: bool = False
    alpha: float | None = None  # force the blend factor instead of choosing it
    alpha_tolerance: float = ALPHA_TOLERANCE
    alpha_metric: str = "decided_accuracy"  # or "mIoU": what the blend factor is chosen on
    holdout: float = 0.2
    min_images: int = MIN_VERIFIED
    seed: int = 0
    batch_size: int = 8
    lr: float | None = None
    crop_size: int | None = None
    body: str | None = None  # body preset when a new Chimera-Seg is built on a training-free CLIP
    precision: str = "auto"  # auto (bf16 on GPUs, fp32 on CPUs) | fp32 | bf16
    activate: bool = False
    skip_empty_classes: bool = False
    overrides: list[str] = dataclasses.field(default_factory=list)  # TrainConfig key=value
    progress: str = "bar"  # bar | json | none
    stop_after: int | None = None  # end this call after that many steps (tests of resuming)


def default_iterations(train_images: int) -> int:
    """~20 steps of 8 crops per training image, between 200 and 2,000 (a few minutes on a CPU for
    the shapes models; each image is seen ~160 times as different crops)."""
    return int(min(2000, max(200, 20 * train_images)))


def split_images(rels: list[str], share: float, seed: int,
                 class_pixels: np.ndarray | None = None) -> tuple[list[str], list[str]]:
    """(held out, training): ``max(1, round(share * n))`` held out, in a seeded shuffle's order.

    With ``class_pixels`` (n images x classes: person-decided pixels of each class per image), an
    image is skipped (kept for training) when holding it out would leave a class that has pixels
    with none in the training images: the one image where someone labelled a rare class is what
    the fine-tune must learn it from, and a held-out image without it still measures the others.
    Only when too few images can be spared that way are the rest taken in the shuffle's order."""
    order = [int(i) for i in np.random.default_rng([seed, 1123]).permutation(len(rels))]
    count = min(len(rels) - 1, max(1, int(round(share * len(rels)))))
    if class_pixels is None:
        chosen = order[:count]
    else:
        left = class_pixels.sum(axis=0)
        chosen = []
        for i in order:
            if len(chosen) == count:
                break
            if not np.any((class_pixels[i] > 0) & (left - class_pixels[i] <= 0)):
                chosen.append(i)
                left = left - class_pixels[i]
        chosen += [i for i in order if i not in chosen][:count - len(chosen)]
    picked = set(chosen)
    return sorted(rels[i] for i in chosen), sorted(rels[i] for i in range(len(rels)) if i not in picked)


def build_config(opts: FinetuneOptions, base: BaseModel, device: torch.device, train_images: int) -> TrainConfig:
    """Fine-tuning settings: the base's own crop and resize recipe where it records one, else its
    inference scale; half its training learning rate (an earlier fine-tune's rate as it was);
    warm-up and poly decay over a short schedule; bf16 autocast on GPUs; BatchNorm statistics kept
    from a trained base."""
    recorded, inference = base.training, base.model.inference
    crop = opts.crop_size or int(recorded.get("crop_size") or inference.window)
    scale = recorded.get("resize_scale") or [4 * inference.short_side, inference.short_side]
    if opts.crop_size and not recorded.get("resize_scale"):
        scale = [4 * crop, crop]
    trained = base.weights is not None
    if trained:  # half the base's training rate (an earlier fine-tune's rate as it was)
        lr = float(recorded.get("lr", 6e-5)) * (1.0 if recorded.get("fine_tuned") else 0.5)
        head = float(recorded.get("head_lr_mult", 10.0))
    else:  # a new body: ImageNet-initialised learns at the paper's rate, one from scratch faster
        pretrained = base.model.encoder.cfg.body.pretrained_backbone
        lr, head = (6e-5, 10.0) if pretrained else (1e-3, 1.0)
    iterations = opts.iterations or default_iterations(train_images)
    amp = {"auto": "bf16" if device.type == "cuda" else "none", "fp32": "none", "bf16": "bf16"}[opts.precision]
    data = {**TrainConfig().to_dict(), "crop_size": crop, "resize_scale": list(scale),
            "resize_ratio": list(recorded.get("resize_ratio") or [0.5, 2.0]), "tau": base.model.encoder.cfg.tau,
            "iterations": iterations, "batch_size": opts.batch_size, "lr": opts.lr or lr, "head_lr_mult": head,
            "warmup_iterations": min(50, iterations // 10), "amp": amp, "freeze_bn": trained,
            "workers": 2 if device.type == "cuda" else 0, "seed": opts.seed,
            "checkpoint_every": max(1, iterations // 4), "log_every": 10}
    return TrainConfig.from_dict(data).override(list(opts.overrides))


# TrainConfig keys a fine-tune does not take from its config: the model (CLIP, body, head) is the
# base's, the data is the project's, the templates are the project's or the base's, evaluation uses
# the base's inference settings. A version records the real values (``recorded_config``) instead of
# the defaults these keys hold.
NOT_FROM_CONFIG = ("dataset", "data_root", "clip", "body", "body_overrides", "pretrained_backbone", "head",
                   "csh_depth", "token_stride", "templates", "eval_short_side", "eval_window", "eval_stride",
                   "calibration", "eval_every")


def recorded_config(cfg: TrainConfig, base: BaseModel, templates) -> dict[str, Any]:
    """The training settings a version records: ``cfg`` without the keys that did not apply, plus
    the model that was actually trained (the base's CLIP, body, head) and the templates used."""
    record = {k: v for k, v in cfg.to_dict().items() if k not in NOT_FROM_CONFIG}
    encoder = base.model.encoder.cfg
    record.update(clip=str(base.model.clip_spec), body=json.loads(json.dumps(dataclasses.asdict(encoder.body))),
                  head=encoder.head, csh_depth=encoder.csh_depth, templates=templates)
    return record


def _fingerprint(parts: list[Any], arrays: list[np.ndarray]) -> str:
    digest = hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _base_name(opts: FinetuneOptions, snapshot: ProjectSnapshot) -> str:
    """``--base``, else the project's current model: its active version, else project.json's model."""
    if opts.base:
        return opts.base
    active = active_checkpoint(models_dir(snapshot.data_dir))
    if active is not None:
        return str(active)
    if snapshot.model:
        return snapshot.model
    raise FinetuneDataError("the project has no model to start from: choose one in chimera-app or pass --base "
                            "(e.g. --base shapes-chimera or --base clip:ViT-B-16/openai)", "no_model")


def _class_pixels(targets: list[np.ndarray], count: int) -> np.ndarray:
    totals = np.zeros(count + 1, np.int64)
    for target in targets:
        totals += np.bincount(np.minimum(target.ravel(), count), minlength=count + 1)[:count + 1]
    return totals[:count]


@dataclasses.dataclass
class TrainingData:
    held_out: list[str]  # relative paths of the held-out verified images
    train: list[VerifiedImage]  # targets index ``trained`` (classes without pixels left out)
    trained: list[int]  # indices of the project's classes that are trained
    pixels: np.ndarray  # person-decided pixels per project class in the training images
    held_items: list[VerifiedImage] = dataclasses.field(default_factory=list)  # the held-out images, read


def read_training_data(opts: FinetuneOptions, snapshot: ProjectSnapshot, journal, lut,
                       progress: Progress) -> TrainingData:
    """Read the verified images, split them, and refuse what cannot be learned from."""
    if not snapshot.classes:
        raise FinetuneDataError("the project has no classes: add the classes you label in chimera-app first",
                                "no_classes")
    needed = max(opts.min_images, 2)
    if len(snapshot.verified) < needed:
        raise FinetuneDataError(
            f"too few human-verified images to fine-tune: {len(snapshot.verified)} of the needed "
            f"{needed} (one is held out to measure the result). Correct and verify more images "
            "(accepting a prediction verifies an image), then run it again", "too_few_images",
            verified=len(snapshot.verified), needed=needed)
    progress.stage("read", len(snapshot.verified))
    loaded = {}
    for rel in snapshot.verified:
        loaded[rel] = snapshot.load(rel, journal, lut)
        progress.update()
    names = [c.name for c in snapshot.classes]
    per_image = np.stack([_class_pixels([loaded[rel].target], len(names)) for rel in snapshot.verified])
    held_rels, train_rels = split_images(snapshot.verified, opts.holdout, opts.seed, per_image)
    items = [loaded[rel] for rel in train_rels]
    pixels = _class_pixels([item.target for item in items], len(names))
    empty = [names[i] for i in np.flatnonzero(pixels == 0)]
    if empty and (not opts.skip_empty_classes or len(empty) == len(names)):
        anywhere = per_image.sum(axis=0)
        nowhere = [names[i] for i in np.flatnonzero(anywhere == 0)]
        held = ", ".join(held_rels)
        raise FinetuneDataError(
            f"no person-decided pixels of {', '.join(repr(n) for n in empty)} in the {len(train_rels)} training "
            f"images (held out to measure the result: {held}): label them in some verified images, or pass "
            "--skip-empty-classes to leave those classes out of training (they keep the base model's behaviour)",
            "empty_classes", classes=empty, nowhere=nowhere, all_classes=len(empty) == len(names),
            held_out=held_rels, train_images=len(train_rels))
    trained = [i for i in range(len(names)) if pixels[i] > 0]
    if empty:
        remap = np.full(256, IGNORE, np.uint8)
        remap[trained] = np.arange(len(trained))
        for item in items:
            item.target = remap[item.target]
        progress.note(f"left out of training (no pixels): {', '.join(empty)}")
    return TrainingData(held_rels, items, trained, pixels, [loaded[rel] for rel in held_rels])


def finetune(opts: FinetuneOptions) -> dict[str, Any]:
    """Run (or resume) a fine-tune of the project; returns the summary (rank 0) or {} (other ranks)."""
    started = time.perf_counter()
    context = distributed.start(opts.device)
    device = resolve_device(context.device)[0]
    progress = Progress(opts.progress if context.is_main else "none")
    snapshot = read_snapshot(opts.project, opts.project_dir)
    journal, lut = read_journal(snapshot.data_dir), snapshot.class_lut()
    data = read_training_data(opts, snapshot, journal, lut, progress)
    names, prompts = [c.name for c in snapshot.classes], snapshot.prompts
    trained_prompts = [prompts[i] for i in data.trained]
    train_rels = [item.rel for item in data.train]
    held_rels = data.held_out

    base_name = _base_name(opts, snapshot)
    base = resolve_base(base_name, device.type, opts.body)
    for note in base.notes:
        progress.note(note)
    templates = snapshot.templates or base.model.templates
    cfg = build_config(opts, base, device, len(data.train))
    run = RunDir(opts.out or snapshot.data_dir / WORK_DIR_NAME)
    plan = {"base": base.name, "prompts": trained_prompts, "templates": templates, "held_out": held_rels,
            "train": train_rels, "config": cfg.to_dict(),
            "data": _fingerprint([train_rels], [i.target for i in data.train] + [i.image for i in data.train])}
    plan_path = run.path / "plan.json"
    previous = json.loads(plan_path.read_text(encoding="utf-8")) if plan_path.is_file() else None
    resume = run.has_state() and not opts.fresh and previous == plan
    if context.world_size > 1:  # every process decides before rank 0 writes the new plan
        torch.distributed.barrier()
    if run.has_state() and not opts.fresh and previous != plan:
        progress.note("the project's verified images, classes or settings changed since the unfinished fine-tune "
                      f"in {run.path}: starting over")
    model = load_model(run.model) if resume else base.model
    model.templates = templates
    model.encoder.cfg.templates = templates
    if not resume and context.is_main:
        run.metrics.unlink(missing_ok=True)
        atomic_write_json(plan_path, plan)
        run.write_config(cfg.to_dict())
    text = TextEncoder(model.clip, templates, tokenizer=tokenizer_for(model.clip_spec.arch)).encode(trained_prompts)
    stream = training_stream(data.train, trained_prompts, cfg, model)
    torch.manual_seed(cfg.seed)
    loop = train_steps(model, cfg, text, stream, run, device, context.rank, context.world_size, resume,
                       {"finetune_plan": plan}, on_start=lambda step: progress.stage("train", cfg.iterations, step),
                       on_step=lambda _: progress.update(), stop_after=opts.stop_after)
    progress.close()
    context.close()
    if not context.is_main:
        return {}
    if loop.interrupted or loop.step < cfg.iterations:
        return {"interrupted": loop.interrupted, "step": loop.step, "iterations": cfg.iterations,
                "run": str(run.path)}

    result = _blend_and_measure(opts, base, model, data.held_items, prompts, names, progress, str(device))
    summary = {
        "project": str(snapshot.root), "base": base.name, "notes": base.notes, "classes": names,
        "trained_classes": [names[i] for i in data.trained], "class_pixels": dict(zip(names, data.pixels.tolist())),
        "train_images": len(train_rels), "held_out_images": held_rels, "iterations": cfg.iterations,
        "train_seconds": round(loop.seconds, 1), "config": recorded_config(cfg, base, templates),
        "torch": torch.__version__,
        "device": str(device), **result}
    model.seen_classes = list(dict.fromkeys([*base.model.seen_classes, *trained_prompts]))
    model.info = {}

    def write(name: str, checkpoint: Path, metrics: Path) -> dict:
        model.name = f"{snapshot.root.name} {name}"
        summary.update(version=name, checkpoint=str(checkpoint), total_seconds=round(time.perf_counter() - started, 1))
        save_model(model, checkpoint, info={"finetune": summary})
        atomic_write_json(metrics, summary)
        return {"base": base.name, "alpha": summary["alpha"], "train_images": len(train_rels),
                "held_out_images": len(held_rels),
                "held_out": {"mIoU_before": result["before"]["mIoU"], "mIoU_after": result["after"]["mIoU"],
                             "pixels_to_change_before": result["before"]["pixels_to_change_per_image"],
                             "pixels_to_change_after": result["after"]["pixels_to_change_per_image"]}}

    summary["activated"] = opts.activate
    summary["index_entry"] = add_version(models_dir(snapshot.data_dir), write, activate=opts.activate)
    for leftover in (run.state, run.model, plan_path):  # done: the next fine-tune starts afresh
        leftover.unlink(missing_ok=True)
    return summary


METRIC_WORDS = {"decided_accuracy": "share of person-decided pixels pre-labelled right", "mIoU": "mIoU"}


def alpha_rule_text(opts: FinetuneOptions) -> str:
    """How α was chosen, in words: 'the smallest α whose share of person-decided pixels pre-labelled
    right on the held-out images is within 1 point of the best'."""
    points = 100 * opts.alpha_tolerance
    unit = "point" if points == 1 else "points"
    what = METRIC_WORDS.get(opts.alpha_metric, opts.alpha_metric)
    return f"the smallest α whose {what} on the held-out images is within {points:g} {unit} of the best"


def _blend_and_measure(opts: FinetuneOptions, base: BaseModel, model, held_items, prompts, names,
                       progress: Progress, device: str) -> dict[str, Any]:
    """Measure the base and each blend on the held-out images; leave ``model`` at the chosen blend."""
    tuned = {k: v.detach().to("cpu", copy=True) for k, v in model.encoder.state_dict().items()}
    if base.weights is None:
        grid = [1.0]
    else:
        grid = [float(opts.alpha)] if opts.alpha is not None else list(ALPHA_GRID)
    progress.stage("evaluate", len(held_items) * (1 + sum(a != 0.0 for a in grid)))
    tick = progress.update
    segmenter = held_out_segmenter(model, device)
    if base.weights is not None:
        model.encoder.load_state_dict(base.weights)
        before = evaluate_held_out(segmenter, held_items, prompts, names, tick)
    else:
        before = evaluate_held_out(held_out_segmenter(base.reference, device), held_items, prompts, names, tick)
    scores: dict[float, dict] = {}
    for alpha in grid:
        if alpha == 0.0:
            scores[alpha] = before
            continue
        model.encoder.load_state_dict(tuned if base.weights is None else blend(base.weights, tuned, alpha))
        scores[alpha] = evaluate_held_out(segmenter, held_items, prompts, names, tick)
    progress.close()
    if base.weights is None:
        chosen = 1.0
    elif opts.alpha is not None:
        chosen = float(opts.alpha)
    else:
        chosen = choose_alpha({a: s[opts.alpha_metric] for a, s in scores.items()}, opts.alpha_tolerance)
    model.place(torch.device("cpu"), torch.float32)  # evaluation may have cast it to bf16
    model.encoder.load_state_dict(tuned if base.weights is None else blend(base.weights, tuned, chosen))
    rule = ("forced with --alpha" if opts.alpha is not None and base.weights is not None else
            "no trained base to blend with" if base.weights is None else alpha_rule_text(opts))
    return {"alpha": chosen, "alpha_rule": rule,
            "alpha_grid": {str(a): {k: s[k] for k in ("mIoU", "decided_accuracy", "pixels_to_change_per_image")}
                           for a, s in scores.items()},
            "before": before, "after": scores[chosen]}
