"""Training configuration: every [choice] of PAPER.md is a field here with the paper's default.

Every field is type- and range-checked (``FIELD_RULES``) when a config is made, whether from code,
a ``--config`` file or ``--set``: a bad value is a ``ConfigError`` naming the field, never a crash
later in training. A run is described by one ``TrainConfig``; ``--config FILE`` (JSON) and ``--set key=value`` overrides
on the command line change it, and the resolved config is stored in every checkpoint and in
``RUN_DIR/config.json`` so a run can be reproduced and resumed exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from chimera_engine.errors import ChimeraError
from chimera_trainer.shapes.world import MAX_TWINS

MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ChimeraError, ValueError):
    """A config file, a --set value or a config field is unusable; says which and why."""


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
    body: str = "r101"  # preset name (chimera_engine.chimera.model.PRESETS)
    body_overrides: dict = dataclasses.field(default_factory=dict)  # BodyConfig fields, e.g. {"dropout": 0}
    pretrained_backbone: bool = True  # ImageNet weights for the body (downloads through timm)
    head: str = "csh"  # csh | linear (ablation: no CSH)
    csh_depth: int = 2
    token_stride: int = 0  # pixels per head token; 0 = CLIP's patch size (the paper)
    tau: float = 0.07
    templates: str = ""  # "" = the dataset's protocol: single for VOC and shapes, zegclip15 for COCO-Stuff
    freeze_bn: bool = False  # BatchNorm in eval mode (for tiny per-process batches / CPU DDP)
    # losses [PAPER.md §3-4]
    sgd_weight: float = 1.0  # 0 = no Selective Global Distillation
    sgd_ratio_start: float = 1.0
    sgd_ratio_end: float = 0.1  # = sgd_ratio_start for "SGD without shrinking"
    sgd_schedule: str = "linear"  # linear | cosine
    sgd_selection: str = "topk"  # topk | random (ablation)
    sgd_loss: str = "cosine"  # cosine | centered (around the batch's mean teacher; ours) | infonce
    sgd_infonce_tau: float = 0.07
    twin_weight: float = 0.0  # SGD's twin contrast (ours; shapes datasets written with twins); 0 = none
    twin_tau: float = 0.07
    twin_pool: str = "image"  # image: the mean of all tokens | changed: of the redrawn shape's tokens only
    twin_count: int = 1  # twins per image in the contrast (the same shape redrawn as this many other classes)
    teacher_size: int = 0  # input size of the CLIP teacher; 0 = CLIP's native size
    sam_weight: float = 1.0  # 0 = no Semantic Alignment Module
    sam_tau: float = 0.07
    background_weight: float = 1.0  # CE weight of a dataset's background class (shapes: most pixels)
    aux_weight: float = 0.0  # CE of a closed-set 1x1 classifier on the body's features; 0 = none (the paper)
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
        # Plain type/range checks first: a bad number is reported before the checks that import
        # the model code (body presets, template files) cost seconds.
        fields = sorted(dataclasses.fields(self), key=lambda f: f.name in _NEEDS_MODEL_CODE)
        for field in fields:
            setattr(self, field.name, _check_field(field.name, getattr(self, field.name)))
        if self.eval_stride > self.eval_window:
            raise ConfigError(f"eval_stride ({self.eval_stride}) must not exceed eval_window ({self.eval_window})")
        if self.resize_ratio[0] > self.resize_ratio[1]:
            raise ConfigError(f"resize_ratio must be (low, high), got {list(self.resize_ratio)}")

    @property
    def prompt_templates(self) -> str:
        return self.templates or ("zegclip15" if self.dataset == "coco-stuff" else "single")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object of TrainConfig keys, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_config_file(path))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default as a JSON-like dict, without building (or validating) a config."""
        out = {}
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def override(self, assignments: list[str]) -> "TrainConfig":
        """Apply ``key=value`` strings (see ``apply_overrides``) and validate the result."""
        return TrainConfig.from_dict(apply_overrides(self.to_dict(), assignments))


def apply_overrides(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``data`` with ``key=value`` strings applied. Values are JSON (``0.1``, ``true``, ``[128, 64]``),
    except for text fields, which take the text as it is (``--set clip=ViT-B-16/openai``)."""
    data = dict(data)
    text_fields = {name for name, (kind, *_rest) in FIELD_RULES.items() if kind in ("str", "choice")}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELD_RULES:
            raise ConfigError(f"cannot apply --set {item!r}: expected KEY=VALUE with a known key "
                              f"(known: {', '.join(sorted(FIELD_RULES))})")
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            value = raw
        if key in text_fields and not isinstance(value, str):
            value = raw.strip()
        data[key] = value
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A ``--config`` file as a dict; ConfigError for a missing, unreadable, huge or non-JSON file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"the config file {path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {path} must hold a JSON object of TrainConfig keys")
    return data


def _check_field(name: str, value: Any, rule: tuple | None = None) -> Any:
    """``value`` normalised (tuples for pairs, floats for numbers) if it obeys ``rule`` (default
    FIELD_RULES[name]); ConfigError naming the field otherwise."""
    kind, *bounds = rule or FIELD_RULES[name]
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a whole number, not {value!r}")
        return _in_range(name, value, *bounds)
    if kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, not {value!r}")
        return _in_range(name, float(value), *bounds)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be text, not {value!r}")
        return bounds[0](value) if bounds else value
    if kind == "choice":
        allowed = bounds[0]() if callable(bounds[0]) else bounds[0]
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        return value
    if kind in ("int_pair", "float_pair"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{name} must be a pair of numbers like [2048, 512], not {value!r}")
        item = "int" if kind == "int_pair" else "float"
        return tuple(_check_field(name, v, (item, *bounds)) for v in value)
    if kind == "body_overrides":
        return _check_body_overrides(value)
    raise AssertionError(f"no rule kind {kind!r}")


def _in_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> float:
    if value < low or value > high or (low_open and value == low):
        shown = f"({_number(low)}, {_number(high)}]" if low_open else f"{_number(low)}..{_number(high)}"
        raise ConfigError(f"{name} = {value!r} is outside the allowed range {shown}")
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_clip(value: str) -> str:
    from chimera_engine.model_names import parse_model_name  # the one parser of model names; light

    try:
        parse_model_name(f"clip:{value}")
    except ChimeraError as exc:
        raise ConfigError(f"clip: {exc}") from exc
    return value


def _check_templates(value: str) -> str:
    from chimera_engine.text import load_templates

    if value:
        try:
            load_templates(value)
        except ValueError as exc:
            raise ConfigError(f"templates: {exc}") from exc
    return value


def _check_body_overrides(value: Any) -> dict:
    from chimera_engine.chimera.body import BodyConfig

    if not isinstance(value, dict):
        raise ConfigError(f"body_overrides must be an object of BodyConfig keys, not {value!r}")
    known = {f.name for f in dataclasses.fields(BodyConfig)} - {"backbone", "pretrained_backbone"}
    unknown = sorted(str(k) for k in set(value) - known)
    if unknown:
        raise ConfigError(f"body_overrides: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        BodyConfig(**value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"body_overrides: {exc}") from exc
    for key in ("aspp_channels", "low_level_channels", "decoder_channels"):
        if key in value:
            _check_field(f"body_overrides.{key}", value[key], ("int", 1, 4096))
    if "dropout" in value:
        _check_field("body_overrides.dropout", value["dropout"], ("float", 0.0, 0.99))
    return dict(value)


def _presets() -> tuple[str, ...]:
    from chimera_engine.chimera.model import PRESETS

    return tuple(PRESETS)


_NEEDS_MODEL_CODE = {"clip", "body", "body_overrides", "templates"}  # their checks import torch, open_clip
_BIG = 10**9
# Every TrainConfig field: (kind, bounds...). Ranges are wide (anything a real run could want) but
# exclude what cannot work: a zero crop, a checkpoint every 0 iterations, a non-finite rate.
FIELD_RULES: dict[str, tuple] = {
    "dataset": ("choice", ("voc", "coco-stuff", "shapes")),
    "data_root": ("str",),
    "crop_size": ("int", 16, 4096),
    "resize_scale": ("int_pair", 16, 16384),
    "resize_ratio": ("float_pair", 0.01, 100.0, True),
    "workers": ("int", 0, 256),
    "clip": ("str", _check_clip),
    "body": ("choice", _presets),
    "body_overrides": ("body_overrides",),
    "pretrained_backbone": ("bool",),
    "head": ("choice", ("csh", "linear")),
    "csh_depth": ("int", 0, 128),
    "token_stride": ("int", 0, 256),
    "tau": ("float", 0.0, 10.0, True),
    "templates": ("str", _check_templates),
    "freeze_bn": ("bool",),
    "sgd_weight": ("float", 0.0, 1000.0),
    "sgd_ratio_start": ("float", 0.0, 1.0, True),
    "sgd_ratio_end": ("float", 0.0, 1.0, True),
    "sgd_schedule": ("choice", ("linear", "cosine")),
    "sgd_selection": ("choice", ("topk", "random")),
    "sgd_loss": ("choice", ("cosine", "centered", "infonce")),
    "sgd_infonce_tau": ("float", 0.0, 10.0, True),
    "twin_weight": ("float", 0.0, 1000.0),
    "twin_tau": ("float", 0.0, 10.0, True),
    "twin_pool": ("choice", ("image", "changed")),
    "twin_count": ("int", 1, MAX_TWINS),
    "teacher_size": ("int", 0, 4096),
    "sam_weight": ("float", 0.0, 1000.0),
    "sam_tau": ("float", 0.0, 10.0, True),
    "aux_weight": ("float", 0.0, 1000.0),
    "background_weight": ("float", 0.0, 100.0),
    "iterations": ("int", 1, _BIG),
    "batch_size": ("int", 1, 65536),
    "accumulation": ("int", 1, 65536),
    "lr": ("float", 0.0, 10.0, True),
    "head_lr_mult": ("float", 0.0, 1e4, True),
    "weight_decay": ("float", 0.0, 10.0),
    "warmup_iterations": ("int", 0, _BIG),
    "poly_power": ("float", 0.0, 100.0),
    "amp": ("choice", ("bf16", "fp16", "none")),
    "eval_short_side": ("int", 16, 8192),
    "eval_window": ("int", 16, 8192),
    "eval_stride": ("int", 16, 8192),
    "calibration": ("float", 0.0, 1.0),
    "seed": ("int", 0, 2**63 - 1),
    "checkpoint_every": ("int", 1, _BIG),
    "log_every": ("int", 1, _BIG),
    "eval_every": ("int", 0, _BIG),
}


# Ready-made settings per dataset; the command line overrides them.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "voc": {"iterations": 20000},
    "coco-stuff": {"iterations": 80000},
    # The shapes world is ours, not the paper's: 64 px images whose shapes are 16-35 px wide. The
    # photographs' scale augmentation (0.5-2x, then a crop) shrinks them to 8 px or cuts them apart,
    # and a body trained that way does not learn (measured: 4.9 % seen mIoU closed-set after 1,500
    # iterations, vs 60.6 % at native scale, both with background ignored): here images keep their
    # size (flips and colour only).
    # Body and head grid: ResNet-18 ending at layer3 (preset shapes-r18-l3: 3.4 M body parameters, not
    # 12.2 M; a step costs 0.16 s forward+backward, not 0.36) at 4 px per head token. Trained twice as
    # long as the full ResNet-18 (6,000 iterations, ~59 min here, vs 3,000, ~45 min), it wins where the
    # app is judged: held-out seed 424242 with the app's rule, seen shapes 0.714 vs 0.630, the demo 73.3 %
    # vs 61.7 % of shape pixels right, val hIoU 24.6 vs 21.6 and 12.4 MB vs 30.1 MB; it loses unseen
    # shapes 0.228 vs 0.247 (held-out hIoU 0.348 vs 0.361). At 3,000 iterations it is worse than the
    # full body (held-out hIoU 0.281). benchmarks/results/shapes_body_l3.json.
    # Earlier measurements (full ResNet-18): vs the MobileNetV3 body seen shapes 0.213 vs 0.149 mIoU at the
    # same recipe; the curve (benchmarks/results/shapes_curve.json, lr 1e-3): seen shapes 7.6 / 14.0 /
    # 21.4 / 26.4 / 28.8 / 30.2 % IoU every 500 iterations up to 3,000.
    # Learning rate 2e-3: hIoU 12.6 / 13.6 vs 9.5 / 10.2 at 1e-3 for seeds 0 / 1 at 1,500 iterations
    # (benchmarks/results/shapes_zss_lr2e-3.json); the bundle at 3,000: val hIoU 19.8 vs 16.3.
    # CSH depth 4 (the paper: 2): hIoU 12.1 +- 0.4 vs 9.9 +- 0.3 over three seeds in the ablation table;
    # the bundle at lr 2e-3: val hIoU 21.6 vs 19.8, held-out (app's rule) 36.1 vs 24.8.
    # SGD's twin contrast (twin_weight 1; ours, stop 30): held-out hIoU 48.4 / 49.8 vs 33.6 / 36.1 for the
    # same seed, data and CLIP without it (seed 0), 38.2 / 40.6 vs 31.5 / 35.6 at seed 1 on the older CLIP;
    # heart IoU 0.24 vs 0.02; the shipped two-thread build 50.8 / 51.1 (benchmarks/results/shapes_twin_contrast_paired.json).
    # Six twins per image (twin_count 6; stop 32's one-thread build 58.4 / 59.3, seen 70 / 71, vs 48.4 / 49.8 paired,
    # benchmarks/results/shapes_twin_weight_count_paired.json); the shipped two-thread build (stop 33) 59.4 / 60.7,
    # seen 69.3 / 70.2, the demo unchanged (benchmarks/results/shapes_bundle_twin_count6.json), for a 1.61x
    # costlier training step (35.6 min of stage; benchmarks/results/recipe_step_cost_twins.json). Over training
    # seeds 0-3 it averages 51.5 / 53.2 (one twin, seeds 0-2: 45.6 / 46.6): seed 0 is its best draw (stop 35).
    "shapes": {"crop_size": 64, "resize_scale": (128, 64), "resize_ratio": (1.0, 1.0),
               "clip": "shapes-tiny/bundled:shapes-clip", "body": "shapes-r18-l3", "token_stride": 4, "csh_depth": 4,
               "pretrained_backbone": False,
               "iterations": 6000, "batch_size": 16, "lr": 2e-3, "head_lr_mult": 1.0, "warmup_iterations": 100,
               "amp": "none", "eval_short_side": 64, "eval_window": 64, "eval_stride": 48, "checkpoint_every": 500,
               "workers": 2, "twin_weight": 1.0, "twin_count": 6},
}
