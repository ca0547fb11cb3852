"""The engine contract: encode an image once, then segment it for any list of class names.

    seg = load_segmenter("shapes-chimera", device="auto")
    seg.set_image(rgb)                     # H x W x 3 uint8; encodes and caches
    out = seg.segment(["circle", "star"])  # labels H x W int32 (-1 = unlabeled), confidence float32

Encoding (the expensive half) resizes the image to the model's scale, runs sliding windows in
batches and keeps the averaged feature grid in an LRU cache keyed by the image content. Segmenting
(the cheap half) embeds only class phrases it has not seen before and scores the cached grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from chimera_engine import precision, tiling
from chimera_engine.background import not_owned
from chimera_engine.threads import ThreadBudget, single_threaded_opencv
from chimera_engine.clip_loading import ProgressCallback
from chimera_engine.devices import DeviceChoice, choose
from chimera_engine.models import SegmentationModel, build_model
from chimera_engine.scoring import ScoringRule, label_maps
from chimera_engine.text import TextEncoder, load_templates, parse_classes, tokenizer_for


@dataclasses.dataclass(frozen=True)
class ImageFeatures:
    """The cached encoding of one image: the feature grid and the original size."""

    features: torch.Tensor  # C x h x w (average of unit window features), on the model's device
    size: tuple[int, int]  # (height, width) of the original image
    guide: torch.Tensor | None = None  # 3 x H' x W' uint8: the image at the encoding size (for PAMR)


@dataclasses.dataclass(frozen=True)
class Segmentation:
    labels: np.ndarray  # H x W int32: index into ``classes``, -1 = unlabeled
    confidence: np.ndarray  # H x W float32 in [0, 1]
    classes: tuple[str, ...]


def image_key(rgb: np.ndarray) -> str:
    """Content hash of an image array (same pixels → same key, whatever the file name)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}"
        raise TypeError(f"expected an H x W x 3 uint8 RGB array (use chimera_engine.load_image), got {got}")
    if min(rgb.shape[:2]) < 1:
        raise ValueError("the image is empty")


class Segmenter:
    """Runs a ``SegmentationModel`` on one device; caches image features and text embeddings.

    Args:
        model: what ``chimera_engine.models.build_model`` returns.
        device: a ``DeviceChoice`` (device + dtype + the reason, for display).
        batch_size: windows per forward pass.
        cache_images: how many encoded images the LRU keeps.
        min_confidence: default unlabeled rule (see ``chimera_engine.scoring.ScoringRule``).
        calibration: default γ, subtracted from the probabilities of the model's seen classes.
        min_area: default area rule (classes winning less than this share of the labelled pixels
            are dropped), 0 = off.
        refine: PAMR steps on the image's colours by default (0 = off; ``chimera_engine.pamr``);
            None: the model's own default (``SegmentationModel.refine``).
        weight_storage: ``"auto"`` stores what the engine's own forward reads in fp16 when a CPU
            computes in fp32 (half the resident weights; features within ~1e-3), ``"full"`` never.
            ``"auto"`` changes the model's tensors in place, so only a segmenter that owns its model
            should ask for it (``load_segmenter`` does; a trainer evaluating a live model does not).
    """

    def __init__(self, model: SegmentationModel, device: DeviceChoice, batch_size: int = 4,
                 cache_images: int = 8, min_confidence: float = 0.0, calibration: float = 0.0,
                 min_area: float = 0.0, refine: int | None = None, weight_storage: str = "full"):
        self.model = model
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.cache_images = max(1, int(cache_images))
        self.min_confidence = min_confidence
        self.calibration = calibration
        self.min_area = min_area
        self.refine = model.refine if refine is None else int(refine)
        # On a CPU the intra-op thread count follows the load other processes put on the cores.
        self.thread_budget = ThreadBudget() if device.device.type == "cpu" else None
        if self.thread_budget is not None:
            single_threaded_opencv()
        if weight_storage not in ("auto", "full"):
            raise ValueError(f"weight_storage must be 'auto' or 'full', not {weight_storage!r}")
        model.place(device.device, device.dtype)
        window = min(model.inference.window, model.inference.short_side)
        settled = precision.settle(device, model.encoder, model.name, (self.batch_size, 3, window, window))
        half = weight_storage == "auto" and settled.device.type == "cpu" and settled.dtype == torch.float32
        if settled.dtype != device.dtype or half:
            model.place(settled.device, settled.dtype, torch.float16 if half else None)
        self.device = settled
        self.text = TextEncoder(model.clip, model.templates, tokenizer=tokenizer_for(model.clip_spec.arch),
                                compute_dtype=settled.dtype)
        # Previews while a class name is typed: one template instead of the ensemble (~15x cheaper).
        self.quick_text = TextEncoder(model.clip, [_quick_template(model.templates)], tokenizer=self.text.tokenizer,
                                      compute_dtype=settled.dtype)
        self._cache: OrderedDict[str, ImageFeatures] = OrderedDict()
        self._current: str | None = None
        self.images_encoded = 0  # counts real encodes, so tests can prove the cache works

    @property
    def name(self) -> str:
        return self.model.name

    def describe(self) -> str:
        return f"{self.model.name} on {self.device.describe()}"

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, images: Sequence[np.ndarray]) -> list[ImageFeatures]:
        """Encode several images, batching their windows together (no caching)."""
        self._budget_threads()
        stride, cfg = self.model.output_stride, self.model.inference
        grids, crops, guides = [], [], []  # crops: (image index, top, left, 3 x h x w tensor)
        for index, rgb in enumerate(images):
            check_rgb(rgb)
            size = tiling.encode_size(rgb.shape[0], rgb.shape[1], cfg, stride)
            resized = tiling.resize_for_encoding(rgb, size)
            guides.append(torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).contiguous())
            tensor = tiling.to_tensor(resized, self.model.mean, self.model.std)
            grids.append((size[0] // stride, size[1] // stride))
            crops.extend((index, y, x, tensor[:, y:y + h, x:x + w])
                         for y, x, h, w in tiling.windows(*size, cfg, stride))
        by_shape: dict[tuple[int, ...], list] = {}
        for crop in crops:  # only same-sized windows can share a batch
            by_shape.setdefault(tuple(crop[3].shape), []).append(crop)
        canvases: dict[int, tiling.FeatureCanvas] = {}
        for group in by_shape.values():
            for start in range(0, len(group), self.batch_size):
                part = group[start:start + self.batch_size]
                feats = self._forward(torch.stack([c[3] for c in part]))
                for (index, y, x, _), feat in zip(part, feats):
                    if index not in canvases:
                        canvases[index] = tiling.FeatureCanvas(feat.shape[0], grids[index], stride, feat.device)
                    canvases[index].add(feat, y, x)
        self.images_encoded += len(images)
        return [ImageFeatures(canvases[i].result(), rgb.shape[:2], guides[i]) for i, rgb in enumerate(images)]

    @torch.inference_mode()
    def _forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.to(self.device.device, self.device.dtype, non_blocking=True)
        return self.model.encoder(x).float()

    def set_image(self, rgb: np.ndarray, key: str | None = None) -> str:
        """Make ``rgb`` the current image, encoding it unless its features are cached. Returns its key."""
        check_rgb(rgb)
        key = key or image_key(rgb)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = self.encode([rgb])[0]
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        self._current = key
        return key

    def add_features(self, key: str, features: ImageFeatures) -> None:
        """Put features computed elsewhere (``encode`` on a background thread) into the LRU."""
        self._cache[key] = features
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_images:
            self._cache.popitem(last=False)

    def is_cached(self, key: str) -> bool:
        """Whether the features of ``key`` are in the LRU (``segment`` can run without the pixels)."""
        return key in self._cache

    def features(self, key: str | None = None) -> ImageFeatures:
        key = key or self._current
        if key is None or key not in self._cache:
            raise RuntimeError("no image set: call set_image(rgb) first")
        return self._cache[key]

    # -- scoring --------------------------------------------------------------------------------
    def segment(self, classes: Sequence[str], *, background: Sequence[str] | None = None,
                min_confidence: float | None = None, calibration: float | None = None,
                min_area: float | None = None, refine: int | None = None,
                features: ImageFeatures | None = None,
                output_size: tuple[int, int] | None = None, quick_text: bool = False) -> Segmentation:
        """Label every pixel of the current image (or of ``features``) with one of ``classes``.

        ``background``: extra phrases that compete with the classes but whose pixels stay unlabeled
        (e.g. ``["sky", "wall"]`` when only the objects matter; ``chimera_engine.background`` has the stuff
        words these papers use). ``None``: the model's own (``model.background``, e.g. "background" for
        the shapes models), less any phrase one of ``classes`` owns; ``()``: none. ``min_confidence``, ``calibration``, ``min_area`` and ``refine``
        (PAMR steps) override the segmenter's defaults for this call. ``output_size`` ``(h, w)``
        scores the whole image at that resolution instead of its own (a quick preview at screen
        size while the user types); the maps then have that shape. ``quick_text``: classes whose
        embeddings are not cached yet are embedded with one template instead of the ensemble (the
        preview of a name being typed; the full ensemble follows when typing pauses).
        """
        self._budget_threads()
        classes = tuple(str(c) for c in classes)
        if background is None:
            background = not_owned(self.model.background, classes)
        parsed = parse_classes(list(classes) + list(background))  # one namespace: no phrase in both
        feats = features or self.features()
        text = self._embed(list(classes) + list(background), quick_text).to(feats.features.device)
        seen = {c.casefold() for c in self.model.seen_classes}
        rule = ScoringRule(
            logit_scale=self.model.logit_scale,
            min_confidence=self.min_confidence if min_confidence is None else min_confidence,
            num_background=len(background),
            calibration=self.calibration if calibration is None else calibration,
            seen=tuple(any(p.casefold() in seen for p in phrases) for phrases in parsed[:len(classes)]),
            min_area=self.min_area if min_area is None else min_area,
            refine_steps=self.refine if refine is None else int(refine),
            refine_dilations=self.model.refine_dilations)
        labels, confidence = label_maps(feats.features, text, feats.size, rule, output_size, feats.guide)
        return Segmentation(labels, confidence, classes)


    def _budget_threads(self) -> None:
        if self.thread_budget is not None:
            self.thread_budget.threads()

    def _embed(self, classes: list[str], quick: bool) -> torch.Tensor:
        if not quick or all(self.text.has(c) for c in classes):
            return self.text.encode(classes)
        return torch.cat([(self.text if self.text.has(c) else self.quick_text).encode([c]) for c in classes])


def _quick_template(templates) -> str:
    """The one template a typing preview uses: CLIP's plain prompt when the ensemble has it."""
    loaded = load_templates(templates)
    return "a photo of a {}." if "a photo of a {}." in loaded else loaded[0]


def load_segmenter(name_or_path: str, device: str = "auto", precision: str = "auto",
                   progress: ProgressCallback | None = None, inference: dict | None = None,
                   **options) -> Segmenter:
    """Build the model named ``name_or_path`` (see ``chimera_engine.models``) on ``device``.

    ``precision``: ``auto`` (see ``chimera_engine.devices``), ``fp32``, ``bf16`` or ``fp16``. ``inference``
    overrides the model's own inference settings (``short_side``, ``window``, ``stride``; a
    training-free method's defaults are its authors'). Other keyword options go to ``Segmenter``.
    """
    choice = choose(device, precision)
    model = build_model(name_or_path, progress)
    if inference:
        model.inference = dataclasses.replace(model.inference, **inference)
    return Segmenter(model, choice, **{"weight_storage": "auto", **options})
