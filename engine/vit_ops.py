"""Pieces of an open_clip ``VisionTransformer`` forward pass, usable at any input size.

Every function computes in the dtype of its input tokens and casts parameters to it as it uses them,
so weights may be *stored* in a smaller format than they are computed in (fp16 storage with fp32
compute on CPUs halves the resident weights; the cast of one layer's weights is cheap next to the
layer's matrix product).

open_clip runs its ViT only at the size it was built for. Dense prediction needs the patch tokens of
any image size (the positional embedding interpolated to the new grid) and needs to run a subset of
the blocks (the CLIP Semantic Head reuses the last N). Shapes: B batch, N patches, W width, C CLIP
embedding dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNormFp32, LayerScale, ResidualAttentionBlock, VisionTransformer
from torch import nn

from chimera_engine.errors import ModelNameError


def check_dense_capable(visual: nn.Module) -> VisionTransformer:
    """Raise ModelNameError unless ``visual`` is a plain open_clip ViT with a class token."""
    if not isinstance(visual, VisionTransformer):
        raise ModelNameError(f"dense features need an open_clip ViT image tower, not {type(visual).__name__}")
    if visual.attn_pool is not None or visual.final_ln_after_pool or visual.pool_type != "tok":
        raise ModelNameError("dense features need a ViT that pools its class token "
                             "(attentional or average pooling is not supported)")
    if not all(isinstance(b, ResidualAttentionBlock) for b in visual.transformer.resblocks):
        raise ModelNameError("dense features need standard open_clip transformer blocks")
    return visual


def patch_size(visual: VisionTransformer) -> int:
    ph, pw = visual.patch_size
    if ph != pw:
        raise ModelNameError("non-square patches are not supported")
    return ph


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ``(1 + n*n) x W`` class+patch positional embedding to ``(1 + gh*gw) x W``.

    Bicubic with antialiasing, exactly as open_clip resizes state dicts, so a model built for a
    larger image and our run-time resize agree.
    """
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    side = int(round(patch_pos.shape[0] ** 0.5))
    if side * side != patch_pos.shape[0]:
        raise ModelNameError("the positional embedding is not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    dtype = patch_pos.dtype
    patch_pos = patch_pos.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode="bicubic", antialias=True, align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, _as(layer.weight, x.dtype), _as(layer.bias, x.dtype))


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """open_clip's LayerNorm (in the input's dtype) or LayerNormFp32 (in fp32), any weight storage."""
    compute = torch.float32 if isinstance(norm, LayerNormFp32) else x.dtype
    out = F.layer_norm(x.to(compute), norm.normalized_shape, _as(norm.weight, compute), _as(norm.bias, compute),
                       norm.eps)
    return out.to(x.dtype)


def layer_scale(scale: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * _as(scale.gamma, x.dtype) if isinstance(scale, LayerScale) else x


def mlp(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's FFN (Linear, activation, Linear) on ``x``."""
    for layer in block.mlp:
        x = linear(layer, x) if isinstance(layer, nn.Linear) else layer(x)
    return x


def embed_patches(visual: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Images ``B x 3 x H x W`` (CLIP-normalised) → tokens ``B x (1+N) x W`` before the first block.

    Pixels beyond the last whole patch are dropped, as in ``conv1`` itself. Computes in the images' dtype.
    """
    conv = visual.conv1
    x = F.conv2d(images, _as(conv.weight, images.dtype), _as(conv.bias, images.dtype), conv.stride)
    grid = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_pos_embed(visual.positional_embedding, grid).to(x.dtype)
    return layer_norm(visual.ln_pre, x), grid


def split_heads(attn: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised tokens ``B x L x W`` → q, k, v, each ``B x H x L x d``, from one contiguous projection.

    ``nn.MultiheadAttention(batch_first=True)`` transposes its input to ``L x B x W`` before its
    projections; on CPUs that batch-second layout is a slow path of ``F.linear`` (measured with torch
    2.14.1: 2.1–2.4 s in bf16 and 155 ms in fp32 for a 2 x 1025 x 768 input, against 4.7 / 32 ms
    on the contiguous tensor). Projecting ``B x L x W`` directly and viewing the heads avoids it.
    """
    b, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, _as(attn.in_proj_weight, x.dtype), _as(attn.in_proj_bias, x.dtype))  # B x L x 3W
    q, k, v = qkv.view(b, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def merge_heads(attn: nn.MultiheadAttention, out: torch.Tensor) -> torch.Tensor:
    """Per-head outputs ``B x H x L x d`` → ``B x L x W`` through the attention's output projection."""
    b, heads, length, dim = out.shape
    return linear(attn.out_proj, out.transpose(1, 2).reshape(b, length, heads * dim))


def block_forward(block: ResidualAttentionBlock, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """One stock open_clip block on ``B x L x W`` tokens, equal to ``block(x)`` (or to the text
    tower's causal call), with fused attention and no batch-second views at any batch size."""
    q, k, v = split_heads(block.attn, layer_norm(block.ln_1, x))
    attended = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    x = x + layer_scale(block.ls_1, merge_heads(block.attn, attended))
    return x + layer_scale(block.ls_2, mlp(block, layer_norm(block.ln_2, x)))


def causal_block_after(block: ResidualAttentionBlock, x: torch.Tensor, past_k: torch.Tensor,
                       past_v: torch.Tensor, visible: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A causal block on new tokens ``x`` (``B x S x W``) that follow ``P`` earlier tokens whose keys
    and values at this block are ``past_k`` / ``past_v`` (``1 x H x P x d`` shared by the batch, or
    ``B x H x P x d``).

    ``visible`` (boolean, broadcastable to ``B x H x S x (P + S)``) says which earlier tokens each new
    token sees; by default all ``P`` and the new ones up to itself. Returns the new tokens' outputs
    and the keys and values of all ``P + S`` tokens. With ``P = 0`` it is ``block_forward(block, x,
    causal=True)``.
    """
    q, k, v = split_heads(block.attn, layer_norm(block.ln_1, x))
    b, _, new, _ = q.shape
    keys = torch.cat([past_k.expand(b, -1, -1, -1), k], dim=2)
    values = torch.cat([past_v.expand(b, -1, -1, -1), v], dim=2)
    if visible is None:
        past = past_k.shape[2]
        visible = torch.ones(new, past + new, dtype=torch.bool, device=x.device).tril(diagonal=past)
    attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
    x = x + layer_scale(block.ls_1, merge_heads(block.attn, attended))
    return x + layer_scale(block.ls_2, mlp(block, layer_norm(block.ln_2, x))), keys, values


def run_blocks(blocks: nn.ModuleList | list, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Tokens ``B x L x W`` through ``blocks`` with ``block_forward``."""
    for block in blocks:
        x = block_forward(block, x, causal)
    return x


def project_tokens(ln_post: nn.Module, proj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Tokens ``B x L x W`` → CLIP space ``B x L x C`` (CLIP's own ``ln_post`` and ``proj``)."""
    return layer_norm(ln_post, x) @ proj.to(x.dtype)


def encode_image(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """``visual(images)`` of a class-token ViT (``check_dense_capable``) through this module's block
    forward: pooled embeddings ``B x C``. Differentiable; the tiny CLIP's pre-training uses it (a
    training step on open_clip's own forward spends its time in the batch-second attention layout).
    Patch dropout (open_clip drops tokens in training) is not applied, so a model that has it is refused
    in training mode rather than trained on another forward than its own."""
    if visual.training and not isinstance(getattr(visual, "patch_dropout", nn.Identity()), nn.Identity):
        raise ValueError("encode_image does not apply patch dropout: train this model with open_clip's forward")
    tokens, _ = embed_patches(visual, images)
    tokens = run_blocks(visual.transformer.resblocks, tokens)
    return project_tokens(visual.ln_post, visual.proj, tokens[:, :1])[:, 0]


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens ``B x N x C`` → L2-normalised feature map ``B x C x gh x gw``."""
    b, n, c = tokens.shape
    fmap = tokens.transpose(1, 2).reshape(b, c, grid[0], grid[1])
    return F.normalize(fmap.float(), dim=1)
