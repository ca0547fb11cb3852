"""Heads that map body features into CLIP's joint image-text space.

``CLIPSemanticHead`` (CSH, the paper's head): a trainable adapter, then the last N blocks of the CLIP
image tower and its ``ln_post`` + ``proj``, all frozen. ``LinearHead`` is the "no CSH" ablation: one
trainable linear projection. Both output unit-length features on CLIP's patch grid (1/p of the input).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from chimera_engine import vit_ops


def _to_patch_grid(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Body features ``B x D x h x w`` → tokens ``B x (gh*gw) x D`` by area averaging."""
    pooled = F.adaptive_avg_pool2d(features, grid)
    return pooled.flatten(2).transpose(1, 2)


class CLIPSemanticHead(nn.Module):
    """Adapter (linear D→W + LayerNorm) → [CLS] + pos. embed → last ``depth`` CLIP blocks → proj.

    Args:
        visual: the CLIP ``VisionTransformer`` whose tail is copied (and frozen).
        in_channels: D, the body's feature channels.
        depth: N, how many of CLIP's last blocks to reuse.
        pos_embed: add CLIP's (interpolated) positional embedding to the adapted tokens.
        cls_token: prepend CLIP's class embedding, so the blocks see the token layout they were
            trained with.
    """

    def __init__(self, visual: nn.Module, in_channels: int, depth: int = 2,
                 pos_embed: bool = True, cls_token: bool = True):
        super().__init__()
        visual = vit_ops.check_dense_capable(visual)
        blocks = visual.transformer.resblocks
        if not 1 <= depth <= len(blocks):
            raise ValueError(f"CSH depth must be between 1 and {len(blocks)}, not {depth}")
        width = visual.transformer.width
        self.patch_size = vit_ops.patch_size(visual)
        self.adapter = nn.Linear(in_channels, width)
        self.adapter_norm = nn.LayerNorm(width)
        self.use_pos_embed, self.use_cls_token = pos_embed, cls_token
        frozen = nn.Module()
        frozen.blocks = copy.deepcopy(blocks[len(blocks) - depth:])
        frozen.ln_post = copy.deepcopy(visual.ln_post)
        frozen.proj = nn.Parameter(visual.proj.detach().clone())
        frozen.class_embedding = nn.Parameter(visual.class_embedding.detach().clone())
        frozen.positional_embedding = nn.Parameter(visual.positional_embedding.detach().clone())
        self.clip = frozen.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # frozen CLIP runs as in eval mode (no dropout, no drop-path)
        return self

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the frozen tail on a full CLIP token sequence ``B x L x W`` → ``B x L x C``."""
        x = vit_ops.run_blocks(self.clip.blocks, tokens)
        return vit_ops.project_tokens(self.clip.ln_post, self.clip.proj, x)

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Body features ``B x D x h x w`` → unit features ``B x C x gh x gw``."""
        dtype = self.adapter.weight.dtype
        x = self.adapter_norm(self.adapter(_to_patch_grid(features.to(dtype), grid)))
        pos = vit_ops.interpolate_pos_embed(self.clip.positional_embedding, grid).to(x.dtype)
        if self.use_pos_embed:
            x = x + pos[1:]
        if self.use_cls_token:
            cls = (self.clip.class_embedding.to(x.dtype) + pos[0]).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        tokens = self.forward_tokens(x)
        if self.use_cls_token:
            tokens = tokens[:, 1:]
        return vit_ops.tokens_to_map(tokens, grid)


class LinearHead(nn.Module):
    """The "no CSH" ablation: a trainable linear map from body features to CLIP space."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        tokens = self.proj(_to_patch_grid(features.to(self.proj.weight.dtype), grid))
        return vit_ops.tokens_to_map(tokens, grid)
