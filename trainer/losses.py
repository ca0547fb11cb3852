"""The three training losses of Chimera-Seg: seen-class CE, Selective Global Distillation, Semantic
Alignment. Shapes: B batch, C CLIP dim, S seen classes, h x w feature grid, H x W label size.

Every loss returns a *sum* and a *count* so that the caller can normalise by the count over all
processes: a per-process mean averaged by DDP would weigh pixels of different processes unequally.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = 255


def keep_ratio(step: int, total: int, start: float = 1.0, end: float = 0.1, schedule: str = "linear") -> float:
    """SGD's share of tokens kept at ``step`` of ``total``: shrinks from ``start`` to ``end``."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
    return end + (start - end) * (1 - t)


def seen_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                       weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``B x S x h x w`` (upsampled bilinearly to the labels) vs labels ``B x H x W`` in 0..S-1,
    255 ignored. Returns (sum of per-pixel CE, number of labelled pixels); with ``weight`` (one per
    class) each pixel's CE and count are scaled by its class's weight."""
    logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=IGNORE, reduction="sum")
    valid = labels != IGNORE
    return loss, (valid.sum() if weight is None else weight[labels[valid]].sum())


def selective_global_distillation(features: torch.Tensor, teacher: torch.Tensor, ratio: float,
                                  selection: str = "topk", loss: str = "cosine", tau: float = 0.07,
                                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull the dense features most similar to CLIP's global embedding towards it.

    ``features``: unit student features ``B x C x h x w``; ``teacher``: unit CLIP image embeddings
    ``B x C`` of the same crops. The top-K tokens by similarity to the teacher (K = ceil(ratio * h*w),
    selection without gradient) are kept. ``loss="cosine"``: mean over kept tokens of 1 - cos;
    ``"centered"``: the same cosine measured around the batch's mean teacher ``m``,
    1 - cos(token - m, teacher - m) (our option, not the paper's: what the batch's teachers share is
    taken out, so the loss is paid for what sets each image's embedding apart. Minimised only by
    token = teacher, as ``m`` lies inside the unit ball; a one-image batch has no differences and
    gives a constant, gradient-free 1); ``"infonce"``: the kept tokens' mean, normalised, contrasted
    with the other images' teachers. Returns (sum over images, number of images).
    """
    tokens = features.flatten(2).transpose(1, 2).float()  # B x N x C
    teacher = teacher.float()
    b, n, _ = tokens.shape
    k = max(1, math.ceil(ratio * n))
    if selection == "topk":
        with torch.no_grad():
            index = torch.einsum("bnc,bc->bn", tokens, teacher).topk(k, dim=1).indices
    else:
        index = torch.stack([torch.randperm(n, generator=generator)[:k] for _ in range(b)]).to(tokens.device)
    chosen = tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # B x K x C
    if loss in ("cosine", "centered"):
        if loss == "centered":
            mean = teacher.mean(0)
            chosen, teacher = F.normalize(chosen - mean, dim=-1), F.normalize(teacher - mean, dim=-1)
        per_image = (1 - torch.einsum("bkc,bc->bk", chosen, teacher)).mean(1)
        return per_image.sum(), torch.tensor(b, device=tokens.device)
    pooled = F.normalize(chosen.mean(1), dim=-1)
    logits = pooled @ teacher.t() / tau
    return F.cross_entropy(logits, torch.arange(b, device=tokens.device), reduction="sum"), torch.tensor(
        b, device=tokens.device)


def twin_contrast(features: torch.Tensor, teacher: torch.Tensor, twin_teacher: torch.Tensor,
                  tau: float = 0.07, region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SGD's twin contrast (our option): the mean of an image's unit features, normalised, must be
    nearer CLIP's embedding of the image (``teacher``, ``B x C``) than of its *twins* (``twin_teacher``,
    ``B x K x C`` or ``B x C`` for one: the same scene with one shape redrawn as other classes); a
    (1 + K)-way softmax. The embeddings differ only by what CLIP sees in that shape, so this pays for
    carrying that, and nothing else; with more twins, for telling it from more classes. The mean over all
    tokens lets the pixels of the redrawn shape carry it. ``region`` (``B x h x w`` weights, e.g.
    ``changed_region``): the mean over those tokens instead, so only the redrawn shape's tokens are
    paid; an image whose region is empty (its crop missed the shape) falls back to the plain mean,
    where both teachers saw the same pixels and the gradient is zero anyway.
    Returns (sum over images, images).
    """
    if region is None:
        pooled = features.float().mean((2, 3))
    else:
        weights = region.float() + (region.sum((1, 2), keepdim=True) == 0).float()
        pooled = (features.float() * weights[:, None]).sum((2, 3)) / weights.sum((1, 2))[:, None]
    pooled = F.normalize(pooled, dim=-1)  # B x C
    twin_teacher = twin_teacher.float() if twin_teacher.dim() == 3 else twin_teacher.float()[:, None]
    own = (pooled * teacher.float()).sum(-1, keepdim=True)
    logits = torch.cat([own, (pooled[:, None] * twin_teacher).sum(-1)], 1) / tau
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="sum"), torch.tensor(len(logits), device=logits.device)


def changed_region(images: torch.Tensor, twins: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The share of each cell of an ``h x w`` grid (``size``) whose pixels differ between images and
    their twins (``B x 3 x H x W`` each, augmented alike, so equal pixels stay bit-equal): where the
    redrawn shape was and now is. ``B x h x w``."""
    changed = (images != twins).any(1, keepdim=True).float()
    return F.adaptive_avg_pool2d(changed, size)[:, 0]


def semantic_alignment(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor,
                       tau: float = 0.07) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-to-text contrast: for each seen class present in an image, its mean feature should
    score highest against its own text embedding among the seen classes.

    ``features`` ``B x C x h x w`` (unit), ``labels`` ``B x H x W`` (0..S-1, 255 ignored; downsampled
    to the grid by nearest neighbour), ``text`` ``S x C`` (unit). Returns (sum over regions, regions).
    """
    b, c, h, w = features.shape
    s = text.shape[0]
    small = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long().flatten(1)
    valid = small != IGNORE
    onehot = F.one_hot(small.clamp(max=s - 1), s).float() * valid[..., None]  # B x N x S
    counts = onehot.sum(1)  # B x S
    sums = torch.einsum("bns,bcn->bsc", onehot, features.flatten(2).float())
    present = counts > 0
    if not bool(present.any()):
        zero = features.sum() * 0
        return zero, torch.tensor(0, device=features.device)
    regions = F.normalize(sums[present], dim=-1)  # R x C
    targets = torch.arange(s, device=features.device).expand(b, s)[present]
    logits = regions @ text.float().t() / tau
    return F.cross_entropy(logits, targets, reduction="sum"), present.sum()
