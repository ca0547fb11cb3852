"""Inductive zero-shot training of Chimera-Seg (PAPER.md §1-5).

Seen-class CE on cosine logits + Selective Global Distillation (frozen full CLIP teacher on the same
augmented crop) + Semantic Alignment. Only the *seen* class names are ever embedded here: unseen
pixels are relabelled to ignore by the data stream and unseen names never reach this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from chimera_engine import distributed
from chimera_engine.chimera.model import ChimeraConfig, preset
from chimera_engine.devices import resolve_device
from chimera_engine.models import SegmentationModel, chimera_model, load_model
from chimera_engine.text import TextEncoder
from chimera_engine.tiling import InferenceConfig
from chimera_trainer import losses
from chimera_trainer.config import TrainConfig
from chimera_trainer.data.datasets import DatasetInfo, twin_paths
from chimera_trainer.optim import make_optimizer
from chimera_trainer.run_state import RunDir
from chimera_trainer.train_data import ZeroShotTrainSet, train_loader


def build_model(cfg: TrainConfig, info: DatasetInfo) -> SegmentationModel:
    body = dataclasses.replace(preset(cfg.body), pretrained_backbone=cfg.pretrained_backbone,
                               **cfg.body_overrides)
    model_cfg = ChimeraConfig(body=body, clip=cfg.clip, head=cfg.head, csh_depth=cfg.csh_depth, tau=cfg.tau,
                              token_stride=cfg.token_stride,
                              templates=cfg.prompt_templates, seen_classes=list(info.seen))
    model = chimera_model(model_cfg, name=f"chimera-seg {cfg.dataset}")
    model.inference = InferenceConfig(cfg.eval_short_side, cfg.eval_window, cfg.eval_stride)
    model.background = [info.background] if info.background else []  # trained: the default background prompt
    return model


def teacher_embeddings(clip: torch.nn.Module, images: torch.Tensor, size: int) -> torch.Tensor:
    """Unit CLIP image embeddings ``B x C`` of the (CLIP-normalised) crops, resized to ``size``."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return F.normalize(clip.encode_image(images).float(), dim=-1)


def _freeze_batchnorm(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag so the loop can save a checkpoint before it stops."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, *_):
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _global_mean_count(count: torch.Tensor, world_size: int) -> torch.Tensor:
    """Count over all processes / processes: dividing a local sum by it and letting DDP average the
    gradients gives the mean over every process's items."""
    count = count.detach().float()
    if world_size > 1:
        torch.distributed.all_reduce(count)
        count = count / world_size
    return count.clamp(min=1.0)


class TrainedNet(torch.nn.Module):
    """What the optimiser updates: the model's encoder and, with ``aux_weight``, a closed-set 1x1
    classifier over the seen classes on the body's own features. The classifier is a training aid
    (deep supervision, like mmseg's auxiliary heads; not in the paper): it asks the body to tell the
    seen classes apart before CLIP's blocks see its features, and it never reaches the checkpoint.
    Forward: images → (unit features, auxiliary logits or None)."""

    def __init__(self, encoder: torch.nn.Module, seen_classes: int, auxiliary: bool):
        super().__init__()
        self.encoder = encoder
        self.auxiliary = torch.nn.Conv2d(encoder.body.out_channels, seen_classes, 1) if auxiliary else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.auxiliary is None:
            return self.encoder(images), None
        features, body = self.encoder.forward_with_body(images)
        return features, self.auxiliary(body)

    def auxiliary_state(self) -> dict[str, torch.Tensor]:
        return {} if self.auxiliary is None else self.auxiliary.state_dict()


class _Step:
    """One optimisation step: micro-batches, the losses, backward, optimizer and schedule."""

    def __init__(self, cfg: TrainConfig, trained: TrainedNet, net, clip, text: torch.Tensor, optimizer, scheduler,
                 device, world_size: int, ce_weight: torch.Tensor | None = None):
        self.cfg, self.trained, self.net, self.clip, self.text, self.ce_weight = cfg, trained, net, clip, text, ce_weight
        self.optimizer, self.scheduler, self.device, self.world_size = optimizer, scheduler, device, world_size
        self.teacher_size = cfg.teacher_size or clip.visual.image_size[0]
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        use_scaler = self.amp_dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.teacher_seconds = 0.0  # time in the frozen teacher during the last step

    def _synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()

    def _teacher(self, images: torch.Tensor) -> torch.Tensor:
        self._synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            teacher = teacher_embeddings(self.clip, images, self.teacher_size)
        self._synchronize()
        self.teacher_seconds += time.perf_counter() - started
        return teacher

    def _losses(self, images, labels, ratio: float, twins=None) -> dict[str, tuple[float, torch.Tensor]]:
        cfg = self.cfg
        features, auxiliary = self.net(images)
        logits = torch.einsum("bchw,kc->bkhw", features.float(), self.text) / cfg.tau
        terms = {"ce": (1.0, losses.seen_cross_entropy(logits, labels, self.ce_weight))}
        if auxiliary is not None:
            terms["aux"] = (cfg.aux_weight, losses.seen_cross_entropy(auxiliary, labels, self.ce_weight))
        if cfg.sgd_weight or cfg.twin_weight:
            teacher = self._teacher(images)
        if cfg.sgd_weight:
            terms["sgd"] = (cfg.sgd_weight, losses.selective_global_distillation(
                features, teacher, ratio, cfg.sgd_selection, cfg.sgd_loss, cfg.sgd_infonce_tau))
        if cfg.twin_weight:
            # All of an image's twins redraw the same shape, so the first marks its region.
            region = losses.changed_region(images, twins[:, 0], features.shape[-2:]) if cfg.twin_pool == "changed" else None
            twin_teacher = self._teacher(twins.flatten(0, 1)).unflatten(0, twins.shape[:2])  # B x K x C
            terms["twin"] = (cfg.twin_weight, losses.twin_contrast(features, teacher, twin_teacher, cfg.twin_tau, region))
        if cfg.sam_weight:
            terms["sam"] = (cfg.sam_weight, losses.semantic_alignment(features, labels, self.text, cfg.sam_tau))
        return terms

    def __call__(self, loader, ratio: float) -> dict[str, float]:
        cfg, parts = self.cfg, {}
        self.teacher_seconds = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(cfg.accumulation):
            images, labels, *twins = (t.to(self.device, non_blocking=True) for t in next(loader))
            last = micro == cfg.accumulation - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.net.no_sync()
            with sync, self._autocast():
                loss = 0.0
                for name, (weight, (total, count)) in self._losses(images, labels, ratio, *twins).items():
                    value = total / _global_mean_count(count, self.world_size)
                    parts[name] = parts.get(name, 0.0) + float(value.detach()) / cfg.accumulation
                    loss = loss + weight * value
                loss = loss / cfg.accumulation
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return parts

    def resumable_state(self) -> dict:
        """What a run saves beside the model to resume this step exactly (``RunDir.save``)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "auxiliary": self.trained.auxiliary_state()}


def per_process_batch(cfg: TrainConfig, world_size: int) -> int:
    """Images per process and step: the global batch split over processes and accumulation steps."""
    per_process = cfg.batch_size // (world_size * cfg.accumulation)
    if per_process < 1 or per_process * world_size * cfg.accumulation != cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world_size} processes "
                         f"x {cfg.accumulation} accumulation steps")
    return per_process


def prepare_steps(model: SegmentationModel, cfg: TrainConfig, clip: torch.nn.Module, text: torch.Tensor,
                  device: torch.device, world_size: int, run: RunDir, resume: bool,
                  ce_weight: torch.Tensor | None = None) -> tuple["_Step", int]:
    """Optimizer, schedule, (DDP and SyncBatchNorm on GPUs) and the training step for
    ``model.encoder`` (and the auxiliary classifier, with ``aux_weight``), restored from ``run`` when
    ``resume``; returns the step and where it resumes."""
    if world_size > 1 and device.type == "cuda":  # batch statistics over the global batch
        model.encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.encoder)
    trained = TrainedNet(model.encoder, text.shape[0], cfg.aux_weight > 0).to(device)
    optimizer, scheduler = make_optimizer(trained, cfg.lr, cfg.head_lr_mult, cfg.weight_decay, cfg.iterations,
                                          cfg.warmup_iterations, cfg.poly_power)
    net = DistributedDataParallel(trained) if world_size > 1 else trained
    step_fn = _Step(cfg, trained, net, clip, text.to(device), optimizer, scheduler, device, world_size,
                    None if ce_weight is None else ce_weight.to(device))
    if not resume:
        return step_fn, 0
    state = run.load_state()
    try:
        if trained.auxiliary is not None:
            trained.auxiliary.load_state_dict(state["auxiliary"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if step_fn.scaler is not None and state["scaler"]:
            step_fn.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise run.damaged(f"it does not fit this model and config: {exc}") from exc
    return step_fn, int(state["step"])

def train(cfg: TrainConfig, run_dir: str, base_dataset, info: DatasetInfo, device: str = "auto",
          fresh: bool = False, show_progress: bool = True, stop_after: int | None = None) -> SegmentationModel:
    """Run (or resume) training in ``run_dir``; returns the trained model. ``stop_after`` ends this
    call after that many iterations (to test resuming)."""
    twins = twin_paths(base_dataset, cfg.twin_count) if cfg.twin_weight else None  # refused before any work
    context = distributed.start(device)
    run = RunDir(run_dir)
    dev = resolve_device(context.device)[0]
    resume = run.has_state() and not fresh
    # The seed draws the new model's weights (and random-token SGD's picks) as it draws the data order,
    # so one config trains one model: the same in every process, whatever ran before in this one.
    torch.manual_seed(cfg.seed)
    model = load_model(run.model) if resume else build_model(cfg, info)
    encoder, clip = model.encoder.to(dev), model.clip.to(dev).eval()
    text = TextEncoder(clip, model.templates).encode(list(info.seen)).to(dev)  # seen names only

    per_process = per_process_batch(cfg, context.world_size)
    ce_weight = None
    if info.background and cfg.background_weight != 1.0:  # background's share of the per-pixel CE
        ce_weight = torch.ones(len(info.seen))
        ce_weight[info.seen.index(info.background)] = cfg.background_weight
    step_fn, step = prepare_steps(model, cfg, clip, text, dev, context.world_size, run, resume, ce_weight)
    encoder = model.encoder  # SyncBatchNorm may have replaced it
    if not resume and context.is_main:
        run.write_config(cfg.to_dict())
        run.metrics.unlink(missing_ok=True)

    train_set = ZeroShotTrainSet(base_dataset, info, cfg.crop_size, model.mean, model.std,
                                 cfg.resize_scale, cfg.resize_ratio, twins)
    loader = iter(train_loader(train_set, per_process, cfg.workers, cfg.seed, context.rank, context.world_size,
                               start=step * cfg.batch_size))
    summary = {"dataset": cfg.dataset, "seen_classes": list(info.seen), "train_images": len(train_set)}
    end = cfg.iterations if stop_after is None else min(cfg.iterations, step + stop_after)
    bar = distributed.progress(cfg.iterations, enabled=context.is_main and show_progress, unit="it")
    with _Interrupt() as interrupt, bar as progress:
        progress.update(step)
        while step < end and not interrupt.requested:
            encoder.train()
            if cfg.freeze_bn:
                _freeze_batchnorm(encoder)
            started = time.perf_counter()
            ratio = losses.keep_ratio(step, cfg.iterations, cfg.sgd_ratio_start, cfg.sgd_ratio_end, cfg.sgd_schedule)
            parts = step_fn(loader, ratio)
            seconds = time.perf_counter() - started
            step += 1
            progress.update(1)
            if context.is_main and (step % cfg.log_every == 0 or step == end):
                record = {"iter": step, "lr": step_fn.optimizer.param_groups[0]["lr"], "keep_ratio": round(ratio, 4),
                          **{k: round(v, 5) for k, v in parts.items()},
                          "images_per_s": round(cfg.batch_size / seconds, 2),
                          "teacher_share": round(step_fn.teacher_seconds / seconds, 3)}
                run.log(record)
                if hasattr(progress, "set_postfix"):
                    progress.set_postfix(loss=f"{sum(parts.values()):.3f}", lr=f"{record['lr']:.2e}")
            if context.is_main and (step % cfg.checkpoint_every == 0 or step == end or interrupt.requested):
                run.save(model, step, step_fn.resumable_state(), {**summary, "config": cfg.to_dict()},
                         keep_copy=step % cfg.checkpoint_every == 0)
    if context.is_main and interrupt.requested:
        print(f"interrupted at iteration {step}; checkpoint saved in {run.path} — run the same command to resume")
    context.close()
    encoder.eval()
    return model
