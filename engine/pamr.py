"""PAMR, pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), as NACLIP applies it.

Each refinement step replaces every pixel's class scores by a weighted mean of its neighbours'
scores: the 8 neighbours at each dilation (8 and 16 px by default; borders replicate), weighted by
how alike their colours are — affinity ``-|I_p - I_q| / (0.1 · σ_p)`` averaged over the colour
channels, where ``σ_p`` is the standard deviation of the colours in the 3x3 neighbourhoods around
``p``, and a softmax over the neighbours. Ten steps pull label boundaries onto image edges.

The neighbours are visited one shift at a time, so memory stays a few ``K x H x W`` maps instead of
``neighbours x K x H x W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_STEPS = 10
DEFAULT_DILATIONS = (8, 16)
_RING = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _shifted(padded: torch.Tensor, pad: int, dy: int, dx: int, height: int, width: int) -> torch.Tensor:
    """``x[..., y + dy, x + dx]`` for every pixel, from a replicate-padded ``x``."""
    return padded[..., pad + dy:pad + dy + height, pad + dx:pad + dx + width]


def affinities(image: torch.Tensor, dilations=DEFAULT_DILATIONS) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Image ``C x H x W`` (float) → neighbour weights ``P x H x W`` (softmax over P) and the P offsets."""
    _, height, width = image.shape
    pad = max(dilations)
    padded = F.pad(image[None], [pad] * 4, mode="replicate")[0]
    offsets = [(dy * d, dx * d) for d in dilations for dy, dx in _RING]
    # Local colour spread: std over the 3x3 neighbourhood of every dilation (centre counted per dilation).
    window = [image] * len(dilations) + [_shifted(padded, pad, dy, dx, height, width) for dy, dx in offsets]
    spread = torch.stack(window).std(dim=0)  # C x H x W (unbiased, as torch.std)
    scale = 1e-8 + 0.1 * spread
    logits = torch.stack([-(image - _shifted(padded, pad, dy, dx, height, width)).abs().div(scale).mean(0)
                          for dy, dx in offsets])
    return logits.softmax(dim=0), offsets


def refine(image: torch.Tensor, scores: torch.Tensor, steps: int = DEFAULT_STEPS,
           dilations=DEFAULT_DILATIONS) -> torch.Tensor:
    """Scores ``K x H x W`` (logits or probabilities) refined on ``image`` ``C x H x W`` of the same size."""
    if image.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape[-2:])} and scores {tuple(scores.shape[-2:])} differ in size")
    weights, offsets = affinities(image.float(), dilations)
    height, width = scores.shape[-2:]
    pad = max(dilations)
    for _ in range(steps):
        padded = F.pad(scores[None], [pad] * 4, mode="replicate")[0]
        out = torch.zeros_like(scores)
        for weight, (dy, dx) in zip(weights, offsets):
            out.add_(_shifted(padded, pad, dy, dx, height, width) * weight)
        scores = out
    return scores
