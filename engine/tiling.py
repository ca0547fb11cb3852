"""Where an image is encoded: the resize to the model's scale and the sliding windows over it.

The protocol of PAPER.md §5: short side 512, windows of 512 with stride 426. Window origins are
snapped to the model's output stride so every window's feature grid falls exactly on the image's
feature grid, and overlapping features can be averaged cell by cell. Averaging unit features and then
taking cosines equals averaging the per-window logits (the score is linear in the feature), which is
what sliding-window inference does — but the average can be cached and scored for any class list.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How an image is brought to the model's scale and cut into windows."""

    short_side: int = 512  # the image is resized so its short side is this many pixels
    window: int = 512  # sliding-window size at that scale
    stride: int = 426  # sliding-window step
    max_long_side: int = 4096  # caps the work on extreme panoramas

    def __post_init__(self):
        if min(self.short_side, self.window, self.stride, self.max_long_side) < 16:
            raise ValueError("inference sizes must be at least 16 pixels")
        if self.stride > self.window:
            raise ValueError("the window stride must not exceed the window size (pixels would be skipped)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def encode_size(height: int, width: int, cfg: InferenceConfig, multiple: int) -> tuple[int, int]:
    """The (height, width) an image is resized to: short side ``cfg.short_side``, long side at most
    ``cfg.max_long_side``, both rounded to a multiple of ``multiple`` (the model's output stride)."""
    scale = cfg.short_side / min(height, width)
    scale = min(scale, cfg.max_long_side / max(height, width))

    def snap(n: float) -> int:
        return max(multiple, int(round(n / multiple)) * multiple)

    return snap(height * scale), snap(width * scale)


def window_origins(length: int, window: int, stride: int, multiple: int) -> list[int]:
    """Start offsets of windows covering ``[0, length)``; all multiples of ``multiple``."""
    if length <= window:
        return [0]
    count = (length - window + stride - 1) // stride + 1
    last = (length - window) // multiple * multiple
    starts = {min(i * stride // multiple * multiple, last) for i in range(count)}
    starts.add(last)
    return sorted(starts)


def windows(height: int, width: int, cfg: InferenceConfig, multiple: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(top, left, h, w)`` over an image already at the encode size."""
    wh, ww = min(cfg.window, height), min(cfg.window, width)
    if (height - wh) % multiple or (width - ww) % multiple:
        wh, ww = wh // multiple * multiple, ww // multiple * multiple
    return [(y, x, wh, ww)
            for y in window_origins(height, wh, cfg.stride, multiple)
            for x in window_origins(width, ww, cfg.stride, multiple)]


def resize_for_encoding(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``H x W x 3`` uint8 → ``size`` (height, width); area averaging when shrinking avoids aliasing."""
    h, w = size
    if (h, w) == rgb.shape[:2]:
        return rgb
    shrinking = h * w < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def to_tensor(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``H x W x 3`` uint8 → ``3 x H x W`` float32, normalised with the model's mean and std; a stack
    ``B x H x W x 3`` gives ``B x 3 x H x W`` (strided in the input's memory order, like one image's)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).movedim(-1, -3).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


class FeatureCanvas:
    """Accumulates window features ``C x h x w`` into the image's feature grid and averages overlaps."""

    def __init__(self, channels: int, grid: tuple[int, int], stride: int, device: torch.device):
        self.stride = stride
        self.total = torch.zeros(channels, *grid, device=device)
        self.count = torch.zeros(1, *grid, device=device)

    def add(self, features: torch.Tensor, top: int, left: int) -> None:
        y, x = top // self.stride, left // self.stride
        h, w = features.shape[-2:]
        self.total[:, y:y + h, x:x + w] += features.float()
        self.count[:, y:y + h, x:x + w] += 1

    def result(self) -> torch.Tensor:
        if bool((self.count == 0).any()):
            raise AssertionError("sliding windows left part of the feature grid uncovered")
        return self.total / self.count
