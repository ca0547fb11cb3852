"""The ZegCLIP / mmseg (0.x) training pipeline on sample dicts, in numpy + OpenCV.

A sample is ``dict(image=HxWx3 RGB array, label=HxW array, ...)``; other keys pass through. Each step
is a small callable class; :class:`Compose` chains them. All randomness comes from a
``np.random.Generator``: a step's own (``rng=`` at construction) or the one passed per call, which
``Compose`` does with its own generator so that one seed fixes the whole pipeline. In DataLoader
workers use :func:`seed_worker` as ``worker_init_fn`` (each worker then draws from its own stream,
derived from the DataLoader's seed, instead of every worker repeating the same copy).

Order and semantics follow mmseg's train pipeline: Resize(img_scale=(2048, 512), ratio_range=(0.5, 2),
keep_ratio) -> RandomCrop(cat_max_ratio=0.75) -> RandomFlip(0.5) -> PhotoMetricDistortion ->
Normalize -> Pad(crop, 0, 255) -> tensors. Like mmseg, Pad comes after Normalize, so padded image
pixels are 0 in normalised units. Deviations from mmseg:
  * images are RGB throughout (mmseg loads BGR and converts in Normalize with to_rgb=True), so
    ``mean``/``std`` are given in RGB order and in 0..255 pixel units, e.g. (123.675, 116.28, 103.53);
  * the random draws come from a numpy Generator instead of the global ``np.random`` state (same
    distributions, different streams);
  * Pad never crops: an image larger than ``size`` is left as it is (mmcv would fail);
  * the eval pipeline neither resizes nor normalises by default: the evaluator resizes to short side
    512 and slides windows itself, then normalises.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

Sample = dict[str, Any]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


class _Random:
    """Base of the random steps: the generator of a call is the one passed, else the step's own."""

    def __init__(self, rng: np.random.Generator | None = None):
        self.rng = rng if rng is not None else np.random.default_rng()

    def _gen(self, rng: np.random.Generator | None) -> np.random.Generator:
        return rng if rng is not None else self.rng


def resize_label(label: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (cv2.INTER_NEAREST, as mmcv) of an integer label of any dtype."""
    work = label if label.dtype in (np.uint8, np.uint16, np.int16, np.int32) else label.astype(np.int32)
    out = cv2.resize(work, size_wh, interpolation=cv2.INTER_NEAREST)
    return out.astype(label.dtype, copy=False)


class RandomResize(_Random):
    """mmseg ``Resize(img_scale=scale, ratio_range=..., keep_ratio=True)``.

    r ~ U(ratio_range); target (L, S) = (int(scale[0] r), int(scale[1] r)); the image is rescaled by
    f = min(max(L, S) / long side, min(L, S) / short side) to (int(w f + .5), int(h f + .5)),
    bilinear for the image, nearest for the label. ``ratio_range=None`` = the fixed ``scale``.
    """

    def __init__(self, scale: Sequence[int] = (2048, 512),
                 ratio_range: Sequence[float] | None = (0.5, 2.0), rng: np.random.Generator | None = None):
        super().__init__(rng)
        self.scale, self.ratio_range = (int(scale[0]), int(scale[1])), ratio_range

    def target_size(self, h: int, w: int, ratio: float) -> tuple[int, int]:
        """(new_h, new_w) for an h x w image at this ratio."""
        long_t, short_t = sorted((int(self.scale[0] * ratio), int(self.scale[1] * ratio)), reverse=True)
        f = min(long_t / max(h, w), short_t / min(h, w))
        return int(h * f + 0.5), int(w * f + 0.5)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        ratio = 1.0
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = self._gen(rng).random() * (hi - lo) + lo
        image, label = sample["image"], sample["label"]
        new_h, new_w = self.target_size(image.shape[0], image.shape[1], ratio)
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return dict(sample, image=image, label=resize_label(label, (new_w, new_h)))


class RandomCrop(_Random):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio, ignore_index)``; ``size`` is (h, w).

    A crop is accepted when it holds more than one non-ignore class and the largest covers less than
    ``cat_max_ratio`` of its non-ignore pixels; after 10 rejected tries the 11th draw is used, as in
    mmseg. The crop is clipped to the image (a smaller image is kept whole; Pad fills it later).
    """

    def __init__(self, size: int | Sequence[int] = (512, 512), cat_max_ratio: float = 0.75,
                 ignore_index: int = 255, rng: np.random.Generator | None = None):
        super().__init__(rng)
        self.size, self.cat_max_ratio, self.ignore_index = _pair(size), cat_max_ratio, ignore_index

    def _bbox(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        off_h = int(rng.integers(0, max(h - self.size[0], 0) + 1))
        off_w = int(rng.integers(0, max(w - self.size[1], 0) + 1))
        return off_h, off_h + self.size[0], off_w, off_w + self.size[1]

    def _acceptable(self, label: np.ndarray) -> bool:
        if label.dtype == np.uint8:  # a count per value: ~10x faster than np.unique's sort, same counts
            counts = np.bincount(label.ravel(), minlength=256)
            if 0 <= self.ignore_index < 256:
                counts[self.ignore_index] = 0
            counts = counts[counts > 0]
        else:
            values, counts = np.unique(label, return_counts=True)
            counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = self._gen(rng)
        image, label = sample["image"], sample["label"]
        h, w = label.shape[:2]
        y1, y2, x1, x2 = self._bbox(h, w, rng)
        if self.cat_max_ratio < 1.0:
            # An image no larger than the crop has one crop (itself), so it is judged once; the
            # retries still draw, so the transforms after this one see the same random stream.
            verdict = self._acceptable(label) if h <= self.size[0] and w <= self.size[1] else None
            for _ in range(10):
                if self._acceptable(label[y1:y2, x1:x2]) if verdict is None else verdict:
                    break
                y1, y2, x1, x2 = self._bbox(h, w, rng)
        return dict(sample, image=np.ascontiguousarray(image[y1:y2, x1:x2]),
                    label=np.ascontiguousarray(label[y1:y2, x1:x2]))


class RandomFlip(_Random):
    """Horizontal flip of image and label together with probability ``prob``."""

    def __init__(self, prob: float = 0.5, rng: np.random.Generator | None = None):
        super().__init__(rng)
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if self._gen(rng).random() < self.prob:
            return dict(sample, image=np.ascontiguousarray(sample["image"][:, ::-1]),
                        label=np.ascontiguousarray(sample["label"][:, ::-1]))
        return sample


class PhotoMetricDistortion(_Random):
    """mmseg's: each with probability 1/2 - brightness (+U(-32, 32)), contrast (xU(0.5, 1.5)), saturation
    (xU(0.5, 1.5) on HSV S), hue (+randint(-18, 18) on OpenCV's 0..179 H, which like numpy's randint
    never draws +18). Contrast comes second or last (mode drawn with p = 1/2). Each step clips and
    truncates to uint8, as mmseg does. The label is untouched.
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18,
                 rng: np.random.Generator | None = None):
        super().__init__(rng)
        self.brightness_delta, self.hue_delta = brightness_delta, hue_delta
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _brightness(self, img, rng):
        if rng.integers(2):
            return self._convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        return img

    def _contrast(self, img, rng):
        if rng.integers(2):
            return self._convert(img, alpha=rng.uniform(*self.contrast_range))
        return img

    def _saturation(self, img, rng):
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return img

    def _hue(self, img, rng):
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            shift = int(rng.integers(-self.hue_delta, self.hue_delta)) if self.hue_delta > 0 else 0
            hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return img

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = self._gen(rng)
        img = np.ascontiguousarray(sample["image"], dtype=np.uint8)
        img = self._brightness(img, rng)
        contrast_first = bool(rng.integers(2))
        if contrast_first:
            img = self._contrast(img, rng)
        img = self._hue(self._saturation(img, rng), rng)
        if not contrast_first:
            img = self._contrast(img, rng)
        return dict(sample, image=img)


class Normalize:
    """(image - mean) / std per RGB channel, in 0..255 pixel units -> float32 HxWx3."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, -1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 1, -1)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return dict(sample, image=(sample["image"].astype(np.float32) - self.mean) / self.std)


class Pad:
    """Pad bottom/right up to ``size`` (h, w): image with ``pad_value``, label with ``label_pad``."""

    def __init__(self, size: int | Sequence[int] = (512, 512), pad_value: float = 0, label_pad: int = 255):
        self.size, self.pad_value, self.label_pad = _pair(size), pad_value, label_pad

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image, label = sample["image"], sample["label"]
        h, w = label.shape[:2]
        out_h, out_w = max(h, self.size[0]), max(w, self.size[1])
        if (out_h, out_w) == (h, w):
            return sample
        padded = np.full((out_h, out_w) + image.shape[2:], self.pad_value, dtype=image.dtype)
        padded[:h, :w] = image
        padded_label = np.full((out_h, out_w), self.label_pad, dtype=label.dtype)
        padded_label[:h, :w] = label
        return dict(sample, image=padded, label=padded_label)


class ToTensor:
    """image HxWx3 -> 3xHxW tensor (float32 from a float image, uint8 kept), label -> int64 HxW."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = np.ascontiguousarray(np.asarray(sample["image"]).transpose(2, 0, 1))
        image_t = torch.from_numpy(image)
        if image_t.is_floating_point():
            image_t = image_t.float()
        label = torch.from_numpy(np.ascontiguousarray(sample["label"]).astype(np.int64))
        return dict(sample, image=image_t, label=label)


class Compose:
    """Apply steps in order. With ``rng`` (or after :meth:`reseed`) every step draws from it."""

    def __init__(self, steps: Sequence[Callable[..., Sample]], rng: np.random.Generator | None = None):
        self.steps, self.rng = list(steps), rng

    def reseed(self, seed: int | np.random.SeedSequence) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else self.rng
        for step in self.steps:
            sample = step(sample, rng=rng) if isinstance(step, (_Random, Compose)) else step(sample)
        return sample


def train_pipeline(crop_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float],
                   scale: Sequence[int] = (2048, 512), ratio_range: Sequence[float] | None = (0.5, 2.0),
                   *, rng: np.random.Generator | int | None = None, cat_max_ratio: float = 0.75,
                   flip_prob: float = 0.5, photometric: bool = True, ignore_index: int = 255) -> Compose:
    """The PAPER.md §5 / ZegCLIP training pipeline; ``rng`` a Generator or a seed."""
    crop = _pair(crop_size)
    steps: list[Callable[..., Sample]] = [
        RandomResize(scale, ratio_range),
        RandomCrop(crop, cat_max_ratio, ignore_index),
        RandomFlip(flip_prob),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += [Normalize(mean, std), Pad(crop, 0, ignore_index), ToTensor()]
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return Compose(steps, gen)


def eval_pipeline(mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Compose:
    """Tensors at full resolution: a uint8 3xHxW image (float32 normalised when mean and std are
    given) and the int64 label. No resize or crop: the evaluator does its own sliding windows."""
    steps: list[Callable[..., Sample]] = [] if mean is None or std is None else [Normalize(mean, std)]
    return Compose(steps + [ToTensor()])


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed the dataset's pipeline from the worker's torch seed."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    stack = [info.dataset]
    while stack:
        ds = stack.pop()
        transform = getattr(ds, "transform", None)
        if isinstance(transform, Compose):
            transform.reseed(info.seed % 2**63)
        stack.extend(getattr(ds, "datasets", []))
        if getattr(ds, "dataset", None) is not None:
            stack.append(ds.dataset)
