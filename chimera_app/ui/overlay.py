"""Rendering of the canvas layers: numpy maps -> ARGB pixels in Qt-owned QImages.

Each layer is a `Layer` item whose QImage is allocated by Qt; numpy writes straight into its buffer
(no copies of 48 MB images, and no QImage pointing into a numpy array that could be freed). A layer
paints only the part of its image the view exposes, so moving the brush cursor repaints the
circle's box, not 12 million pixels.

Large images: above `MAX_DISPLAY_PIXELS` every layer is held at a reduced *display* resolution and
stretched over the full-resolution rectangle, so scene coordinates stay full-resolution image
pixels. `SampleGrid` maps each display pixel to the full-resolution pixel it shows (nearest).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PySide6.QtCore import QRect, QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QGraphicsScene

__all__ = [
    "MAX_DISPLAY_PIXELS",
    "Layer",
    "LayerStack",
    "SampleGrid",
    "color_lut",
    "confidence_argb",
    "confidence_lut",
    "outline_argb",
]

MAX_DISPLAY_PIXELS = 16_000_000
# A label id indexes the LUT directly: uint16 ids need 65536 entries (256 KiB, built per set_labels).
LUT_SIZE = 1 << 16
# Uncertain pixels are tinted magenta, more opaque the less confident (premultiplied ARGB).
CONFIDENCE_ALPHA_MIN = 64
CONFIDENCE_ALPHA_MAX = 224
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def color_lut(colors: dict[int, tuple[int, int, int]], hidden: set[int] | frozenset = frozenset()):
    """uint32 ARGB LUT: opaque class colour for visible ids, transparent for 0, hidden and unknown."""
    lut = np.zeros(LUT_SIZE, dtype=np.uint32)
    for cid, (r, g, b) in colors.items():
        if 0 < cid < LUT_SIZE and cid not in hidden:
            lut[cid] = 0xFF000000 | (int(r) << 16) | (int(g) << 8) | int(b)
    return lut


def outline_argb(window: np.ndarray, inner: tuple[int, int, int, int], lut: np.ndarray, out):
    """Write into ``out`` the ARGB class boundaries of ``window[inner]`` (labels with context).

    A pixel is on a boundary when a 4-neighbour has another label; it is drawn in its own class
    colour, so a boundary between two classes shows both colours and 0 / hidden sides stay clear.
    """
    t, left, b, r = inner
    labels = np.ascontiguousarray(window, dtype=np.uint16)
    # Some 4-neighbour differs exactly when the max and min over the cross differ; OpenCV's
    # morphology does that in two fast passes (and ignores the image border, as we want).
    high = cv2.dilate(labels, _CROSS)[t:b, left:r]
    low = cv2.erode(labels, _CROSS)[t:b, left:r]
    on_edge = labels[t:b, left:r] * (high != low)  # the label where on a boundary, else 0
    _lookup(lut, on_edge, out)


def _lookup(lut: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out[...] = lut[index] for a uint32 ``lut``, written in place."""
    if index.size == 0:
        return
    if index.dtype == np.uint8 or int(index.max()) < 256:
        # Projects rarely reach class id 256: an 8-bit cv2.LUT is ~6x faster than np.take.
        small = np.ascontiguousarray(lut[:256]).view(np.int32)
        result = cv2.LUT(index.astype(np.uint8, copy=False), small, dst=out.view(np.int32))
        if not np.shares_memory(result, out):
            out[...] = result.view(np.uint32)
    elif out.flags.c_contiguous:
        np.take(lut, index, out=out, mode="clip")  # "raise" would buffer the whole output
    else:
        out[...] = np.take(lut, index, mode="clip")


def confidence_lut(threshold: float) -> np.ndarray:
    """Premultiplied magenta ARGB per confidence step 0..255: clear at or above ``threshold``,
    more opaque as confidence drops."""
    c = np.arange(256, dtype=np.float64) / 255.0
    doubt = np.clip(1.0 - c / max(threshold, 1e-6), 0.0, 1.0)
    alpha = np.round(CONFIDENCE_ALPHA_MIN + (CONFIDENCE_ALPHA_MAX - CONFIDENCE_ALPHA_MIN) * doubt)
    alpha = np.where(c < threshold, alpha, 0).astype(np.uint32)
    return (alpha << 24) | (alpha << 16) | alpha


def confidence_argb(conf: np.ndarray, threshold: float, out: np.ndarray) -> None:
    """Write the confidence tint of ``conf`` (float in [0, 1]) into ``out`` (uint32 ARGB)."""
    # 256 steps are plenty to see, and an 8-bit lookup is ~10x cheaper than float maths on 12 MP.
    steps = cv2.convertScaleAbs(np.ascontiguousarray(conf, dtype=np.float32), alpha=255.0)
    _lookup(confidence_lut(threshold), steps, out)


class SampleGrid:
    """Which full-resolution pixel each display pixel shows (nearest); identity up to 16 MP."""

    def __init__(self, height: int, width: int, max_pixels: int | None = None):
        max_pixels = MAX_DISPLAY_PIXELS if max_pixels is None else max_pixels
        self.full_shape = (height, width)
        if height * width <= max_pixels:
            self.rows = self.cols = None
            self.shape = (height, width)
        else:
            s = math.sqrt(max_pixels / (height * width))
            dh, dw = max(1, int(height * s)), max(1, int(width * s))
            self.shape = (dh, dw)
            self.rows = np.minimum(((np.arange(dh) + 0.5) * height / dh).astype(np.int64), height - 1)
            self.cols = np.minimum(((np.arange(dw) + 0.5) * width / dw).astype(np.int64), width - 1)

    @property
    def identity(self) -> bool:
        return self.rows is None

    def display_box(self, y0: int, x0: int, y1: int, x1: int):
        """Display-pixel box (y0, x0, y1, x1) of the display pixels sampling a full-res box."""
        dh, dw = self.shape
        if self.identity:
            dy0, dx0, dy1, dx1 = y0, x0, y1, x1
        else:
            dy0, dy1 = np.searchsorted(self.rows, [y0, y1]).tolist()
            dx0, dx1 = np.searchsorted(self.cols, [x0, x1]).tolist()
        return (max(dy0, 0), max(dx0, 0), min(dy1, dh), min(dx1, dw))

    def sample(self, array: np.ndarray, box) -> np.ndarray:
        """``array`` (full resolution) at the display pixels of a display ``box``."""
        y0, x0, y1, x1 = box
        if self.identity:
            return array[y0:y1, x0:x1]
        # Two 1-D takes: ~10x faster than one 2-D fancy index on a 24 MP map.
        return np.take(np.take(array, self.rows[y0:y1], axis=0), self.cols[x0:x1], axis=1)


class Layer(QGraphicsItem):
    """A QImage at display resolution stretched over the full-resolution image rectangle."""

    def __init__(self, smooth: bool = False):
        super().__init__()
        self._image = QImage()
        self._rect = QRectF()
        self._sx = self._sy = 1.0
        self._smooth = smooth  # bilinear when zoomed out (photos), nearest for label maps
        self._valid = True  # False: the pixels belong to the previous image
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)

    def reset(self, full_hw, display_hw, fmt=QImage.Format.Format_ARGB32_Premultiplied) -> None:
        """A new transparent image; clears the layer (``display_hw`` (0, 0) empties it)."""
        self.prepareGeometryChange()
        (h, w), (dh, dw) = full_hw, display_hw
        self._rect = QRectF(0, 0, w, h)
        if dh and dw:
            self._image = QImage(dw, dh, fmt)
            self._image.fill(0)
            self._sx, self._sy = w / dw, h / dh
        else:
            self._image = QImage()
        self.update()

    def ensure(self, full_hw, display_hw, fmt=QImage.Format.Format_ARGB32_Premultiplied) -> None:
        """Prepare for a full rewrite of the pixels: `reset` only if the size or format differs
        (allocating and clearing 48 MB again costs more than drawing them)."""
        h, w = full_hw
        if (self._image.isNull() or self._image.format() != fmt
                or (self._image.height(), self._image.width()) != tuple(display_hw)
                or self._rect != QRectF(0, 0, w, h)):
            self.reset(full_hw, display_hw, fmt)
        self._valid = True
        self.update()

    def invalidate(self) -> None:
        """Draw nothing until the next `ensure` (keeps the buffer for the next image)."""
        self._valid = False
        self.update()

    @property
    def is_empty(self) -> bool:
        return self._image.isNull()

    def pixels(self) -> np.ndarray:
        """Writable uint32 (dh, dw) view of the image buffer; call `changed` after writing."""
        img = self._image
        buf = np.frombuffer(img.bits(), dtype=np.uint32)  # bits() detaches: we own it alone
        return buf.reshape(img.height(), img.bytesPerLine() // 4)[:, : img.width()]

    def changed(self, box=None) -> None:
        """Schedule a repaint of a display-pixel box (y0, x0, y1, x1), or of everything."""
        if box is None:
            self.update()
            return
        y0, x0, y1, x1 = box
        self.update(QRectF(x0 * self._sx, y0 * self._sy, (x1 - x0) * self._sx, (y1 - y0) * self._sy))

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if self._image.isNull() or not self._valid:
            return
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        # Snap the exposed area outwards to whole display pixels: no half-pixel seams.
        dx0 = max(math.floor(exposed.left() / self._sx), 0)
        dy0 = max(math.floor(exposed.top() / self._sy), 0)
        dx1 = min(math.ceil(exposed.right() / self._sx), self._image.width())
        dy1 = min(math.ceil(exposed.bottom() / self._sy), self._image.height())
        if dx1 <= dx0 or dy1 <= dy0:
            return
        source = QRect(dx0, dy0, dx1 - dx0, dy1 - dy0)
        target = QRectF(dx0 * self._sx, dy0 * self._sy, source.width() * self._sx,
                        source.height() * self._sy)
        screen_per_pixel = painter.worldTransform().m11() * self._sx
        painter.setRenderHint(
            QPainter.RenderHint.SmoothPixmapTransform, self._smooth and screen_per_pixel < 1.0
        )
        painter.drawImage(target, self._image, source)


PROVENANCE_STRIPE = 6  # display pixels per hatch period on model-decided pixels


def provenance_argb(prov: np.ndarray, box, out: np.ndarray, model_value: int = 1) -> None:
    """Hatch the model-decided pixels of ``prov`` (a display-grid window starting at ``box``'s
    corner) into ``out`` (uint32 premultiplied ARGB): a dark veil with light diagonal stripes, so
    what a person still has to check stands out whatever the class colour; other pixels clear."""
    h, w = prov.shape
    yy, xx = np.ogrid[box[0]:box[0] + h, box[1]:box[1] + w]
    stripe = ((yy + xx) % PROVENANCE_STRIPE) < 2
    light = np.uint32((150 << 24) | (150 << 16) | (150 << 8) | 150)  # white at alpha 150, premultiplied
    dark = np.uint32(90 << 24)  # black at alpha 90
    out[...] = np.where(prov == model_value, np.where(stripe, light, dark), np.uint32(0))


class LayerStack:
    """The image, mask, outline and confidence layers of one image, kept at one display grid.

    ``labels`` is held by reference: the document edits it in place and `update_labels(bbox)`
    recolours just that box (a brush dab on a 12 MP image touches a few thousand pixels).
    """

    def __init__(self, scene: QGraphicsScene):
        self.image = Layer(smooth=True)
        self.masks = Layer()
        self.outlines = Layer()
        self.confidence = Layer()
        self.provenance = Layer()
        for z, layer in enumerate((self.image, self.masks, self.outlines, self.confidence, self.provenance)):
            layer.setZValue(z)
            scene.addItem(layer)
        self.shape: tuple[int, int] | None = None  # full resolution (h, w)
        self.grid: SampleGrid | None = None
        self.labels: np.ndarray | None = None
        self.lut = color_lut({})
        self.threshold = 0.5  # confidence below this is highlighted
        self._outlines_dirty = True  # outlines are computed only while shown
        self.confidence_map: np.ndarray | None = None  # held by reference, tinted only while shown
        self._confidence_dirty = True
        self.provenance_map: np.ndarray | None = None  # held by reference, hatched only while shown
        self._provenance_dirty = True

    def set_image(self, rgb: np.ndarray) -> None:
        """A new image: resets every layer (labels and confidence belong to the old image)."""
        h, w = rgb.shape[:2]
        self.shape = (h, w)
        self.grid = SampleGrid(h, w)
        dh, dw = self.grid.shape
        if not self.grid.identity:
            # Area averaging only pays when shrinking a lot; it is ~5x slower than bilinear.
            fast = dh * 2 > h
            rgb = cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_LINEAR if fast else cv2.INTER_AREA)
        self.image.ensure((h, w), (dh, dw), QImage.Format.Format_RGB32)
        # Format_RGB32 is 0xffRRGGBB, i.e. bytes B, G, R, 255 on little-endian machines. Converted
        # straight into the QImage's buffer: no 48 MB temporary on a 12 MP image.
        bgra = self.image.pixels().view(np.uint8).reshape(dh, dw, 4)
        done = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA, dst=bgra)
        if not np.shares_memory(done, bgra):  # OpenCV could not write in place
            bgra[:] = done
        self.image.changed()
        self.labels = self.confidence_map = self.provenance_map = None
        for layer in (self.masks, self.outlines, self.confidence, self.provenance):
            layer.invalidate()

    def clear(self) -> None:
        self.shape = self.grid = self.labels = self.confidence_map = self.provenance_map = None
        for layer in (self.image, self.masks, self.outlines, self.confidence, self.provenance):
            layer.reset((0, 0), (0, 0))

    def set_labels(self, labels: np.ndarray, colors, hidden) -> None:
        if self.shape is None:
            raise RuntimeError("set_image before set_labels")
        if labels.shape != self.shape:
            raise ValueError(f"labels {labels.shape} do not match the image {self.shape}")
        self.labels = labels
        self.lut = color_lut(colors, set(hidden))
        self.masks.ensure(self.shape, self.grid.shape)
        self._outlines_dirty = True
        self.update_labels(None)

    def update_labels(self, bbox=None) -> None:
        """Recolour the full-resolution box (y0, x0, y1, x1) of the labels, or all of them."""
        if self.labels is None:
            return
        h, w = self.shape
        y0, x0, y1, x1 = (0, 0, h, w) if bbox is None else bbox
        box = self.grid.display_box(max(y0, 0), max(x0, 0), min(y1, h), min(x1, w))
        if box[0] >= box[2] or box[1] >= box[3]:
            return
        sampled = self.grid.sample(self.labels, box)
        _lookup(self.lut, sampled, self.masks.pixels()[box[0] : box[2], box[1] : box[3]])
        self.masks.changed(box)
        self.refresh_provenance(box)
        if self.outlines.isVisible() and bbox is not None and not self._outlines_dirty:
            self._render_outlines(box)
        else:
            self._outlines_dirty = True
            self.refresh_outlines()

    def refresh_outlines(self) -> None:
        """Bring the outlines up to date if they are shown (call after showing them)."""
        if self.outlines.isVisible() and self._outlines_dirty and self.labels is not None:
            self.outlines.ensure(self.shape, self.grid.shape)  # allocated once first shown
            self._render_outlines(None)
            self._outlines_dirty = False

    def _render_outlines(self, box) -> None:
        dh, dw = self.grid.shape
        box = (0, 0, dh, dw) if box is None else box
        # One display pixel more on each side: an edit can make a pixel just outside the box a
        # boundary pixel (or stop it being one); one more again for the neighbours that decide.
        y0, x0 = max(box[0] - 1, 0), max(box[1] - 1, 0)
        y1, x1 = min(box[2] + 1, dh), min(box[3] + 1, dw)
        cy0, cx0, cy1, cx1 = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, dh), min(x1 + 1, dw)
        window = self.grid.sample(self.labels, (cy0, cx0, cy1, cx1))
        inner = (y0 - cy0, x0 - cx0, y1 - cy0, x1 - cx0)
        outline_argb(window, inner, self.lut, self.outlines.pixels()[y0:y1, x0:x1])
        self.outlines.changed((y0, x0, y1, x1))

    def set_confidence(self, confidence: np.ndarray | None) -> None:
        """The confidence map (a reference, like ``labels``). Its tint is computed only while the
        layer is shown, like the outlines: a hidden layer costs neither the time nor a 48 MB
        ARGB buffer on a 12 MP image."""
        if confidence is not None and self.shape is not None and confidence.shape != self.shape:
            raise ValueError(f"confidence {confidence.shape} does not match the image {self.shape}")
        self.confidence_map = None if self.shape is None else confidence
        self._confidence_dirty = True
        self.confidence.invalidate()
        self.refresh_confidence()

    def refresh_confidence(self) -> None:
        """Bring the confidence tint up to date if it is shown (call after showing it)."""
        if not (self.confidence.isVisible() and self._confidence_dirty and self.confidence_map is not None):
            return
        dh, dw = self.grid.shape
        self.confidence.ensure(self.shape, (dh, dw))  # allocated once first shown
        sampled = self.grid.sample(self.confidence_map, (0, 0, dh, dw))
        confidence_argb(sampled, self.threshold, self.confidence.pixels())
        self.confidence.changed()
        self._confidence_dirty = False

    def set_provenance(self, provenance: np.ndarray | None) -> None:
        """The provenance map (uint8, a reference: edits change it in place and come with
        ``update_labels(bbox)``, which re-hatches that box while the layer is shown)."""
        if provenance is not None and self.shape is not None and provenance.shape != self.shape:
            raise ValueError(f"provenance {provenance.shape} does not match the image {self.shape}")
        self.provenance_map = None if self.shape is None else provenance
        self._provenance_dirty = True
        self.provenance.invalidate()
        self.refresh_provenance(None)

    def refresh_provenance(self, box=None) -> None:
        """Re-hatch the display ``box`` (all when None) if the layer is shown."""
        if not self.provenance.isVisible() or self.provenance_map is None:
            return
        dh, dw = self.grid.shape
        if box is None or self._provenance_dirty:
            self.provenance.ensure(self.shape, (dh, dw))  # allocated once first shown
            box, self._provenance_dirty = (0, 0, dh, dw), False
        sampled = self.grid.sample(self.provenance_map, box)
        provenance_argb(sampled, box, self.provenance.pixels()[box[0]:box[2], box[1]:box[3]])
        self.provenance.changed(box)
