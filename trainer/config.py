"""Training configuration: every [choice] of PAPER.md is a field here with the paper's default.

A run is described by one ``TrainConfig``; ``--config FILE`` (JSON) and ``--set key=value`` overrides
on the command line change it, and the resolved config is stored in every checkpoint and in
``RUN_DIR/config.json`` so a run can be reproduced and resumed exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class TrainConfig:
    # data
    dataset: str = "voc"  # voc | coco-stuff | shapes
    data_root: str = ""
    crop_size: int = 512
    resize_scale: tuple[int, int] = (2048, 512)
    resize_ratio: tuple[float, float] = (0.5, 2.0)
    workers: int = 4
    # model [PAPER.md §2]
    clip: str = "ViT-B-16/openai"
    body: str = "r101"  # preset name (engine.chimera.model.PRESETS)
    body_overrides: dict = dataclasses.field(default_factory=dict)  # BodyConfig fields, e.g. {"dropout": 0}
    pretrained_backbone: bool = True  # ImageNet weights for the body (downloads through timm)
    head: str = "csh"  # csh | linear (ablation: no CSH)
    csh_depth: int = 2
    tau: float = 0.07
    templates: str = ""  # "" = the dataset's protocol: single for VOC and shapes, zegclip15 for COCO-Stuff
    freeze_bn: bool = False  # BatchNorm in eval mode (for tiny per-process batches / CPU DDP)
    # losses [PAPER.md §3-4]
    sgd_weight: float = 1.0  # 0 = no Selective Global Distillation
    sgd_ratio_start: float = 1.0
    sgd_ratio_end: float = 0.1  # = sgd_ratio_start for "SGD without shrinking"
    sgd_schedule: str = "linear"  # linear | cosine
    sgd_selection: str = "topk"  # topk | random (ablation)
    sgd_loss: str = "cosine"  # cosine | infonce
    sgd_infonce_tau: float = 0.07
    teacher_size: int = 0  # input size of the CLIP teacher; 0 = CLIP's native size
    sam_weight: float = 1.0  # 0 = no Semantic Alignment Module
    sam_tau: float = 0.07
    # optimisation [PAPER.md §5]
    iterations: int = 20000
    batch_size: int = 16  # global: per-process batch x processes x accumulation
    accumulation: int = 1
    lr: float = 6e-5
    head_lr_mult: float = 10.0  # adapter / ASPP / decoder learn 10x faster than the backbone
    weight_decay: float = 0.01
    warmup_iterations: int = 1500
    poly_power: float = 1.0
    amp: str = "bf16"  # bf16 | fp16 | none
    # evaluation / inference [PAPER.md §5]
    eval_short_side: int = 512
    eval_window: int = 512
    eval_stride: int = 426
    calibration: float = 0.0
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 2000
    log_every: int = 20
    eval_every: int = 0  # 0 = only at the end

    def __post_init__(self):
        self.resize_scale = tuple(self.resize_scale)
        self.resize_ratio = tuple(self.resize_ratio)
        choices = {"dataset": ("voc", "coco-stuff", "shapes"), "head": ("csh", "linear"),
                   "sgd_schedule": ("linear", "cosine"), "sgd_selection": ("topk", "random"),
                   "sgd_loss": ("cosine", "infonce"), "amp": ("bf16", "fp16", "none")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.batch_size < 1 or self.accumulation < 1 or self.iterations < 1:
            raise ValueError("batch_size, accumulation and iterations must be positive")
        if not 0 < self.sgd_ratio_end <= 1 or not 0 < self.sgd_ratio_start <= 1:
            raise ValueError("SGD keep ratios must lie in (0, 1]")

    @property
    def prompt_templates(self) -> str:
        return self.templates or ("zegclip15" if self.dataset == "coco-stuff" else "single")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def override(self, assignments: list[str]) -> "TrainConfig":
        """Apply ``key=value`` strings; values are parsed as JSON when they can be (``0.1``, ``true``)."""
        data = self.to_dict()
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in data:
                raise ValueError(f"cannot apply {item!r}: expected key=value with a known key")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            data[key] = value
        return TrainConfig.from_dict(data)


# Ready-made settings per dataset; the command line overrides them.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "voc": {"iterations": 20000},
    "coco-stuff": {"iterations": 80000},
    "shapes": {"crop_size": 64, "resize_scale": (128, 64), "clip": "shapes-tiny/bundled:shapes-clip", "body": "shapes",
               "pretrained_backbone": False, "iterations": 8000, "batch_size": 16, "lr": 1e-3, "head_lr_mult": 1.0,
               "warmup_iterations": 100, "amp": "none", "eval_short_side": 128, "eval_window": 128,
               "eval_stride": 96, "checkpoint_every": 500, "workers": 2},
}
