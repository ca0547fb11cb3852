"""Cached features + class embeddings → a full-resolution label map and confidence map.

The cheap half of the pipeline, re-run on every change of class names. Logits are computed on the
feature grid, upsampled bilinearly (PyTorch's half-pixel rule, ``align_corners=False``) to the
original image size band by band, so a 100 MP image never holds ``K x H x W`` floats at once: a
band is ~4 MB (a few rows of a 12 MP image), small enough that its temporaries neither raise the
peak nor stay behind in the allocator's heap (32 MB bands left ~300 MB of freed memory resident).

``output_size`` scores at another resolution instead (e.g. the size the image is shown at): the
app re-scores at screen resolution on every keystroke and at full resolution once typing settles.
Upsampling goes straight from the feature grid to that size, so its cost scales with its pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from chimera_engine import pamr

BAND_ELEMENTS = 1 << 20  # floats per upsampled band (4 MB in fp32; also measured faster than 32 MB)


@dataclasses.dataclass(frozen=True)
class ScoringRule:
    """How probabilities become labels.

    - ``min_confidence``: a pixel whose best class probability is below it stays unlabeled (-1);
      0 gives every pixel its best class.
    - ``num_background``: the last this-many classes are background prompts: they compete in the
      softmax, but pixels they win are unlabeled.
    - ``calibration`` (γ of PAPER.md §5): subtracted from the probabilities of ``seen`` classes
      before the argmax, to counter a trained model's bias towards the classes it was trained on.
    - ``min_area``: the area rule of SCLIP's VOC/Context protocol — a class that wins less than this
      share of the labelled pixels is dropped and its pixels go to their next best class.
    - ``refine_steps``: PAMR steps on the image's colours (``chimera_engine.pamr``; 0 = off), applied to the
      logits at the scoring resolution (the encoded image's size, or ``output_size`` if smaller);
      ``refine_dilations``: the neighbour distances it compares, in pixels at that resolution.
    """

    logit_scale: float
    min_confidence: float = 0.0
    num_background: int = 0
    calibration: float = 0.0
    seen: tuple[bool, ...] = ()
    min_area: float = 0.0
    refine_steps: int = 0
    refine_dilations: tuple[int, ...] = pamr.DEFAULT_DILATIONS


def _axis_weights(out_len: int, in_len: int, device: torch.device):
    """Source indices and weights of 1-D linear interpolation with ``align_corners=False``."""
    src = (torch.arange(out_len, device=device, dtype=torch.float64) + 0.5) * (in_len / out_len) - 0.5
    src = src.clamp(min=0)
    i0 = src.floor().long().clamp(max=in_len - 1)
    i1 = (i0 + 1).clamp(max=in_len - 1)
    w1 = (src - i0).float()
    return i0, i1, 1 - w1, w1


def _refined(logits: torch.Tensor, guide: torch.Tensor, rule: ScoringRule,
             out_size: tuple[int, int]) -> torch.Tensor:
    """Grid logits ``K x h x w`` → PAMR-refined logits at the scoring resolution."""
    gh, gw = guide.shape[-2:]
    height, width = (gh, gw) if gh * gw <= out_size[0] * out_size[1] else out_size
    image = guide.float()
    if (height, width) != (gh, gw):
        image = F.interpolate(image[None], size=(height, width), mode="area")[0]
    logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return pamr.refine(image, logits, rule.refine_steps, rule.refine_dilations)


def _drop_small_classes(logits: torch.Tensor, rule: ScoringRule) -> torch.Tensor:
    """The area rule: classes winning < ``min_area`` of the labelled pixels lose all their pixels."""
    num_classes = logits.shape[0] - rule.num_background
    best = logits.argmax(dim=0).flatten()
    counts = torch.bincount(best, minlength=logits.shape[0])[:num_classes].float()
    labelled = counts.sum()
    if labelled == 0:
        return logits
    small = counts < rule.min_area * labelled
    small[counts.argmax()] = False  # the largest class always stays
    if not bool(small.any()):
        return logits
    logits = logits.clone()
    logits[:num_classes][small] = -1e9  # finite: the bilinear upsampling multiplies by zero weights
    return logits


def label_maps(features: torch.Tensor, text: torch.Tensor, size: tuple[int, int],
               rule: ScoringRule, output_size: tuple[int, int] | None = None,
               guide: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features ``C x h x w`` and unit text embeddings ``K x C`` → (labels, confidence).

    ``labels``: ``H x W`` int32 index into the non-background classes, -1 = unlabeled.
    ``confidence``: ``H x W`` float32 in [0, 1], the softmax probability of the best class.
    ``H x W`` is ``size`` (the image's), or ``output_size`` when given (the grid spans the whole
    image either way, so a smaller ``output_size`` is the same map at a lower resolution).
    ``guide``: the image at the encoding size, ``3 x H' x W'`` (needed for ``rule.refine_steps``).
    """
    height, width = output_size if output_size is not None else size
    if height < 1 or width < 1:
        raise ValueError(f"output size must be positive, got {(height, width)}")
    num_classes = text.shape[0]
    if num_classes - rule.num_background < 1:
        raise ValueError("at least one class besides the background prompts is needed")
    device = features.device
    logits = torch.einsum("chw,kc->khw", features.float(), text.to(device).float()) * rule.logit_scale
    if rule.refine_steps > 0 and guide is not None:
        logits = _refined(logits, guide.to(device), rule, (height, width))
    if rule.min_area > 0:
        logits = _drop_small_classes(logits, rule)
    x0, x1, wx0, wx1 = _axis_weights(width, logits.shape[2], device)
    logits = logits[:, :, x0] * wx0 + logits[:, :, x1] * wx1  # K x h x W
    y0, y1, wy0, wy1 = _axis_weights(height, logits.shape[1], device)
    offset = None
    if rule.calibration and rule.seen:
        seen = torch.tensor(rule.seen + (False,) * (num_classes - len(rule.seen)), device=device)
        offset = (seen.float() * rule.calibration).view(-1, 1, 1)
    labels = np.empty((height, width), np.int32)
    confidence = np.empty((height, width), np.float32)
    band = max(1, BAND_ELEMENTS // max(1, num_classes * width))
    for top in range(0, height, band):
        rows = slice(top, min(top + band, height))
        # The same products and sum as ``logits[:, y0] * wy0 + logits[:, y1] * wy1``, in place.
        a = logits.index_select(1, y0[rows]).mul_(wy0[rows].view(1, -1, 1))
        a.add_(logits.index_select(1, y1[rows]).mul_(wy1[rows].view(1, -1, 1)))
        prob = a.softmax(dim=0)
        del a
        if offset is None:
            conf, best = prob.max(dim=0)  # one pass for both; argmax + gather costs ~4x more
        else:
            best = (prob - offset).max(dim=0).indices
            conf = prob.gather(0, best.unsqueeze(0))[0]
        unlabeled = best >= num_classes - rule.num_background
        if rule.min_confidence > 0:
            unlabeled |= conf < rule.min_confidence
        best = best.to(torch.int32).masked_fill_(unlabeled, -1)
        labels[rows] = best.cpu().numpy()
        confidence[rows] = conf.cpu().numpy()
    return labels, confidence
