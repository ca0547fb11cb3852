"""Model names → ready-to-run segmentation models, and saving/loading them as checkpoints.

Names are read by ``chimera_engine.model_names`` (the one parser):
- ``clip:<arch>/<tag|random|file>[+method]`` — training-free dense CLIP (``clip:ViT-B-16/openai``,
  NACLIP by default; ``+sclip``, ``+clearclip``, ``+maskclip``), with the method's own inference
  settings (``chimera_engine.last_block.METHODS``).
- ``chimera:<preset>/<arch>/<tag|random|file>`` — Chimera-Seg with an untrained body (for training
  and speed benchmarks), presets from ``chimera_engine.chimera.model.PRESETS``.
- ``shapes-clip[+method]``, ``shapes-chimera`` — the bundled offline models in ``resources/models``.
- a path to a checkpoint written by ``save_model`` / ``chimera-train``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chimera_engine import checkpoints, last_block, pamr
from chimera_engine.chimera.model import ChimeraConfig, ChimeraSeg, preset
from chimera_engine.clip_loading import (RANDOM, ClipSpec, ProgressCallback, bundled_model_path,
                                 clip_preprocess, create_clip, model_config)
from chimera_engine.dense_clip import DenseCLIP
from chimera_engine.errors import CheckpointError, ModelNameError
from chimera_engine.model_names import ModelName, parse_model_name
from chimera_engine.tiling import InferenceConfig

DENSE_CLIP, CHIMERA_SEG = "dense-clip", "chimera-seg"


@dataclasses.dataclass
class SegmentationModel:
    """A dense encoder in CLIP space plus what is needed to score it against class names."""

    name: str
    kind: str  # DENSE_CLIP or CHIMERA_SEG
    encoder: nn.Module  # images B x 3 x H x W → unit features B x C x H/s x W/s; has .output_stride
    clip: nn.Module  # the open_clip model; its text tower embeds class prompts
    clip_spec: ClipSpec
    clip_model_cfg: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    logit_scale: float
    templates: str | list[str]
    seen_classes: list[str] = dataclasses.field(default_factory=list)
    # Phrases that compete with the user's classes by default and leave their pixels unlabeled (the
    # shapes models were trained with a "background" class); a caller's own background replaces them.
    background: list[str] = dataclasses.field(default_factory=list)
    # PAMR steps applied by default when its labels are scored (chimera_engine.pamr; 0 = off), and
    # the neighbour distances (pixels at the scoring resolution) PAMR compares: the shapes models ask
    # for 10 steps at (4, 8), as their flat-coloured 64 px shapes are what PAMR snaps labels to.
    refine: int = 0
    refine_dilations: tuple[int, ...] = pamr.DEFAULT_DILATIONS
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def output_stride(self) -> int:
        return self.encoder.output_stride

    def place(self, device: torch.device, dtype: torch.dtype, storage: torch.dtype | None = None) -> None:
        """Move what inference runs to ``device``/``dtype``: the encoder and CLIP's text tower.

        CLIP's image tower stays where it is: Chimera-Seg's head holds its own copy of the blocks it
        uses (a GPU need not hold the other ~85 M parameters of ViT-B/16), and dense CLIP's encoder
        *is* that tower, moved with the encoder.

        ``storage`` (e.g. fp16 while computing in fp32 on a CPU) keeps the weights that only the
        engine's own forward reads — a dense-CLIP encoder and the text tower's token table — in that
        smaller format; ``chimera_engine.vit_ops`` casts them as it uses them.
        """
        small = storage is not None and storage != dtype
        self.encoder.to(device, storage if small and self.kind == DENSE_CLIP else dtype).eval()
        self.clip.eval()
        for name, part in self.clip.named_children():
            if name != "visual":
                part.to(device, storage if small and name == "token_embedding" else dtype)
        for tensor in self.clip.parameters(recurse=False):  # positional embedding, projection, scale
            tensor.data = tensor.data.to(device, dtype)
        for name, tensor in list(self.clip.named_buffers(recurse=False)):  # the causal mask
            setattr(self.clip, name, tensor.to(device))


def _clip_model_cfg(spec: ClipSpec, clip: nn.Module) -> dict:
    cfg = model_config(spec.arch)
    # QuickGELU is decided by the weights, not the architecture name: record what was built.
    from open_clip.transformer import QuickGELU

    cfg["quick_gelu"] = any(isinstance(m, QuickGELU) for m in clip.modules())
    return cfg


def _clip_logit_scale(clip: nn.Module) -> float:
    return min(100.0, float(clip.logit_scale.detach().exp()))


def _native_size(clip: nn.Module) -> int:
    size = getattr(clip.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def method_settings(method: str, clip: nn.Module, inference: InferenceConfig | None = None) -> dict[str, Any]:
    """What a training-free method sets on a CLIP from a tag: windows, temperature, prompts."""
    spec = last_block.method(method)
    geometry = spec.geometry(_native_size(clip))
    base = inference or InferenceConfig()
    return dict(inference=dataclasses.replace(base, **geometry) if geometry else base,
                logit_scale=spec.logit_scale or _clip_logit_scale(clip), templates=spec.templates)


def dense_clip_model(spec: ClipSpec, progress: ProgressCallback | None = None,
                     method: str = "naclip") -> SegmentationModel:
    clip = create_clip(spec, progress)
    mean, std = clip_preprocess(clip)
    return SegmentationModel(
        name=f"clip:{spec}+{method}", kind=DENSE_CLIP, encoder=DenseCLIP(clip.visual, method), clip=clip,
        clip_spec=spec, clip_model_cfg=_clip_model_cfg(spec, clip), mean=mean, std=std,
        info={"method": method}, **method_settings(method, clip))


def with_method(model: SegmentationModel, method: str, name: str | None = None) -> SegmentationModel:
    """A dense-CLIP checkpoint run with another training-free method.

    The last block and the window geometry (relative to the CLIP's native size) change; prompts and
    temperature stay the checkpoint's: they belong to its CLIP (the shapes CLIP learnt its own).
    """
    if model.kind != DENSE_CLIP:
        raise ModelNameError(f"{model.name}: only training-free dense CLIP models take a method")
    geometry = last_block.method(method).geometry(_native_size(model.clip))
    inference = dataclasses.replace(model.inference, **geometry) if geometry else model.inference
    return dataclasses.replace(model, name=name or model.name, encoder=DenseCLIP(model.clip.visual, method),
                               info={**model.info, "method": method}, inference=inference)


def dense_method(info: dict) -> str:
    """The method a dense-CLIP checkpoint records (files from before methods existed: MaskCLIP)."""
    if isinstance(info.get("method"), str):
        return info["method"]
    return {"value": "maskclip", "stock": "stock"}.get(info.get("last_block", "value"), "maskclip")


def chimera_model(cfg: ChimeraConfig, progress: ProgressCallback | None = None,
                  clip: nn.Module | None = None, name: str | None = None) -> SegmentationModel:
    """A Chimera-Seg model with fresh (untrained) body and adapter."""
    spec = ClipSpec.parse(cfg.clip)
    clip = clip if clip is not None else create_clip(spec, progress)
    mean, std = clip_preprocess(clip)
    return SegmentationModel(
        name=name or f"chimera:{cfg.body.backbone}/{spec}", kind=CHIMERA_SEG,
        encoder=ChimeraSeg(cfg, clip).eval(), clip=clip, clip_spec=spec,
        clip_model_cfg=_clip_model_cfg(spec, clip), mean=mean, std=std, logit_scale=1.0 / cfg.tau,
        templates=cfg.templates, seen_classes=list(cfg.seen_classes))


def build_model(name: str | ModelName, progress: ProgressCallback | None = None) -> SegmentationModel:
    """Resolve any model name of this module's docstring."""
    parsed = name if isinstance(name, ModelName) else parse_model_name(name)
    if parsed.kind == "clip":
        return dense_clip_model(ClipSpec(parsed.arch, parsed.weights), progress, parsed.method)
    if parsed.kind == "chimera":
        return chimera_model(ChimeraConfig(body=preset(parsed.preset), clip=parsed.clip), progress,
                             name=str(parsed))
    if parsed.kind == "bundled":
        model = load_model(bundled_model_path(parsed.path), name=parsed.path)
        return with_method(model, parsed.method, str(parsed)) if parsed.method else model
    return load_model(parsed.path, progress=progress)


def save_model(model: SegmentationModel, path: str | os.PathLike, embed_clip: bool | None = None,
               info: dict[str, Any] | None = None, storage_dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` as a self-describing checkpoint.

    The CLIP weights are embedded when they cannot be re-resolved by tag (random or local-file
    weights, and always for dense CLIP); ``embed_clip=True`` forces it (self-contained files).
    ``storage_dtype=torch.float16`` halves the file (floating tensors are stored in it, loaded as fp32).
    """
    if embed_clip is None:
        embed_clip = model.kind == DENSE_CLIP or model.clip_spec.weights == RANDOM or model.clip_spec.is_file
    tensors = {}
    if model.kind == CHIMERA_SEG:
        tensors.update({f"model.{k}": v for k, v in model.encoder.state_dict().items()})
    if embed_clip:
        tensors.update({f"clip.{k}": v for k, v in model.clip.state_dict().items()})
    meta = {
        "kind": model.kind,
        "name": model.name,
        "clip": {"spec": str(model.clip_spec), "model_cfg": model.clip_model_cfg, "embedded": embed_clip,
                 "mean": list(model.mean), "std": list(model.std)},
        "logit_scale": model.logit_scale,
        "templates": model.templates,
        "seen_classes": model.seen_classes,
        "background": model.background,
        "refine": model.refine,
        "refine_dilations": list(model.refine_dilations),
        "inference": model.inference.to_dict(),
        "info": {**model.info, **(info or {})},
    }
    if model.kind == CHIMERA_SEG:
        meta["model"] = model.encoder.cfg.to_dict()
    if storage_dtype is not None:
        tensors = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return checkpoints.write_checkpoint(path, tensors, meta)


def load_model(path: str | os.PathLike, name: str | None = None,
               progress: ProgressCallback | None = None) -> SegmentationModel:
    """Rebuild a model from a checkpoint with no other input (CheckpointError when it can't).

    Every config field is validated first (chimera_engine.checkpoint_schema), and each module the config
    declares is checked against the file's tensors on the meta device before it is allocated."""
    from chimera_engine.checkpoint_schema import validate_model_meta
    from chimera_engine.clip_loading import clip_from_stored

    tensors, meta = checkpoints.read_checkpoint(path)
    validate_model_meta(meta, path)
    try:
        clip_meta, kind = meta["clip"], meta["kind"]
        spec = ClipSpec.parse(clip_meta["spec"])
        if clip_meta["embedded"]:
            clip = clip_from_stored(clip_meta["model_cfg"], _strip(tensors, "clip."), path)
        else:
            clip = create_clip(spec, progress)
        if kind == DENSE_CLIP:
            encoder = DenseCLIP(clip.visual, dense_method(meta.get("info", {})))
        elif kind == CHIMERA_SEG:
            # The body's weights are in this file: never let timm download or unpickle ImageNet ones.
            stored = meta["model"]
            cfg = ChimeraConfig.from_dict({**stored, "body": {**stored.get("body", {}), "pretrained_backbone": False}})
            body = _strip(tensors, "model.")
            encoder = checkpoints.build_to_fit(lambda: ChimeraSeg(cfg, clip), body, path)
            checkpoints.load_state(encoder, body, path)
        else:
            raise CheckpointError(f"{path}: unknown model kind {kind!r}")
        return SegmentationModel(
            name=name or str(path), kind=kind, encoder=encoder.eval(), clip=clip.eval(), clip_spec=spec,
            clip_model_cfg=clip_meta["model_cfg"], mean=tuple(clip_meta["mean"]), std=tuple(clip_meta["std"]),
            logit_scale=float(meta["logit_scale"]), templates=meta["templates"],
            seen_classes=list(meta.get("seen_classes", [])), background=list(meta.get("background", [])),
            refine=int(meta.get("refine", 0)),
            refine_dilations=tuple(meta.get("refine_dilations", pamr.DEFAULT_DILATIONS)),
            inference=InferenceConfig(**meta.get("inference", {})), info=meta.get("info", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's config is incomplete or invalid ({exc!r})") from exc


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
