"""Training-free dense CLIP methods: each one changes only how CLIP's last block treats patch tokens.

The blocks before the last run unchanged (``chimera_engine.vit_ops.block_forward``); each method below takes
the last block and its input tokens ``B x L x W`` (class token first) and returns the tokens that
``ln_post`` + ``proj`` turn into dense features. Softmax attentions go through
``F.scaled_dot_product_attention`` (one fused kernel, no ``L x L`` matrix kept), using that
``(softmax(A) + softmax(B)) v = softmax(A) v + softmax(B) v``.

- ``maskclip`` (Zhou et al., 2022): every token attends only to itself — the value path, then the
  block's residual and FFN as usual.
- ``sclip`` (Wang et al., 2024): correlative self-attention softmax(q·qᵀ/√d) + softmax(k·kᵀ/√d);
  residual and FFN kept.
- ``clearclip`` (Lan et al., 2024): self-self attention softmax(q·qᵀ/√d); no residual, no FFN.
- ``naclip`` (Hajimiri et al., 2025): softmax(k·kᵀ/√d + Gaussian neighbourhood prior); no residual,
  no FFN (``chimera_engine.neighbourhood``).
- ``stock``: CLIP's own last block (the vanilla baseline of these papers' tables; tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from chimera_engine import vit_ops
from chimera_engine.neighbourhood import DEFAULT_STD, gaussian_prior

LastBlock = Callable[[ResidualAttentionBlock, torch.Tensor, tuple[int, int]], torch.Tensor]


def stock(block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    return vit_ops.block_forward(block, x)


def maskclip(block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    # Identity attention is the value projection itself: skip q, k and the L x L scores.
    attn, width = block.attn, x.shape[-1]
    v = F.linear(vit_ops.layer_norm(block.ln_1, x), attn.in_proj_weight[2 * width:].to(x.dtype),
                 attn.in_proj_bias[2 * width:].to(x.dtype))
    x = x + vit_ops.layer_scale(block.ls_1, vit_ops.linear(attn.out_proj, v))
    return x + vit_ops.layer_scale(block.ls_2, vit_ops.mlp(block, vit_ops.layer_norm(block.ln_2, x)))


def sclip(block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    q, k, v = vit_ops.split_heads(block.attn, vit_ops.layer_norm(block.ln_1, x))
    attended = F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)
    x = x + vit_ops.layer_scale(block.ls_1, vit_ops.merge_heads(block.attn, attended))
    return x + vit_ops.layer_scale(block.ls_2, vit_ops.mlp(block, vit_ops.layer_norm(block.ln_2, x)))


def clearclip(block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    q, _, v = vit_ops.split_heads(block.attn, vit_ops.layer_norm(block.ln_1, x))
    return vit_ops.merge_heads(block.attn, F.scaled_dot_product_attention(q, q, v))


def naclip(block: ResidualAttentionBlock, x: torch.Tensor, grid: tuple[int, int],
           std: float = DEFAULT_STD) -> torch.Tensor:
    _, k, v = vit_ops.split_heads(block.attn, vit_ops.layer_norm(block.ln_1, x))
    prior = gaussian_prior(grid, std, device=x.device, dtype=k.dtype)
    return vit_ops.merge_heads(block.attn, F.scaled_dot_product_attention(k, k, v, attn_mask=prior))


@dataclasses.dataclass(frozen=True)
class Method:
    """A training-free method and the inference settings its authors evaluate it with.

    Window geometry is given in units of the CLIP's native image size (224 for ViT-B/16, where the
    authors' 336 / 224 / 112 come from), so a CLIP trained at another size (the 64 px shapes CLIP)
    gets the same geometry relative to what it was trained on. ``None``: the model's own settings.
    """

    name: str
    last_block: LastBlock
    short_side: float | None  # the image's short side at encoding, x native size
    window: float | None  # sliding window, x native size
    stride: float | None  # sliding-window step, x native size
    logit_scale: float | None  # softmax temperature of the cosine scores (None: CLIP's own, ≤ 100)
    templates: str  # prompt ensemble in resources/prompts

    def geometry(self, native: int) -> dict[str, int] | None:
        """``short_side``, ``window``, ``stride`` in pixels for a CLIP of ``native`` px (None: keep)."""
        if self.window is None:
            return None
        return {"short_side": round(self.short_side * native), "window": round(self.window * native),
                "stride": round(self.stride * native)}


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("naclip", naclip, short_side=1.5, window=1.0, stride=0.5, logit_scale=40.0, templates="openai80"),
    Method("sclip", sclip, short_side=1.5, window=1.0, stride=0.5, logit_scale=40.0, templates="openai80"),
    Method("clearclip", clearclip, short_side=2.0, window=2.0, stride=1.0, logit_scale=50.0, templates="openai80"),
    # MaskCLIP keeps the settings Chimera used before the other methods arrived (PAPER.md §5).
    Method("maskclip", maskclip, short_side=None, window=None, stride=None, logit_scale=None, templates="zegclip15"),
    Method("stock", stock, short_side=None, window=None, stride=None, logit_scale=None, templates="zegclip15"),
)}


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown training-free method {name!r}; known: {', '.join(METHODS)}") from None
