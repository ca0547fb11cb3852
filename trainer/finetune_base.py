"""The model a fine-tune starts from, and the training defaults it implies.

- A Chimera-Seg checkpoint (``shapes-chimera``, a ``chimera-train`` run, an earlier fine-tuned
  version): trained further, and its weights are the "base" end of the WiSE-FT blend.
- A training-free model (``clip:<arch>/<tag>``, ``shapes-clip``, a dense-CLIP checkpoint) or an
  untrained ``chimera:`` model: a new Chimera-Seg is built on that CLIP. Its body is a preset chosen
  for the device (``PRESET_FOR``), with ImageNet weights through timm when they are already in the
  local Hugging Face cache (no download is attempted: fine-tuning must work offline), else from
  scratch with a note. Such a model has no trained weights to blend with, so its blend factor is 1.

Names are read only by ``chimera_engine.model_names.parse_model_name``; models are built only by
``chimera_engine.models``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from chimera_engine.chimera.model import ChimeraConfig, preset
from chimera_engine.model_names import parse_model_name
from chimera_engine.models import CHIMERA_SEG, SegmentationModel, build_model, chimera_model

# Body preset for a new Chimera-Seg: the shapes CLIP has its own tiny body; on a GPU the paper's
# annotation-speed body, on a CPU the small ResNet-18 one (a ResNet-50 step is ~5x slower there).
PRESET_FOR = {"shapes-tiny": "shapes", "cuda": "r50", "cpu": "tiny", "mps": "tiny"}


@dataclasses.dataclass
class BaseModel:
    """The model to fine-tune, the weights to blend back towards (None: nothing to blend with),
    and what to tell the user about where it came from."""

    model: SegmentationModel  # a Chimera-Seg (kind CHIMERA_SEG), on the CPU in fp32
    name: str  # the model name it was resolved from
    weights: dict[str, torch.Tensor] | None  # base encoder state; None for a newly built model
    reference: SegmentationModel  # what "before" is measured with (the dense CLIP for a new model)
    training: dict[str, Any]  # the base's recorded training config (crop, resize, lr), when known
    notes: list[str]


def imagenet_weights_cached(backbone: str) -> bool:
    """Whether timm's ImageNet weights for ``backbone`` are already in the local Hugging Face cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(backbone)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return False
        return any(isinstance(try_to_load_from_cache(repo, name), str)
                   for name in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # noqa: BLE001 - any failure to look means "not available offline"
        return False


def choose_preset(clip_arch: str, device_type: str) -> str:
    return PRESET_FOR.get(clip_arch) or PRESET_FOR.get(device_type, "tiny")


def _recorded_training(model: SegmentationModel) -> dict[str, Any]:
    """The training config a checkpoint records: bundled models under ``training``, chimera-train
    runs under ``config``, earlier fine-tunes under ``finetune.config`` (marked ``fine_tuned``: their
    learning rate is already a fine-tuning one)."""
    info = model.info or {}
    for candidate in (info.get("training"), info.get("config")):
        if isinstance(candidate, dict):
            return candidate
    earlier = (info.get("finetune") or {}).get("config")
    return {**earlier, "fine_tuned": True} if isinstance(earlier, dict) else {}


def resolve_base(name: str, device_type: str, body: str | None = None) -> BaseModel:
    """Load or build the model to fine-tune from the model name ``name``."""
    parsed = parse_model_name(name)
    built = build_model(parsed)
    if built.kind == CHIMERA_SEG and parsed.kind != "chimera":
        weights = {k: v.detach().clone() for k, v in built.encoder.state_dict().items()}
        notes = []
        if body:
            notes.append(f"--body {body} ignored: {name} is a trained Chimera-Seg and keeps its own body")
        return BaseModel(built, str(parsed), weights, built, _recorded_training(built), notes)
    return _new_chimera(built, str(parsed), device_type, body or parsed.preset)


def _new_chimera(source: SegmentationModel, name: str, device_type: str, body: str | None) -> BaseModel:
    """A new Chimera-Seg on ``source``'s CLIP (the CLIP object is shared, its tail copied)."""
    spec = source.clip_spec
    preset_name = body or choose_preset(spec.arch, device_type)
    body_cfg = preset(preset_name)
    pretrained = imagenet_weights_cached(body_cfg.backbone)
    notes = [f"{name} has no trained Chimera-Seg weights: a new Chimera-Seg (body preset '{preset_name}') is "
             "trained on its CLIP, and there is nothing to blend with (blend factor 1)"]
    if not pretrained:
        notes.append(f"ImageNet weights for {body_cfg.backbone} are not in the local cache: the body starts from "
                     "scratch, which needs many more verified images to be useful")
    cfg = ChimeraConfig(body=dataclasses.replace(body_cfg, pretrained_backbone=pretrained), clip=str(spec),
                        templates=source.templates)
    model = chimera_model(cfg, clip=source.clip, name=f"chimera-seg fine-tuned from {name}")
    model.inference = source.inference
    return BaseModel(model, name, None, source, {}, notes)
