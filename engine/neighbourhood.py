"""NACLIP's neighbourhood prior: a 2-D Gaussian over the patch grid added to the attention logits.

Every patch token attends more to the patches around it: for query patch ``p`` and key patch ``q``
the logit gets ``exp(-|p - q|² / (2 σ²))`` (distance in patches, σ = 5 by default, peak 1 at
``p = q``, not normalised). The class token neither gives nor gets the prior (its row and column
are 0), so a ``(1 + gh·gw)²`` prior fits the token sequence of a ViT with a class token.
"""

from __future__ import annotations

import functools

import torch

DEFAULT_STD = 5.0


@functools.lru_cache(maxsize=16)
def _prior(grid: tuple[int, int], std: float) -> torch.Tensor:
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dist2 = (ys[:, None] - ys[None, :]) ** 2 + (xs[:, None] - xs[None, :]) ** 2
    prior = torch.zeros(1 + gh * gw, 1 + gh * gw, dtype=torch.float64)
    prior[1:, 1:] = torch.exp(-dist2 / (2 * std * std))
    return prior.float()


def gaussian_prior(grid: tuple[int, int], std: float = DEFAULT_STD, *, device=None, dtype=None) -> torch.Tensor:
    """The additive attention prior ``(1 + gh·gw) x (1 + gh·gw)`` of a ``gh x gw`` patch grid."""
    if std <= 0:
        raise ValueError(f"the neighbourhood std must be positive, not {std}")
    return _prior((int(grid[0]), int(grid[1])), float(std)).to(device=device, dtype=dtype)
