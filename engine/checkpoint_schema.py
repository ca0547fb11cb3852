"""The schema of a checkpoint's JSON config: every field type- and range-checked before use.

A checkpoint is a file someone may have crafted. Its config decides what gets built (a CLIP of some
width, a body on some timm backbone), what is loaded (CLIP weights named by tag or file) and how
scores are scaled; an unchecked field became a traceback (a non-numeric ``format_version``), an
allocation of tens of GB (a CLIP config of width 65536), garbage labels with exit 0 (a NaN
``logit_scale``) or a request to unpickle a ``.pt`` file. ``validate_model_meta`` refuses all of
that with a ``CheckpointError`` naming the field. Sizes a config declares are bounded by
``chimera_engine.limits``; whether the declared model matches the file's tensors is checked on the meta
device by ``chimera_engine.checkpoints.build_to_fit`` before anything real is allocated.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from chimera_engine import limits
from chimera_engine.errors import CheckpointError

__all__ = ["SUPPORTED_KINDS", "validate_format_version", "validate_model_meta", "validate_clip_config"]

SUPPORTED_KINDS = ("dense-clip", "chimera-seg")
_TEMPLATE_SET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_TEMPLATES = 1000
_INFERENCE_KEYS = ("short_side", "window", "stride", "max_long_side")
_MAX_LOGIT_SCALE = 1000.0  # CLIP clamps its own at 100; 1 / tau for tau = 0.001
_MAX_ASPP_RATE = 256  # the paper's largest is 36; padding grows with the rate
# Config keys that make open_clip download or load other files (timm / Hugging Face towers).
_FOREIGN_LOADER_PREFIXES = ("timm_", "hf_")


def _fail(path: Any, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: the checkpoint's config field '{field}' {problem}")


def validate_format_version(value: Any, path: Any, newest: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(path, "format_version", f"must be a whole number >= 1, not {value!r}")
    if value > newest:
        raise CheckpointError(f"{path} was written by a newer Chimera (format {value}); update Chimera to read it")
    return value


def validate_model_meta(meta: dict, path: Any) -> None:
    """Every field ``chimera_engine.models.load_model`` reads; CheckpointError naming the first bad one."""
    kind = meta.get("kind")
    if kind not in SUPPORTED_KINDS:
        raise _fail(path, "kind", f"must be one of {', '.join(SUPPORTED_KINDS)}, not {kind!r}")
    if not isinstance(meta.get("name", ""), str):
        raise _fail(path, "name", "must be a string")
    clip = _dict(meta, "clip", path)
    _validate_clip_section(clip, path)
    scale = meta.get("logit_scale")
    if not limits.is_finite_number(scale) or not 0 < scale <= _MAX_LOGIT_SCALE:
        raise _fail(path, "logit_scale", f"must be a finite number in (0, {_MAX_LOGIT_SCALE:g}], not {scale!r}")
    _validate_templates(meta.get("templates"), path)
    seen = meta.get("seen_classes", [])
    if not isinstance(seen, list) or not all(isinstance(c, str) and c.strip() for c in seen):
        raise _fail(path, "seen_classes", "must be a list of non-empty strings")
    if len(seen) > limits.MAX_CLASSES:
        raise _fail(path, "seen_classes", f"lists {len(seen)} classes, more than the limit of {limits.MAX_CLASSES}")
    background = meta.get("background", [])
    if not isinstance(background, list) or not all(isinstance(c, str) and c.strip() for c in background):
        raise _fail(path, "background", "must be a list of non-empty strings")
    if len(background) > limits.MAX_CLASSES:
        raise _fail(path, "background", f"lists {len(background)} phrases, more than the limit of {limits.MAX_CLASSES}")
    refine = meta.get("refine", 0)
    if isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= limits.MAX_REFINE_STEPS:
        raise _fail(path, "refine", f"must be a whole number of PAMR steps in 0..{limits.MAX_REFINE_STEPS}, not {refine!r}")
    dilations = meta.get("refine_dilations", [1])  # absent: PAMR's own default
    if not isinstance(dilations, list) or not 1 <= len(dilations) <= 4 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= limits.MAX_REFINE_DILATION for d in dilations):
        raise _fail(path, "refine_dilations", f"must be a list of 1 to 4 whole numbers of pixels in "
                                              f"1..{limits.MAX_REFINE_DILATION}, not {dilations!r}")
    _validate_inference(meta.get("inference", {}), path)
    info = meta.get("info", {})
    if not isinstance(info, dict):
        raise _fail(path, "info", "must be an object")
    if kind == "dense-clip":
        _validate_dense_method(info, path)
    else:
        _validate_chimera_section(_dict(meta, "model", path), path)


def validate_clip_config(cfg: Any, path: Any, field: str = "clip.model_cfg") -> None:
    """A stored open_clip config: known keys only (no timm / Hugging Face towers, which would
    download or unpickle), every size within ``chimera_engine.limits.CLIP_CONFIG_LIMITS``."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if not isinstance(cfg, dict):
        raise _fail(path, field, "must be an object")
    allowed_top = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
                   "nonscalar_logit_scale", "custom_text"}
    _known_keys(cfg, allowed_top, path, field)
    if "embed_dim" not in cfg:
        raise _fail(path, field, "has no embed_dim")
    _check_value(cfg["embed_dim"], "embed_dim", path, f"{field}.embed_dim")
    for tower, dataclass_ in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        sub = cfg.get(tower)
        where = f"{field}.{tower}"
        if not isinstance(sub, dict):
            raise _fail(path, where, "must be an object")
        allowed = {f.name for f in dataclasses.fields(dataclass_)
                   if not f.name.startswith(_FOREIGN_LOADER_PREFIXES)} | {"output_dim"}
        _known_keys(sub, allowed, path, where)
        for key, value in sub.items():
            _check_value(value, key, path, f"{where}.{key}")
    for key in ("init_logit_scale", "init_logit_bias"):
        if cfg.get(key) is not None and not limits.is_finite_number(cfg[key]):
            raise _fail(path, f"{field}.{key}", f"must be a finite number, not {cfg[key]!r}")


def _validate_clip_section(clip: dict, path: Any) -> None:
    from chimera_engine.clip_loading import ClipSpec
    from chimera_engine.errors import ModelNameError

    spec_text = clip.get("spec")
    if not isinstance(spec_text, str):
        raise _fail(path, "clip.spec", f"must be a string like 'ViT-B-16/openai', not {spec_text!r}")
    try:
        spec = ClipSpec.parse(spec_text)
    except ModelNameError as exc:
        raise _fail(path, "clip.spec", f"is unreadable ({exc})") from exc
    embedded = clip.get("embedded")
    if not isinstance(embedded, bool):
        raise _fail(path, "clip.embedded", f"must be true or false, not {embedded!r}")
    if not embedded and spec.is_file and not spec.weights.startswith("bundled:") \
            and not spec.weights.lower().endswith(".safetensors"):
        raise _fail(path, "clip.spec", f"names the weights file '{spec.weights}': a checkpoint may only point to "
                                       ".safetensors weights (Chimera never unpickles a file a checkpoint names)")
    validate_clip_config(clip.get("model_cfg"), path)
    for key in ("mean", "std"):
        values = clip.get(key)
        if (not isinstance(values, list) or len(values) != 3
                or not all(limits.is_finite_number(v) for v in values)):
            raise _fail(path, f"clip.{key}", f"must be 3 finite numbers, not {values!r}")
    if not all(0 < v <= 1000 for v in clip["std"]):
        raise _fail(path, "clip.std", f"must be positive, not {clip['std']!r}")


def _validate_templates(templates: Any, path: Any) -> None:
    from chimera_engine.text import load_templates

    if isinstance(templates, str):
        if not _TEMPLATE_SET_NAME.match(templates):
            raise _fail(path, "templates", f"must name a template set (letters, digits, - and _), not {templates!r}")
    elif isinstance(templates, list):
        if not templates or len(templates) > _MAX_TEMPLATES or not all(isinstance(t, str) for t in templates):
            raise _fail(path, "templates", f"must be 1..{_MAX_TEMPLATES} strings")
        for template in templates:
            try:
                ok = template.count("{}") == 1 and isinstance(template.format("x"), str)
            except (IndexError, KeyError, ValueError):
                ok = False
            if not ok:
                raise _fail(path, "templates", f"holds {template!r}, which does not contain exactly one '{{}}' "
                                               "for the class name (and no other braces)")
    else:
        raise _fail(path, "templates", f"must be a template set name or a list of templates, not {templates!r}")
    try:
        load_templates(templates)
    except ValueError as exc:
        raise _fail(path, "templates", f"is unusable ({exc})") from exc


def _validate_inference(inference: Any, path: Any) -> None:
    if not isinstance(inference, dict):
        raise _fail(path, "inference", "must be an object")
    _known_keys(inference, set(_INFERENCE_KEYS), path, "inference")
    for key, value in inference.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= limits.MAX_INFERENCE_SIDE:
            raise _fail(path, f"inference.{key}", f"must be a whole number of pixels in 16..{limits.MAX_INFERENCE_SIDE}, "
                                                  f"not {value!r}")


def _validate_dense_method(info: dict, path: Any) -> None:
    from chimera_engine import last_block

    if "last_block" in info and not isinstance(info["last_block"], str):
        raise _fail(path, "info.last_block", f"must be a string, not {info['last_block']!r}")
    if "method" in info:
        try:
            last_block.method(info["method"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise _fail(path, "info.method", f"is not a known dense-CLIP method ({info['method']!r})") from exc


def _validate_chimera_section(model: dict, path: Any) -> None:
    tau = model.get("tau", 0.07)
    if not limits.is_finite_number(tau) or not 1e-3 <= tau <= 10:
        raise _fail(path, "model.tau", f"must be a finite number in [0.001, 10], not {tau!r}")
    depth = model.get("csh_depth", 2)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= limits.CLIP_CONFIG_LIMITS["layers"][1]:
        raise _fail(path, "model.csh_depth", f"must be a whole number of blocks, not {depth!r}")
    for key in ("templates", "seen_classes", "clip"):
        if key in model and not isinstance(model[key], (str, list)):
            raise _fail(path, f"model.{key}", "has the wrong type")
    body = model.get("body", {})
    if not isinstance(body, dict):
        raise _fail(path, "model.body", "must be an object")
    if not isinstance(body.get("backbone", "resnet101"), str):
        raise _fail(path, "model.body.backbone", "must be a timm model name")
    rates = body.get("aspp_rates")
    if rates is not None and (not isinstance(rates, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= _MAX_ASPP_RATE for r in rates)):
        raise _fail(path, "model.body.aspp_rates", f"must be whole numbers in 1..{_MAX_ASPP_RATE}, not {rates!r}")
    if not isinstance(body.get("truncate", False), bool):
        raise _fail(path, "model.body.truncate", "must be true or false")
    dropout = body.get("dropout", 0.1)
    if not limits.is_finite_number(dropout) or not 0 <= dropout < 1:
        raise _fail(path, "model.body.dropout", f"must be a number in [0, 1), not {dropout!r}")
    for key in ("output_stride", "aspp_channels", "low_level_channels", "decoder_channels"):
        value = body.get(key, 8)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8192:
            raise _fail(path, f"model.body.{key}", f"must be a whole number in 1..8192, not {value!r}")


def _dict(meta: dict, key: str, path: Any) -> dict:
    value = meta.get(key)
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be an object, not {type(value).__name__}")
    return value


def _known_keys(data: dict, allowed: set[str], path: Any, field: str) -> None:
    unknown = sorted(str(k) for k in set(data) - allowed)
    if unknown:
        raise _fail(path, field, f"has keys Chimera does not accept: {', '.join(unknown)}")


def _check_value(value: Any, key: str, path: Any, where: str) -> None:
    """Sizes within CLIP_CONFIG_LIMITS (a size may be a pair, e.g. image_size [h, w]); other values
    plain JSON scalars or small objects of them (act_kwargs), numbers finite."""
    if key in limits.CLIP_CONFIG_LIMITS:
        low, high = limits.CLIP_CONFIG_LIMITS[key]
        items = value if isinstance(value, list) and len(value) == 2 else [value]
        for item in items:
            if not isinstance(item, int) or isinstance(item, bool) or not low <= item <= high:
                raise _fail(path, where, f"must be a whole number in {low}..{high}, not {value!r}")
        return
    scalars = (str, bool, int, float, type(None))
    if isinstance(value, dict):
        if not all(isinstance(k, str) and isinstance(v, scalars) for k, v in value.items()):
            raise _fail(path, where, "must hold plain values only")
        values = list(value.values())
    elif isinstance(value, list):
        values = value
    else:
        values = [value]
    for item in values:
        if not isinstance(item, scalars) or (isinstance(item, float) and not limits.is_finite_number(item)):
            raise _fail(path, where, f"holds an unusable value {item!r}")
        if isinstance(item, (int, float)) and not isinstance(item, bool) and abs(item) > 1e6:
            raise _fail(path, where, f"holds the implausibly large value {item!r}")
