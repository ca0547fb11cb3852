"""Editing tools as pure functions: input geometry in image pixel coordinates -> a `Region`.

Coordinates are floats in *image pixel space*: pixel (row y, column x) covers the square
[x, x + 1) x [y, y + 1), so its centre is (x + 0.5, y + 0.5). This is exactly the scene
coordinate system of the canvas, so mouse positions pass through unchanged.

Rules (what the tests pin down):
- brush: a pixel is painted when its centre lies within ``radius`` of the polyline. The radius is
  at least sqrt(0.5), so the pixel under every point of the stroke is always painted.
- flood: the 4-connected pixels with the same value as the pixel under (x, y) and, given the
  provenance map, decided by the same kind of decider: a fill that starts on the model's pixels
  stops at pixels a person decided (drew, erased or accepted), even of the same class, and one
  that starts on a person's pixels stays inside them. A fill never spreads into someone's work.
- polygon: a pixel is inside when its centre is inside the polygon (even-odd rule, like most
  rasterisers), so polygons that share an edge never share a pixel.
- rectangle: every pixel the rectangle touches, so a drag from pixel A to pixel B includes both.
Everything is clipped to the image; nothing outside it is ever returned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from chimera_app.project.document import Provenance, Region

__all__ = ["brush", "empty_region", "flood", "polygon", "rectangle"]

# Half the pixel diagonal: the farthest a point inside a pixel can be from that pixel's centre.
MIN_BRUSH_RADIUS = math.sqrt(0.5)

Point = tuple[float, float]


def empty_region() -> Region:
    """A region that covers no pixel (what a tool returns when nothing lies inside the image)."""
    return Region(0, 0, np.zeros((0, 0), dtype=bool))


def _clip_box(shape_hw, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """Integer [y0, y1) x [x0, x1) pixel box of a float box, clipped to the image."""
    h, w = int(shape_hw[0]), int(shape_hw[1])
    return (
        max(math.floor(y0), 0),
        max(math.floor(x0), 0),
        min(math.ceil(y1), h),
        min(math.ceil(x1), w),
    )


def _points(points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("tool points must be finite numbers")
    return pts


def brush(shape_hw: tuple[int, int], points: Sequence[Point], radius: float) -> Region:
    """Pixels whose centres lie within ``radius`` of the polyline through ``points`` (x, y)."""
    pts = _points(points)
    if len(pts) == 0:
        return empty_region()
    # Repeated points (a mouse that did not move) add nothing but work.
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    pts = pts[keep]
    r = max(float(radius), MIN_BRUSH_RADIUS)
    y0, x0, y1, x1 = _clip_box(
        shape_hw, pts[:, 0].min() - r, pts[:, 1].min() - r, pts[:, 0].max() + r, pts[:, 1].max() + r
    )
    if y0 >= y1 or x0 >= x1:
        return empty_region()
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    r2 = r * r
    starts = pts if len(pts) == 1 else pts[:-1]
    ends = pts if len(pts) == 1 else pts[1:]
    for a, b in zip(starts, ends):
        # Each segment is a capsule; evaluate it only inside its own box (strokes are long and thin).
        sy0, sx0, sy1, sx1 = _clip_box(
            shape_hw,
            min(a[0], b[0]) - r, min(a[1], b[1]) - r, max(a[0], b[0]) + r, max(a[1], b[1]) + r,
        )
        if sy0 >= sy1 or sx0 >= sx1:
            continue
        px = (np.arange(sx0, sx1, dtype=np.float64) + 0.5 - a[0])[None, :]
        py = (np.arange(sy0, sy1, dtype=np.float64) + 0.5 - a[1])[:, None]
        d = b - a
        seg2 = float(d @ d)
        if seg2 == 0.0:
            dist2 = px * px + py * py
        else:
            t = np.clip((px * d[0] + py * d[1]) / seg2, 0.0, 1.0)
            dx = px - t * d[0]
            dy = py - t * d[1]
            dist2 = dx * dx + dy * dy
        mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] |= dist2 <= r2
    return Region(y0, x0, mask)


def flood(labels: np.ndarray, x: float, y: float, provenance: np.ndarray | None = None) -> Region:
    """The 4-connected pixels that share the value of ``labels`` at the pixel under (x, y) and,
    with ``provenance``, whether a person decided them (``Provenance.HUMAN``) or not."""
    h, w = labels.shape[:2]
    col, row = math.floor(x), math.floor(y)
    if not (0 <= row < h and 0 <= col < w):
        return empty_region()
    # Fill the 8-bit "same value" map rather than the labels: floodFill cannot take uint16, and
    # converting 12 MP to float costs ten times the fill itself.
    same = labels == labels[row, col]
    if provenance is not None:
        person = provenance == Provenance.HUMAN
        same &= person if person[row, col] else ~person
    same = same.view(np.uint8)
    ff_mask = np.zeros((h + 2, w + 2), dtype=np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8)
    _, _, _, rect = cv2.floodFill(same, ff_mask, (col, row), 0, 0, 0, flags)
    rx, ry, rw, rh = rect
    return Region(ry, rx, ff_mask[1 + ry : 1 + ry + rh, 1 + rx : 1 + rx + rw].astype(bool))


def polygon(shape_hw: tuple[int, int], points: Sequence[Point]) -> Region:
    """Pixels whose centres lie inside the polygon through ``points`` (x, y), even-odd rule."""
    pts = _points(points)
    if len(pts) < 3:
        return empty_region()
    y0, x0, y1, x1 = _clip_box(
        shape_hw, pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()
    )
    if y0 >= y1 or x0 >= x1:
        return empty_region()
    a = pts
    b = np.roll(pts, -1, axis=0)
    cy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5  # row centres, one row per line
    # Half-open crossing test so a vertex on a scan line is counted exactly once.
    crosses = (a[None, :, 1] <= cy) != (b[None, :, 1] <= cy)
    dy = b[:, 1] - a[:, 1]
    safe_dy = np.where(dy == 0, 1.0, dy)
    cross_x = a[None, :, 0] + (cy - a[None, :, 1]) * (b[:, 0] - a[:, 0])[None, :] / safe_dy[None, :]
    # A crossing at x toggles inside/outside for every pixel centre at or right of it: count the
    # toggles per column with a scatter-add and a running sum (parity = inside).
    width = x1 - x0
    first_col = np.clip(np.ceil(cross_x - 0.5) - x0, 0, width).astype(np.int64)
    rows = np.broadcast_to(np.arange(y1 - y0)[:, None], first_col.shape)
    toggles = np.zeros((y1 - y0, width + 1), dtype=np.int32)
    np.add.at(toggles, (rows[crosses], first_col[crosses]), 1)
    mask = (np.cumsum(toggles[:, :width], axis=1) & 1).astype(bool)
    return Region(y0, x0, mask)


def rectangle(shape_hw: tuple[int, int], p0: Point, p1: Point) -> Region:
    """Every pixel touched by the axis-aligned rectangle with corners ``p0`` and ``p1`` (x, y)."""
    (ax, ay), (bx, by) = _points([p0, p1])
    lo_x, hi_x = min(ax, bx), max(ax, bx)
    lo_y, hi_y = min(ay, by), max(ay, by)
    # A zero-width drag still covers the column it lies in.
    hi_x = max(hi_x, math.floor(lo_x) + 1)
    hi_y = max(hi_y, math.floor(lo_y) + 1)
    y0, x0, y1, x1 = _clip_box(shape_hw, lo_x, lo_y, hi_x, hi_y)
    if y0 >= y1 or x0 >= x1:
        return empty_region()
    return Region(y0, x0, np.ones((y1 - y0, x1 - x0), dtype=bool))
