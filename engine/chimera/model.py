"""Chimera-Seg: a trainable segmentation body + a CLIP Semantic Head, scored against CLIP text.

Every choice the paper leaves open is a field of ``ChimeraConfig`` with the default of PAPER.md, so a
user with the published values sets them without touching code. ``PRESETS`` maps short names to body
configurations; ``chimera:<preset>/<clip arch>/<clip weights>`` builds one with an untrained body.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from chimera_engine.chimera.body import BodyConfig, DeepLabV3PlusBody
from chimera_engine.chimera.head import CLIPSemanticHead, LinearHead
from chimera_engine.errors import ModelNameError

PRESETS: dict[str, BodyConfig] = {
    # The paper's body: DeepLabV3+ on ResNet-101 at output stride 8.
    "r101": BodyConfig(backbone="resnet101", output_stride=8),
    # Annotation-speed body: ResNet-50 at output stride 16 (about 4x fewer FLOPs in the last stages).
    "r50": BodyConfig(backbone="resnet50", output_stride=16),
    # Tests: small and fast on a CPU.
    "tiny": BodyConfig(backbone="resnet18", output_stride=16, aspp_channels=64,
                       low_level_channels=24, decoder_channels=64),
    # The shapes world: under 1 M parameters, so the bundled model stays a few MB.
    "shapes": BodyConfig(backbone="mobilenetv3_small_100", output_stride=16, aspp_channels=64,
                         low_level_channels=24, decoder_channels=64),
    # The same decoder on ResNet-18 (learns the shapes better than MobileNetV3; 11 M parameters, ~25 MB
    # in fp16, ~2x the training time per crop on a CPU): the shapes recipe's body until shapes-r18-l3.
    "shapes-r18": BodyConfig(backbone="resnet18", output_stride=16, aspp_channels=64,
                             low_level_channels=24, decoder_channels=64),
    # ResNet-18 without its layer4 (stride 16 at layer3, nothing dilated): 2.8 M backbone parameters.
    # The shapes recipe's body: trained 6,000 iterations it beats shapes-r18's 3,000 on seen shapes and
    # the demo (trainer/config.py).
    "shapes-r18-l3": BodyConfig(backbone="resnet18", output_stride=16, aspp_channels=64,
                                low_level_channels=24, decoder_channels=64, truncate=True),
}


@dataclasses.dataclass
class ChimeraConfig:
    """Everything needed to rebuild a Chimera-Seg model (together with the CLIP weights)."""

    body: BodyConfig = dataclasses.field(default_factory=lambda: PRESETS["r101"])
    clip: str = "ViT-B-16/openai"  # open_clip <arch>/<tag | random | file> [PAPER.md §2]
    head: str = "csh"  # "csh", or "linear" for the no-CSH ablation
    csh_depth: int = 2  # N, the number of frozen CLIP blocks in the head
    csh_pos_embed: bool = True
    csh_cls_token: bool = True
    # Pixels per head token; 0 = CLIP's patch size (the paper). A finer grid keeps more of the body's
    # stride-4 detail through the head (the frozen blocks see more tokens; positions are interpolated).
    token_stride: int = 0
    tau: float = 0.07  # logits = cos / tau
    templates: str | list[str] = "single"
    seen_classes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.head not in ("csh", "linear"):
            raise ValueError(f"head must be 'csh' or 'linear', not {self.head!r}")
        if self.tau <= 0:
            raise ValueError("tau must be positive")
        if self.token_stride < 0:
            raise ValueError("token_stride must be 0 (CLIP's patch size) or a positive number of pixels")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["body"] = self.body.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChimeraConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Chimera-Seg config keys: {', '.join(sorted(unknown))}")
        if "body" in data:
            data["body"] = BodyConfig.from_dict(data["body"])
        return cls(**data)


def preset(name: str) -> BodyConfig:
    if name not in PRESETS:
        raise ModelNameError(f"unknown Chimera-Seg preset {name!r}; known: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])


class ChimeraSeg(nn.Module):
    """Images ``B x 3 x H x W`` (CLIP-normalised) → unit features ``B x C x H//p x W//p``.

    ``p`` is the CLIP patch size; C is CLIP's embedding dim, so ``logits()`` against CLIP text
    embeddings gives per-patch class scores for any class name.
    """

    def __init__(self, cfg: ChimeraConfig, clip_model: nn.Module):
        super().__init__()
        self.cfg = cfg
        visual = clip_model.visual
        self.body = DeepLabV3PlusBody(cfg.body)
        if cfg.head == "csh":
            self.head = CLIPSemanticHead(visual, self.body.out_channels, cfg.csh_depth,
                                         cfg.csh_pos_embed, cfg.csh_cls_token)
        else:
            self.head = LinearHead(self.body.out_channels, visual.output_dim, visual.patch_size[0])
        self.output_stride = cfg.token_stride or self.head.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_body(images)[0]

    def forward_with_body(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit features and the body's own features ``B x D x H/s x W/s`` they were made from."""
        grid = (images.shape[2] // self.output_stride, images.shape[3] // self.output_stride)
        if min(grid) < 1:
            raise ValueError(f"input {tuple(images.shape[2:])} is smaller than one {self.output_stride}px patch")
        body = self.body(images)
        return self.head(body, grid), body

    def logits(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Features ``B x C x h x w`` and unit text embeddings ``K x C`` → ``B x K x h x w``."""
        return torch.einsum("bchw,kc->bkhw", features, text.to(features.dtype)) / self.cfg.tau

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
