"""The shapes world: a synthetic, offline proving ground for zero-shot segmentation.

No pretrained CLIP, VOC or COCO can be downloaded here, so the training pipeline is proven on
generated images instead: 1-4 coloured geometric shapes (12 classes, ``SHAPE_CLASSES``) on muted,
textured backgrounds, each image with a pixel label map and a caption naming every visible shape
and its colour ("a photo of a red star and a blue circle."). A tiny CLIP is pre-trained on
image-caption pairs covering ALL classes; the zero-shot segmenter is then trained on the masks of
the ``SPLIT["seen"]`` classes only and evaluated on seen and ``SPLIT["unseen"]`` shapes (star,
heart, hexagon): it can only segment those through what CLIP learned from captions.

Everything is deterministic per ``(seed, index)`` (``sample``), so a dataset of any size, written
by workers in any order, holds the same images. Shapes are drawn by ``chimera_trainer.shapes.draw``:
objects are 25-55 % of the image side, anti-aliased, rotated at random (hearts only a little, so
they stay hearts), painted in order so later shapes occlude earlier ones; the label map holds what
is visible (0 = background, k = 1 + index in ``SHAPE_CLASSES``). A shape left with < 3 % of its
own area visible is not painted at all, so image, label map and caption always agree.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from chimera_engine.atomic import atomic_write_json
from chimera_engine.formats.coco import ClassMask, CocoBuilder, encode_label_map, write_coco
from chimera_engine.formats.png_masks import write_index_png
from chimera_trainer.shapes.draw import background, shape_alpha

__all__ = ["SHAPE_CLASSES", "SPLIT", "BACKGROUND", "COLORS", "CAPTION_TEMPLATES", "BACKGROUND_CAPTIONS", "Shape", "Sample",
           "render_sample", "sample", "make_caption", "describe", "scene_objects", "twin", "twin_swaps", "twin_file_name",
           "MAX_TWINS", "write_dataset"]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "heart",
                                  "crescent", "hexagon", "diamond", "pentagon", "arrow")
MAX_TWINS = len(SHAPE_CLASSES) - 1  # a scene's twins redraw one shape as each other class at most once
_UNSEEN = ("star", "heart", "hexagon")
# Mask value 0 trains and scores as this seen class, so the models learn to say "no shape here" (and
# the shapes models use it as their default background prompt: those pixels stay unlabeled).
BACKGROUND = "background"
SPLIT: dict[str, list[str]] = {"seen": [c for c in SHAPE_CLASSES if c not in _UNSEEN],
                               "unseen": [c for c in SHAPE_CLASSES if c in _UNSEEN]}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (40, 165, 55), "blue": (35, 75, 215), "yellow": (240, 215, 35),
    "purple": (135, 55, 180), "orange": (245, 135, 25), "white": (245, 245, 245), "black": (20, 20, 20)}
COLOR_JITTER = 18  # per channel, uniform in +-COLOR_JITTER
MIN_COLOR_DISTANCE = 90.0  # RGB distance from the mean of what lies under the shape
SIZE_RANGE = (0.25, 0.55)  # shape diameter as a fraction of the image side
MIN_VISIBLE = 0.03  # below this fraction of its own area visible, a shape is not painted
HEART_TILT = 0.6  # radians; other shapes rotate freely

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.", "a picture of {}.", "an image of {}.", "{}.", "a drawing of {}.",
    "a rendering of {}.", "a simple scene with {}.", "there is {}.")
# Captions of a scene with no shape: the only captions that say "background", so the tiny CLIP learns
# the word as "no shape here" (the prompt "a photo of a background." then means that to the models).
BACKGROUND_CAPTIONS: tuple[str, ...] = (
    "a photo of a background.", "a picture of a background.", "an image of a background.", "a background.",
    "an empty background.", "a textured background with no shapes.", "a drawing of a plain background.",
    "there is only background.")


@dataclass(frozen=True)
class Shape:
    """One painted shape: class, colour name, centre (x, y) and diameter in pixels, angle (rad)."""

    name: str
    color: str
    center: tuple[float, float]
    diameter: float
    angle: float

    def alpha(self, size: int) -> np.ndarray:
        """Its anti-aliased coverage in a size x size image; ``>= 0.5`` is its mask."""
        return shape_alpha(self.name, self.center, self.diameter, self.angle, size)


@dataclass
class Sample:
    """One generated image.

    image: HxWx3 uint8 RGB. labels: HxW uint8, 0 = background, k = 1 + index in SHAPE_CLASSES.
    instances: (class name, colour name) of every painted shape, in paint order.
    caption: names every instance with its shape word. shapes: their geometry, in paint order.
    """

    image: np.ndarray
    labels: np.ndarray
    instances: list[tuple[str, str]]
    caption: str
    shapes: list[Shape] = field(default_factory=list)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(rng: np.random.Generator, instances: Sequence[tuple[str, str]],
                 color_p: float = 0.9) -> str:
    """A simple caption naming every instance (random order and template); each instance's colour
    is said with probability ``color_p``, so shape and colour words are learned apart."""
    return describe(rng, instances, color_p)[0]


def describe(rng: np.random.Generator, instances: Sequence[tuple[str, str]],
             color_p: float = 0.9) -> tuple[str, list[tuple[str, str | None]]]:
    """``make_caption``'s caption and what it says: (shape, colour or None when unsaid) per instance."""
    if not instances:
        return BACKGROUND_CAPTIONS[rng.integers(len(BACKGROUND_CAPTIONS))], []
    phrases, said = [], []
    for i in rng.permutation(len(instances)):
        name, color = instances[i]
        with_color = rng.random() < color_p
        words = f"{color} {name}" if with_color else name
        phrases.append(f"{_article(words)} {words}")
        said.append((name, color if with_color else None))
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(listed), said


def _random_shape(rng: np.random.Generator, size: int, classes: Sequence[str],
                  occupied: np.ndarray, candidates: int = 3) -> tuple[Shape, np.ndarray]:
    """A random shape (colour still unset) and its coverage; of a few random positions, the one
    overlapping the shapes already placed the least, so scenes stay readable."""
    name = str(classes[rng.integers(len(classes))])
    diameter = float(rng.uniform(*SIZE_RANGE) * size)
    angle = float(rng.uniform(-HEART_TILT, HEART_TILT) if name == "heart" else rng.uniform(0, 2 * math.pi))
    margin = 0.4 * diameter  # at most ~10 % of the diameter may leave the image
    best = None
    for _ in range(candidates):
        center = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
        shape = Shape(name, "", center, diameter, angle)
        alpha = shape.alpha(size)
        overlap = np.count_nonzero(occupied & (alpha >= 0.5))
        if best is None or overlap < best[0]:
            best = (overlap, shape, alpha)
        if overlap == 0:
            break
    return best[1], best[2]


def _renamed(shape: Shape, name: str) -> Shape:
    """``shape`` as another class; a heart keeps the world's small tilt (its angle folded into it)."""
    angle = shape.angle
    if name == "heart" and shape.name != "heart":
        angle = (math.remainder(angle, 2 * math.pi) / math.pi) * HEART_TILT
    return Shape(name, shape.color, shape.center, shape.diameter, angle)


def _pick_color(rng: np.random.Generator, under: np.ndarray, tries: int = 12) -> tuple[str, np.ndarray]:
    """A jittered named colour far enough (MIN_COLOR_DISTANCE) from ``under``, the mean RGB of what
    the shape covers; after ``tries`` draws the farthest one seen."""
    names = list(COLORS)
    best = None
    for _ in range(tries):
        name = names[rng.integers(len(names))]
        rgb = np.clip(np.array(COLORS[name]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255)
        distance = float(np.linalg.norm(rgb - under))
        if best is None or distance > best[0]:
            best = (distance, name, rgb.astype(np.float32))
        if distance >= MIN_COLOR_DISTANCE:
            break
    return best[1], best[2]


def render_sample(rng: np.random.Generator, size: int = 128, classes: Sequence[str] = SHAPE_CLASSES,
                  min_objects: int = 1, max_objects: int = 4, noise: float | None = None,
                  blur: float | None = None, swap: tuple[int, str] | None = None) -> Sample:
    """Generate one image of ``min_objects``..``max_objects`` shapes of ``classes``.

    A shape later ones hide down to < 3 % of its own area is dropped (never painted), so rarely
    fewer than ``min_objects`` remain (never none, unless ``max_objects`` is 0: a background-only scene, captioned from ``BACKGROUND_CAPTIONS``). ``noise`` (Gaussian std, 0..255 scale) and
    ``blur`` (Gaussian sigma, pixels; below 0.3 none) default to a random mild strength (std <= 6,
    sigma <= 0.8); 0 turns them off. Giving them changes no other random draw, so the scene (shapes,
    colours, background, labels, caption) stays the same. ``swap=(i, name)`` renders the scene's
    *twin*: instance ``i`` (of the scene drawn without it) painted as ``name`` in the same place, size,
    angle, colour and shading, everything else equal; layout and colours are decided on the original
    outline, so no other draw moves.
    """
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown or not len(classes):
        raise ValueError(f"classes must be a non-empty subset of SHAPE_CLASSES, got unknown {unknown}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    image = background(rng, size)
    occupied = np.zeros((size, size), bool)
    placed = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        shape, alpha = _random_shape(rng, size, classes, occupied)
        occupied |= alpha >= 0.5
        placed.append((shape, alpha))
    # Top-down: a shape is kept when enough of it shows past the kept shapes above it.
    covered = np.zeros((size, size), bool)
    keep = [False] * len(placed)
    for j in reversed(range(len(placed))):
        mask = placed[j][1] >= 0.5
        area = np.count_nonzero(mask)
        if area and np.count_nonzero(mask & ~covered) >= MIN_VISIBLE * area:
            keep[j] = True
            covered |= mask
    kept_at = [j for j in range(len(placed)) if keep[j]]
    if swap is not None and not (0 <= swap[0] < len(kept_at) and swap[1] in SHAPE_CLASSES):
        raise ValueError(f"swap {swap} names no instance of this scene's {len(kept_at)} or no shape class")
    labels = np.zeros((size, size), np.uint8)
    shapes = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for j, ((shape, alpha), kept) in enumerate(zip(placed, keep)):
        if not kept:
            continue
        mask = alpha >= 0.5
        color, rgb = _pick_color(rng, image[mask].mean(axis=0))
        if swap is not None and j == kept_at[swap[0]]:
            shape = _renamed(shape, swap[1])
            alpha = shape.alpha(size)
            mask = alpha >= 0.5
        # A gentle linear shading across the shape, so it is not one flat value either.
        theta, strength = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.12)
        ramp = ((xx - shape.center[0]) * math.cos(theta) + (yy - shape.center[1]) * math.sin(theta))
        shade = 1.0 + strength * np.clip(ramp / (shape.diameter / 2), -1, 1)
        paint = np.clip(rgb * shade[..., None], 0, 255)
        a = alpha[..., None]
        image = image * (1 - a) + paint * a
        labels[mask] = SHAPE_CLASSES.index(shape.name) + 1
        shapes.append(Shape(shape.name, color, shape.center, shape.diameter, shape.angle))
    instances = [(s.name, s.color) for s in shapes]
    caption = make_caption(rng, instances)
    sigma, std = float(rng.uniform(0, 0.8)), float(rng.uniform(0, 6))  # drawn even when given
    sigma, std = sigma if blur is None else float(blur), std if noise is None else float(noise)
    if sigma >= 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if std > 0:
        image = image + rng.normal(0, std, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Sample(image, labels, instances, caption, shapes)


def sample(seed: int, index: int, size: int = 128, **kw) -> Sample:
    """Image ``index`` of the world ``seed``: deterministic, and independent of every other index."""
    return render_sample(np.random.default_rng([seed, index]), size, **kw)


def scene_objects(index: int, single_share: float, background_share: float = 0.0) -> tuple[int, int]:
    """``(min_objects, max_objects)`` of scene ``index`` in a mix where ``background_share`` of the
    scenes show no shape, ``single_share`` exactly one, and the rest 1-4 (``render_sample``'s default).
    The draw is a hash of the index alone, so a scene's kind never depends on which others exist."""
    draw = (index * 2654435761 % 1000) / 1000
    if draw < background_share:
        return 0, 0
    return (1, 1) if draw < background_share + single_share else (1, 4)


def twin_swaps(seed: int, index: int, instances: Sequence[tuple[str, str]], count: int = 1) -> list[tuple[int, str]]:
    """How scene ``index``'s ``count`` twins differ from it: one instance, drawn at random, redrawn as
    ``count`` different other classes, drawn at random without replacement, from a generator of the
    scene's own (``render_sample(swap=...)``). A prefix of a longer list is the shorter list, so the
    first twin is the same whatever ``count``."""
    if not 1 <= count <= MAX_TWINS:
        raise ValueError(f"a scene has 1..{MAX_TWINS} twins, got {count}")
    pick = np.random.default_rng([seed, index, 7])
    k = int(pick.integers(len(instances)))
    others = [c for c in SHAPE_CLASSES if c != instances[k][0]]
    return [(k, others.pop(int(pick.integers(len(others))))) for _ in range(count)]


def twin(seed: int, index: int, size: int, scene: Sample, which: int = 0, **kw) -> Sample | None:
    """Twin ``which`` (0-based, ``twin_swaps``) of ``scene`` (image ``index`` of world ``seed``, drawn
    with ``kw``): None for a scene with no shape."""
    if not scene.instances:
        return None
    swap = twin_swaps(seed, index, scene.instances, which + 1)[which]
    return render_sample(np.random.default_rng([seed, index]), size, swap=swap, **kw)


def _file_name(index: int) -> str:
    return f"{index:06d}.png"


def twin_file_name(image_name: str, which: int) -> str:
    """Where twin ``which`` of an image is written, under ``twins/``: the image's own name for the
    first (the layout before a scene had several), ``<stem>-<which>.png`` for the others."""
    return image_name if which == 0 else f"{Path(image_name).stem}-{which}.png"


def _write_one(index: int, out_dir: str, seed: int, size: int, single_share: float,
               twins: int = 0) -> tuple[int, str, list[ClassMask]]:
    """Render image ``index``, write its image and mask PNGs (and its ``twins`` twins' images); return
    its caption and COCO masks."""
    low, high = scene_objects(index, single_share)
    s = sample(seed, index, size, min_objects=low, max_objects=high)
    name = _file_name(index)
    Image.fromarray(s.image).save(Path(out_dir) / "images" / name, compress_level=1)
    for which in range(twins):  # every written scene has a shape (min_objects 1), so every one has twins
        Image.fromarray(twin(seed, index, size, s, which, min_objects=low, max_objects=high).image).save(
            Path(out_dir) / "twins" / twin_file_name(name, which), compress_level=1)
    write_index_png(Path(out_dir) / "masks" / name, s.labels, num_classes=len(SHAPE_CLASSES))
    return index, s.caption, encode_label_map(s.labels, len(SHAPE_CLASSES))


def write_dataset(out_dir: str | Path, images: int, seed: int, size: int = 128, workers: int = 2,
                  single_share: float = 0.0, twins: int | None = None) -> Path:
    """Write images 0..images-1 of the world ``seed``; return ``out_dir``. ``single_share``: the share
    of images drawn with exactly one shape (``scene_objects``); at 0 every image holds 1-4 shapes.
    ``twins``: how many twins of each image to write (``twin``: the scene with one shape redrawn as
    another class; ``True`` is 1, ``False`` 0; None: as many as the shapes recipe's ``twin_count``, so
    the folder trains as it is) as ``twins/000000.png``, ``twins/000000-1.png``, ...
    (``twin_file_name``), for SGD's twin contrast (the shapes recipe's ``twin_weight``, ``twin_count``).

    Layout: ``images/000000.png`` (RGB), ``masks/000000.png`` (indexed PNG, 0 = background,
    k = 1 + index in SHAPE_CLASSES), ``annotations.json`` (semantic COCO ground truth, file names
    relative to ``images/``), ``captions.json`` ({file name: caption}) and ``split.json``
    ({"classes", "seen", "unseen", "background", "seed", "size"}: mask 0 is the class ``background``). Small sets are written in-process, larger
    ones by a pool of ``workers`` processes; the files are the same either way.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    if twins is None:
        from chimera_trainer.config import DATASET_DEFAULTS  # the recipe's module reads MAX_TWINS from here

        twins = DATASET_DEFAULTS["shapes"]["twin_count"]
    twins = int(twins)
    if not 0 <= twins <= MAX_TWINS:
        raise ValueError(f"a scene has 0..{MAX_TWINS} twins, got {twins}")
    if twins:
        (out / "twins").mkdir(exist_ok=True)
    if not 0.0 <= single_share <= 1.0:
        raise ValueError(f"single_share must lie in 0..1, got {single_share}")
    job = partial(_write_one, out_dir=str(out), seed=int(seed), size=int(size), single_share=float(single_share),
                  twins=twins)
    if images < 64 or workers <= 1:
        results = [job(i) for i in range(images)]
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            results = pool.map(job, range(images), chunksize=max(1, min(64, images // (4 * workers))))
    builder = CocoBuilder(list(SHAPE_CLASSES), info={
        "description": f"Chimera shapes world, seed {seed}, {size} px", "seed": int(seed)})
    captions = {}
    for index, caption, masks in sorted(results, key=lambda r: r[0]):
        builder.add_encoded(_file_name(index), size, size, masks)
        captions[_file_name(index)] = caption
    write_coco(out / "annotations.json", builder.to_dict())
    atomic_write_json(out / "captions.json", captions)
    atomic_write_json(out / "split.json", {"classes": list(SHAPE_CLASSES), "seen": list(SPLIT["seen"]),
                                          "unseen": list(SPLIT["unseen"]), "background": BACKGROUND,
                                          "seed": int(seed), "size": int(size),
                                          "single_share": float(single_share), "twins": twins})
    return out
