"""The fine-tuning loop: zss's training step (seen-class CE + SGD + SAM) on a project's verified pixels.

The step itself is ``chimera_trainer.zss._Step`` (the same losses, autocast, gradient accumulation and DDP
normalisation as the paper's training), the data stream is ``chimera_trainer.train_data`` (deterministic per
position, so a resumed run and a run on N ``torchrun`` processes see the same crops), and the run
folder is ``chimera_trainer.run_state.RunDir`` (model + optimizer state; Ctrl-C saves first). Only the body
and the CSH adapter learn: CLIP's text tower is not part of the encoder, and the CSH's CLIP tail and
projection are frozen parameters (``requires_grad=False``) that no optimizer ever sees.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch

from chimera_engine.models import SegmentationModel
from chimera_engine.threads import ThreadBudget
from chimera_trainer import losses
from chimera_trainer.config import TrainConfig
from chimera_trainer.data.datasets import DatasetInfo
from chimera_trainer.data.transforms import resize_label
from chimera_trainer.project_data import VerifiedImage
from chimera_trainer.run_state import RunDir
from chimera_trainer.train_data import ZeroShotTrainSet, train_loader
from chimera_trainer.zss import _freeze_batchnorm, _Interrupt, per_process_batch, prepare_steps


class VerifiedTrainSet(torch.utils.data.Dataset):
    """``dict(image, label)`` of the training images (label = class index, 255 = ignore), each
    downscaled once so its short side is at most ``max_short_side``: the augmentation never asks
    for more (its resize depends only on the target scale, not on the stored size), and a project
    of photos then fits in memory."""

    def __init__(self, items: Sequence[VerifiedImage], max_short_side: int):
        self.samples = [_downscale(item.image, item.target, max_short_side) for item in items]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        image, label = self.samples[index]
        return {"image": image, "label": label}


def _downscale(image: np.ndarray, label: np.ndarray, max_short_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = label.shape
    factor = max_short_side / min(h, w)
    if factor >= 1:
        return image, label
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), resize_label(label, size)


def training_stream(items: Sequence[VerifiedImage], prompts: Sequence[str], cfg: TrainConfig,
                    model: SegmentationModel) -> ZeroShotTrainSet:
    """The augmented crops of PAPER.md §5 over the verified images; every class is "seen"."""
    max_short = int(max(cfg.resize_scale) * cfg.resize_ratio[1]) + 1
    info = DatasetInfo("project", list(prompts))
    return ZeroShotTrainSet(VerifiedTrainSet(items, max_short), info, cfg.crop_size, model.mean, model.std,
                            cfg.resize_scale, cfg.resize_ratio)


@dataclasses.dataclass
class LoopResult:
    step: int
    interrupted: bool
    seconds: float  # time spent in training steps during this call


def train_steps(model: SegmentationModel, cfg: TrainConfig, text: torch.Tensor, train_set: ZeroShotTrainSet,
                run: RunDir, device: torch.device, rank: int, world_size: int, resume: bool,
                save_info: dict, on_start: Callable[[int], None] = lambda step: None,
                on_step: Callable[[int], None] = lambda step: None,
                stop_after: int | None = None) -> LoopResult:
    """Train ``model.encoder`` in place for ``cfg.iterations`` steps (or ``stop_after`` more),
    resuming from ``run`` when ``resume``; rank 0 saves the run at checkpoints, at the end and on
    Ctrl-C / SIGTERM."""
    model.encoder.to(device)
    clip = model.clip.to(device).eval()
    per_process = per_process_batch(cfg, world_size)
    step_fn, step = prepare_steps(model, cfg, clip, text, device, world_size, run, resume)
    encoder = model.encoder  # SyncBatchNorm may have replaced it
    on_start(step)
    loader = iter(train_loader(train_set, per_process, cfg.workers, cfg.seed, rank, world_size,
                               start=step * cfg.batch_size))
    end = cfg.iterations if stop_after is None else min(cfg.iterations, step + stop_after)
    # On a shared CPU, torch threads fighting other processes for cores run ~10x slower than one
    # thread alone (chimera_engine.threads): take only the cores others leave free, decided per step.
    budget = ThreadBudget() if device.type == "cpu" else None
    spent = 0.0
    with _Interrupt() as interrupt:
        while step < end and not interrupt.requested:
            encoder.train()
            if cfg.freeze_bn:
                _freeze_batchnorm(encoder)
            if budget is not None:
                budget.threads()
            started = time.perf_counter()
            ratio = losses.keep_ratio(step, cfg.iterations, cfg.sgd_ratio_start, cfg.sgd_ratio_end, cfg.sgd_schedule)
            parts = step_fn(loader, ratio)
            seconds = time.perf_counter() - started
            spent += seconds
            step += 1
            on_step(step)
            if rank == 0 and (step % cfg.log_every == 0 or step == end):
                run.log({"iter": step, "lr": step_fn.optimizer.param_groups[0]["lr"], "keep_ratio": round(ratio, 4),
                         **{k: round(v, 5) for k, v in parts.items()},
                         "images_per_s": round(cfg.batch_size / seconds, 2)})
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == end or interrupt.requested):
                run.save(model, step, step_fn.resumable_state(), save_info, keep_copy=False)
    encoder.eval()
    return LoopResult(step, interrupt.requested, spent)
