"""Shape outlines and anti-aliased rasterisation for the shapes world.

Every shape is a list of ``(polygon, value)`` operations in unit coordinates (x right, y down; the
shape fits a circle of radius ~1 around the origin): each polygon is filled with ``value`` (1 adds,
0 cuts a hole) in order, so a ring is a disc with a disc cut out and a crescent a disc with an
offset disc cut out. ``shape_alpha`` places a shape (centre, diameter, rotation) in an image and
rasterises it at 4x supersampling, giving a coverage map in 0..1; ``alpha >= 0.5`` is its mask.
``background`` paints the muted, textured backgrounds.
"""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

__all__ = ["SHAPE_OUTLINES", "shape_ops", "shape_alpha", "background"]

Ops = tuple[tuple[np.ndarray, int], ...]


def _circle(radius: float, cx: float = 0.0, cy: float = 0.0, points: int = 96) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _regular(sides: int, radius: float = 1.0, start: float = -math.pi / 2) -> np.ndarray:
    """A regular polygon with a vertex at ``start`` (default: pointing up)."""
    t = start + np.arange(sides) * 2 * math.pi / sides
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def _centred(points: np.ndarray) -> np.ndarray:
    """Shift so the bounding box is centred on the origin (triangle, pentagon, heart)."""
    return points - (points.min(axis=0) + points.max(axis=0)) / 2


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> np.ndarray:
    t = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return _centred(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))


def _heart(points: int = 120) -> np.ndarray:
    """The classic parametric heart (lobes up, point down), scaled to half-extent 1."""
    t = np.linspace(0.0, 2 * math.pi, points, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # y down
    p = _centred(np.stack([x, y], axis=1))
    return p / np.abs(p).max()


def _cross(arm: float = 1.0, half_width: float = 0.3) -> np.ndarray:
    a, w = arm, half_width
    return np.array([(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w),
                     (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)], dtype=np.float64)


def _arrow(shaft: float = 0.25, head: float = 0.66, neck: float = 0.1) -> np.ndarray:
    """Pointing right: a shaft from x = -1 to the neck, then a triangular head to x = 1."""
    return np.array([(-1, -shaft), (neck, -shaft), (neck, -head), (1, 0),
                     (neck, head), (neck, shaft), (-1, shaft)], dtype=np.float64)


def _outlines() -> dict[str, Ops]:
    s = 0.74  # square half-side: corners reach ~1.05, the same visual size as the others
    return {
        "circle": ((_circle(1.0), 1),),
        "square": ((np.array([(-s, -s), (s, -s), (s, s), (-s, s)], dtype=np.float64), 1),),
        "triangle": ((_centred(_regular(3, 1.12)), 1),),
        "star": ((_star(), 1),),
        "ring": ((_circle(1.0), 1), (_circle(0.55), 0)),
        "cross": ((_cross(), 1),),
        "heart": ((_heart(), 1),),
        # Disc minus an offset disc, shifted so the crescent's bounding box is centred.
        "crescent": ((_circle(1.0, 0.2), 1), (_circle(0.82, 0.62, -0.12), 0)),
        "hexagon": ((_regular(6, 1.0), 1),),  # a corner up and down, flat sides left and right
        "diamond": ((np.array([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)], dtype=np.float64), 1),),
        "pentagon": ((_centred(_regular(5, 1.0)), 1),),
        "arrow": ((_arrow(), 1),),
    }


SHAPE_OUTLINES: dict[str, Ops] = _outlines()


def shape_ops(name: str) -> Ops:
    """The unit-coordinate fill operations of a shape class; KeyError for an unknown name."""
    return SHAPE_OUTLINES[name]


def shape_alpha(name: str, center: tuple[float, float], diameter: float, angle: float,
                size: int | tuple[int, int], supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage (HxW float32 in 0..1) of one shape in an image of ``size``.

    ``center`` is (x, y) in pixels (pixel i spans [i, i+1)), ``diameter`` the shape's unit circle
    diameter in pixels, ``angle`` the rotation in radians (counter-clockwise as seen on screen).
    Only the shape's bounding box is rasterised, so cost follows the shape, not the image.
    """
    height, width = (size, size) if isinstance(size, int) else size
    out = np.zeros((height, width), np.float32)
    c, s = math.cos(-angle), math.sin(-angle)  # y points down: negate for on-screen CCW
    rot = np.array([[c, -s], [s, c]])
    r = diameter / 2
    polys = [(p @ rot.T * r + np.asarray(center, np.float64), v) for p, v in shape_ops(name)]
    lo = np.floor(np.min([p.min(axis=0) for p, _ in polys], axis=0)).astype(int)
    hi = np.ceil(np.max([p.max(axis=0) for p, _ in polys], axis=0)).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0] + 1, width), min(hi[1] + 1, height)
    if x1 <= x0 or y1 <= y0:
        return out
    ss, shift = supersample, 4
    canvas = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.uint8)
    origin = np.array([x0, y0], np.float64)
    for p, value in polys:
        # Supersampled pixel j has its centre at image coordinate (j + 0.5) / ss.
        q = ((p - origin) * ss - 0.5) * (1 << shift)
        cv2.fillPoly(canvas, [np.round(q).astype(np.int32)], 255 if value else 0,
                     lineType=cv2.LINE_8, shift=shift)
    patch = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = patch.astype(np.float32) / 255.0
    return out


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A random muted RGB colour (float, 0..255): low saturation, middle brightness."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.7))
    return np.array(rgb) * 255.0


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, muted HxWx3 float32 background (0..255): a base colour plus one or two of a
    smooth gradient, low-frequency noise, low-contrast stripes or a low-contrast checker."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.empty((size, size, 3), np.float32)
    image[:] = _muted(rng)
    kinds = rng.choice(["gradient", "noise", "stripes", "checker"], size=rng.integers(1, 3), replace=False)
    for kind in kinds:
        theta = rng.uniform(0, 2 * math.pi)
        along = (xx * math.cos(theta) + yy * math.sin(theta)).astype(np.float32)
        if kind == "gradient":  # towards a second muted colour along a random direction
            t = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
            image += t[..., None] * ((_muted(rng) - image[0, 0]) * rng.uniform(0.4, 1.0)).astype(np.float32)
        elif kind == "noise":  # an upsampled coarse random grid, partly coloured
            cells = int(rng.integers(3, 8))
            grid = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
            grid = grid * rng.uniform(0.2, 0.6) + grid.mean(axis=2, keepdims=True) * 0.6
            image += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 25)
        elif kind == "stripes":
            period = rng.uniform(0.06, 0.25)
            wave = np.sin(2 * math.pi * along / period + rng.uniform(0, 2 * math.pi))
            tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
            image += wave[..., None] * tint * rng.uniform(6, 16)
        else:  # checker, axis-aligned with a random cell size and offset
            cell = rng.uniform(0.05, 0.2)
            ox, oy = rng.uniform(0, 1, 2)
            sign = ((np.floor(xx / cell + ox) + np.floor(yy / cell + oy)) % 2) * 2 - 1
            image += sign[..., None].astype(np.float32) * rng.uniform(5, 12)
    return np.clip(image, 0, 255)
