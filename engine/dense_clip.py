"""Training-free dense CLIP: per-patch features of a frozen CLIP image tower.

All blocks but the last run as CLIP runs them; the last block is replaced by a training-free method
(``chimera_engine.last_block``: NACLIP by default, SCLIP, ClearCLIP, MaskCLIP). The patch tokens are then
projected with CLIP's own ``ln_post`` and ``proj``.
"""

from __future__ import annotations

import torch
from torch import nn

from chimera_engine import last_block, vit_ops


class DenseCLIP(nn.Module):
    """Images ``B x 3 x H x W`` (CLIP-normalised) → features ``B x C x H//p x W//p``, unit length.

    Args:
        visual: an open_clip ``VisionTransformer`` (its weights are shared, not copied).
        method: a name of ``chimera_engine.last_block.METHODS``.
    """

    def __init__(self, visual: nn.Module, method: str = "naclip"):
        super().__init__()
        self.visual = vit_ops.check_dense_capable(visual)
        self.method = last_block.method(method).name
        self._last_block = last_block.method(method).last_block
        self.output_stride = vit_ops.patch_size(visual)
        self.requires_grad_(False)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """All tokens (class token first) in CLIP space, ``B x (1+N) x C``, not normalised."""
        blocks = self.visual.transformer.resblocks
        x, grid = vit_ops.embed_patches(self.visual, images)
        x = vit_ops.run_blocks(blocks[:-1], x)
        x = self._last_block(blocks[-1], x, grid)
        return vit_ops.project_tokens(self.visual.ln_post, self.visual.proj, x), grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.forward_tokens(images)
        return vit_ops.tokens_to_map(tokens[:, 1:], grid)
