"""Training-free dense CLIP: per-patch features of a frozen CLIP image tower (the baseline model).

The patch tokens of the last block are projected with CLIP's own ``ln_post`` and ``proj``. By default
the last block runs value-only (MaskCLIP): the patch tokens of a stock last block have been mixed by
global attention and are poorly localised, while the value path keeps each token's own content.
"""

from __future__ import annotations

import torch
from torch import nn

from engine import vit_ops


class DenseCLIP(nn.Module):
    """Images ``B x 3 x H x W`` (CLIP-normalised) → features ``B x C x H//p x W//p``, unit length.

    Args:
        visual: an open_clip ``VisionTransformer`` (its weights are shared, not copied).
        last_block: ``"value"`` (MaskCLIP, default) or ``"stock"`` (CLIP's own last block).
    """

    def __init__(self, visual: nn.Module, last_block: str = "value"):
        super().__init__()
        if last_block not in ("value", "stock"):
            raise ValueError(f"last_block must be 'value' or 'stock', not {last_block!r}")
        self.visual = vit_ops.check_dense_capable(visual)
        self.last_block = last_block
        self.output_stride = vit_ops.patch_size(visual)
        self.requires_grad_(False)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """All tokens (class token first) in CLIP space, ``B x (1+N) x C``, not normalised."""
        x, grid = vit_ops.embed_patches(self.visual, images)
        x = vit_ops.run_blocks(self.visual.transformer.resblocks, x, self.last_block == "value")
        return vit_ops.project_tokens(self.visual.ln_post, self.visual.proj, x), grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.forward_tokens(images)
        return vit_ops.tokens_to_map(tokens[:, 1:], grid)
