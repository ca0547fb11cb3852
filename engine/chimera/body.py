"""Chimera-Seg body: DeepLabV3+ on a timm backbone, without a closed-set classifier.

The body turns a CLIP-normalised image into dense features at 1/4 resolution; a CLIP
Semantic Head (elsewhere) maps those features into CLIP text-embedding space.

Output stride support (timm 1.0, ``features_only=True``): ResNet/ResNet-D, ConvNeXt(V2),
EfficientNet, MobileNetV3, RegNet and Xception accept ``output_stride`` 8/16 (dilation).
Swin, ViT, DenseNet, VGG and HRNet do not: they need ``output_stride=32`` (and ViT-style
models have no stride-4 feature at all, so they are rejected with a ValueError).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import timm
import torch
import torch.nn.functional as F
from torch import nn

_DEFAULT_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}


@dataclass
class BodyConfig:
    backbone: str = "resnet101"  # any timm model supporting features_only=True
    output_stride: int = 8  # 8 or 16 (dilated backbone) or 32 (no dilation)
    aspp_channels: int = 256
    aspp_rates: tuple[int, ...] | None = None  # None -> DeepLabV3 convention for the OS
    low_level_channels: int = 48
    decoder_channels: int = 256
    pretrained_backbone: bool = False  # True DOWNLOADS ImageNet weights through timm
    norm: str = "batch"  # "batch" or "group" (ASPP + decoder only; backbone keeps its own)
    dropout: float = 0.1  # after the ASPP projection, in training
    # True: end the backbone at its last stage of stride ``output_stride`` and drop the deeper stages,
    # instead of dilating them. On small images the deepest stages hold most of the weights and FLOPs
    # (ResNet-18's layer4: 8.4 of 11.2 M parameters) while adding little field of view. timm drops them
    # for backbones it wraps in FeatureListNet (ResNets); its MobileNet/EfficientNet feature classes
    # keep every block, so there ``truncate`` only avoids the dilation (MobileNetV3-small: 0.93 M both ways).
    truncate: bool = False

    def __post_init__(self) -> None:
        if self.output_stride not in _DEFAULT_RATES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {self.output_stride}")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")
        if self.aspp_rates is not None:
            self.aspp_rates = tuple(int(r) for r in self.aspp_rates)
            if len(self.aspp_rates) != 3:
                raise ValueError(f"aspp_rates needs 3 rates, got {self.aspp_rates}")

    @property
    def rates(self) -> tuple[int, ...]:
        return self.aspp_rates if self.aspp_rates is not None else _DEFAULT_RATES[self.output_stride]

    def to_dict(self) -> dict:
        """JSON-serialisable dict (tuples become lists; ``from_dict`` restores them)."""
        d = asdict(self)
        if d["aspp_rates"] is not None:
            d["aspp_rates"] = list(d["aspp_rates"])
        return json.loads(json.dumps(d))

    @classmethod
    def from_dict(cls, d: dict) -> "BodyConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown BodyConfig keys: {unknown}")
        return cls(**d)  # __post_init__ turns aspp_rates back into a tuple


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = math.gcd(channels, 32)  # 32 groups, or fewer for small/odd channel counts
    return nn.GroupNorm(groups, channels)


def _conv_norm_relu(cin: int, cout: int, k: int, norm: str, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        _norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling. B×cin×h×w -> B×cout×h×w."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], norm: str, dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_norm_relu(cin, cout, 1, norm)] + [_conv_norm_relu(cin, cout, 3, norm, r) for r in rates]
        )
        # Image pooling: a norm on a 1×1 map crashes (BatchNorm, batch 1, train) or degenerates
        # (GroupNorm with 1 channel per group), so this branch is a biased conv + ReLU, no norm.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(
            _conv_norm_relu(cout * (len(rates) + 2), cout, 1, norm), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, dim=1))


class Decoder(nn.Module):
    """DeepLabV3+ decoder. (B×aspp×h×w, B×low×H4×W4) -> B×decoder_channels×H4×W4."""

    def __init__(self, low_in: int, aspp_channels: int, cfg: BodyConfig):
        super().__init__()
        self.low_proj = _conv_norm_relu(low_in, cfg.low_level_channels, 1, cfg.norm)
        self.fuse = nn.Sequential(
            _conv_norm_relu(aspp_channels + cfg.low_level_channels, cfg.decoder_channels, 3, cfg.norm),
            _conv_norm_relu(cfg.decoder_channels, cfg.decoder_channels, 3, cfg.norm),
        )

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_proj(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, low], dim=1))


class DeepLabV3PlusBody(nn.Module):
    """DeepLabV3+ dense feature extractor (no classifier).

    Input: B×3×H×W float (fp32 or bf16, same dtype as the model), **CLIP-normalised** by
    the caller (mean 0.48145466,0.4578275,0.40821073; std 0.26862954,0.26130258,0.27577711).
    H, W >= 32, any value. Output: B×out_channels×ceil(H/4)×ceil(W/4), exactly.

    Size rule: if H or W is not a multiple of 4 the image is zero-padded at the bottom/right
    to the next multiple of 4 (zero = CLIP mean colour), so output pixel (i, j) covers input
    pixels [4i, 4i+4)×[4j, 4j+4). Should a backbone's stride-4 map still differ in size, the
    decoder output is bilinearly resized to ceil(H/4)×ceil(W/4).

    Parameter naming for optimiser groups: ``backbone.*`` (timm), ``aspp.*``, ``decoder.*``.
    """

    reduction = 4

    def __init__(self, cfg: BodyConfig):
        super().__init__()
        self.cfg = cfg
        kwargs = {} if cfg.output_stride == 32 or cfg.truncate else {"output_stride": cfg.output_stride}
        try:  # cheap probe on the meta device to learn the feature pyramid
            with torch.device("meta"):
                probe = timm.create_model(cfg.backbone, features_only=True, pretrained=False, **kwargs)
        except (TypeError, AssertionError) as e:
            raise ValueError(
                f"backbone {cfg.backbone!r} does not support output_stride={cfg.output_stride} "
                f"(use output_stride=32): {type(e).__name__}: {e}"
            ) from e
        red, idx = probe.feature_info.reduction(), list(probe.feature_info.out_indices)
        if 4 not in red:
            raise ValueError(f"backbone {cfg.backbone!r} has no stride-4 feature (reductions {red})")
        if cfg.truncate and cfg.output_stride in red:  # the last stage of that stride (see BodyConfig)
            high = idx[len(red) - 1 - red[::-1].index(cfg.output_stride)]
        elif red[-1] == cfg.output_stride:
            high = idx[-1]
        else:
            raise ValueError(
                f"backbone {cfg.backbone!r} gives output stride {red[-1]}, not {cfg.output_stride}"
            )
        out_indices = (idx[red.index(4)], high)
        self.backbone = timm.create_model(
            cfg.backbone, features_only=True, pretrained=cfg.pretrained_backbone,
            out_indices=out_indices, **kwargs,
        )
        red, ch = self.backbone.feature_info.reduction(), self.backbone.feature_info.channels()
        self._low, self._high = red.index(4), len(red) - 1
        self.aspp = ASPP(ch[self._high], cfg.aspp_channels, cfg.rates, cfg.norm, cfg.dropout)
        self.decoder = Decoder(ch[self._low], cfg.aspp_channels, cfg)
        self.out_channels = cfg.decoder_channels
        for m in list(self.aspp.modules()) + list(self.decoder.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W (CLIP-normalised) -> B×out_channels×ceil(H/4)×ceil(W/4)."""
        H, W = x.shape[-2:]
        oh, ow = -(-H // 4), -(-W // 4)
        if (oh * 4, ow * 4) != (H, W):
            x = F.pad(x, (0, ow * 4 - W, 0, oh * 4 - H))
        feats = self.backbone(x)
        y = self.decoder(self.aspp(feats[self._high]), feats[self._low])
        if y.shape[-2:] != (oh, ow):
            y = F.interpolate(y, size=(oh, ow), mode="bilinear", align_corners=False)
        return y
