"""The image canvas: shows an image with its label map and routes pointer input to editing tools.

The canvas never edits labels itself. Tools emit signals in *image pixel coordinates* (floats;
pixel (x, y) covers [x, x+1) x [y, y+1), the same system as `chimera_app.editing.tools`); the
window turns them into a Region, paints the document and calls `update_labels(region.bbox)`.

Scene coordinates are full-resolution image pixels, always: images above 16 MP are shown from a
downscaled copy stretched over the full rectangle (see `overlay`), so tools stay exact.

Layers (bottom to top): image, label masks (class colours at `opacity`), outlines (class
boundaries, opaque), confidence (uncertain pixels tinted), then tool previews.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPen, QTransform
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGraphicsEllipseItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QLineEdit,
)

from chimera_app.ui.overlay import LayerStack

__all__ = ["TOOLS", "Canvas"]

TOOLS = ("brush", "eraser", "fill", "polygon", "rectangle", "pan")
ZOOM_MIN, ZOOM_MAX = 1 / 256, 64.0
ZOOM_STEP = 1.25  # zoom_in / zoom_out
WHEEL_NOTCH_ZOOM = 2 ** 0.25  # one wheel notch (120 units); trackpads send fractions of a notch
RADIUS_MIN, RADIUS_MAX, RADIUS_STEP = 0.5, 1000.0, 1.2
DRAG_THRESHOLD_PX = 3  # a rectangle smaller than this on screen is a stray click, not a drag
_PREVIEW_Z = 10


class Canvas(QGraphicsView):
    """QGraphicsView of one image, its label overlay and the tool in use."""

    stroke_finished = Signal(list, float, bool)  # [(x, y), ...], radius, erase
    fill_requested = Signal(float, float)
    polygon_finished = Signal(list, bool)  # [(x, y), ...], subtract
    rectangle_finished = Signal(float, float, float, float)  # x0, y0, x1, y1 (drag start, end)
    region_clicked = Signal(float, float)  # Ctrl+click: accept the prediction here
    zoom_changed = Signal(float)  # screen pixels per image pixel
    brush_radius_changed = Signal(float)
    cursor_moved = Signal(float, float)  # image coordinates under the pointer (status bar)
    pointer_left = Signal()  # the pointer left the view: nothing is under it any more

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setBackgroundBrush(QColor(40, 40, 40))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)

        self._layers = LayerStack(self.scene())
        self._cursor_items = (QGraphicsEllipseItem(), QGraphicsEllipseItem())
        # Black under white dashes: visible on any image. Width 0 = one screen pixel at any zoom.
        for item, color, style in zip(self._cursor_items, (Qt.GlobalColor.black, Qt.GlobalColor.white),
                                      (Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine)):
            item.setPen(QPen(color, 0, style))
            item.setZValue(_PREVIEW_Z + 1)
            item.setVisible(False)
            self.scene().addItem(item)
        self._preview = QGraphicsPathItem()
        self._preview.setZValue(_PREVIEW_Z)
        self.scene().addItem(self._preview)
        self._rect_preview = QGraphicsRectItem()
        self._rect_preview.setZValue(_PREVIEW_Z)
        self._rect_preview.setPen(QPen(Qt.GlobalColor.white, 0, Qt.PenStyle.DashLine))
        self._rect_preview.setBrush(QColor(255, 255, 255, 60))
        self.scene().addItem(self._rect_preview)

        self._layers.masks.setOpacity(0.5)
        self._layers.outlines.setVisible(False)
        self._layers.confidence.setVisible(False)

        self._layers.provenance.setVisible(False)
        self._notice = ""

        self._tool = "brush"
        self._radius = 8.0
        self.brush_color: tuple[int, int, int] = (255, 255, 255)  # stroke preview colour
        self._fitted = True  # keep fitting on resize until the user zooms
        self._space = False
        self._hover = False  # the pointer is over the view (the brush circle follows it)
        self._pointer: QPointF | None = None  # its last viewport position while over the view
        self._pan_from: QPointF | None = None
        self._stroke: list[tuple[float, float]] | None = None
        self._poly: list[tuple[float, float]] | None = None
        self._poly_subtract = False
        self._rect_from: tuple[QPointF, tuple[float, float]] | None = None
        self._update_cursor()

    # ---- content ---------------------------------------------------------------------------
    def set_image(self, rgb: np.ndarray) -> None:
        """Show an RGB uint8 HxWx3 image and fit it to the view; clears labels and confidence."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
        self.cancel()
        self.set_notice("")
        self._layers.set_image(rgb)
        h, w = rgb.shape[:2]
        self.scene().setSceneRect(QRectF(0, 0, w, h))
        self.fit()

    def clear(self, notice: str = "") -> None:
        """Show nothing (no image open), or only ``notice`` (e.g. why an image cannot be shown)."""
        self.cancel()
        self._layers.clear()
        self.set_notice(notice)

    def set_notice(self, text: str) -> None:
        """Text drawn over the middle of the view ("" for none): the reason an image is missing."""
        self._notice = text
        self.viewport().update()

    @property
    def notice(self) -> str:
        return self._notice

    def drawForeground(self, painter, rect) -> None:
        super().drawForeground(painter, rect)
        if not self._notice:
            return
        painter.save()
        painter.resetTransform()  # viewport coordinates: the text stays put while zooming
        area = self.viewport().rect().adjusted(40, 40, -40, -40)
        painter.setPen(QColor(235, 235, 235))
        painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), self._notice)
        painter.restore()

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(h, w) of the full-resolution image, None when there is none."""
        return self._layers.shape

    @property
    def labels(self) -> np.ndarray | None:
        """The label map on screen (a reference, not a copy), None when there is none."""
        return self._layers.labels

    @property
    def _shape(self) -> tuple[int, int] | None:
        return self._layers.shape

    def set_labels(
        self,
        labels: np.ndarray,
        colors: dict[int, tuple[int, int, int]],
        hidden: Collection[int] = frozenset(),
    ) -> None:
        """Show a uint16 label map (same size as the image) in class ``colors``; ids in ``hidden``,
        0 and ids without a colour are not drawn. The canvas keeps a *reference*: after editing
        ``labels`` in place call `update_labels(bbox)`. Also the way to recolour or hide classes."""
        self._layers.set_labels(labels, colors, hidden)

    def update_labels(self, bbox: tuple[int, int, int, int] | None = None) -> None:
        """Recolour the full-resolution box (y0, x0, y1, x1) (`Region.bbox`), or all of it."""
        self._layers.update_labels(bbox)

    def set_confidence(self, confidence: np.ndarray | None) -> None:
        """Per-pixel confidence (float HxW in [0, 1]) of the latest prediction, or None."""
        self._layers.set_confidence(confidence)

    def set_provenance(self, provenance: np.ndarray | None) -> None:
        """Who decided each pixel (uint8 HxW, ``Provenance`` values; a reference, re-read in the
        box of every ``update_labels``): the provenance view hatches the model's pixels."""
        self._layers.set_provenance(provenance)

    @property
    def show_provenance(self) -> bool:
        return self._layers.provenance.isVisible()

    @show_provenance.setter
    def show_provenance(self, value: bool) -> None:
        self._layers.provenance.setVisible(bool(value))
        if value:
            self._layers.refresh_provenance(None)

    @property
    def confidence_threshold(self) -> float:
        """Confidence below this is highlighted (takes effect at the next `set_confidence`)."""
        return self._layers.threshold

    @confidence_threshold.setter
    def confidence_threshold(self, value: float) -> None:
        self._layers.threshold = float(value)

    # ---- display properties -----------------------------------------------------------------
    @property
    def opacity(self) -> float:
        """Opacity of the label masks, 0..1 (outlines and confidence stay opaque)."""
        return self._layers.masks.opacity()

    @opacity.setter
    def opacity(self, value: float) -> None:
        self._layers.masks.setOpacity(min(max(float(value), 0.0), 1.0))

    @property
    def show_masks(self) -> bool:
        return self._layers.masks.isVisible()

    @show_masks.setter
    def show_masks(self, value: bool) -> None:
        self._layers.masks.setVisible(bool(value))

    @property
    def show_outlines(self) -> bool:
        return self._layers.outlines.isVisible()

    @show_outlines.setter
    def show_outlines(self, value: bool) -> None:
        self._layers.outlines.setVisible(bool(value))
        self._layers.refresh_outlines()  # outlines are only computed while shown

    @property
    def show_confidence(self) -> bool:
        return self._layers.confidence.isVisible()

    @show_confidence.setter
    def show_confidence(self, value: bool) -> None:
        self._layers.confidence.setVisible(bool(value))
        self._layers.refresh_confidence()  # the tint is only computed while shown

    # ---- zoom ---------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        """Screen pixels per full-resolution image pixel."""
        return self.transform().m11()

    def set_zoom(self, zoom: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under ``anchor`` (viewport pixels; default the centre)."""
        zoom = min(max(zoom, ZOOM_MIN), ZOOM_MAX)
        if anchor is None:
            anchor = QPointF(self.viewport().rect().center())
        before = self.map_to_image(anchor)
        self.setTransform(QTransform.fromScale(zoom, zoom))
        after = self.map_to_image(anchor)
        hbar, vbar = self.horizontalScrollBar(), self.verticalScrollBar()
        hbar.setValue(hbar.value() + round((before[0] - after[0]) * zoom))
        vbar.setValue(vbar.value() + round((before[1] - after[1]) * zoom))
        self._fitted = False
        self._update_brush_cursor()
        self.zoom_changed.emit(zoom)

    def zoom_in(self) -> None:
        self.set_zoom(self.zoom * ZOOM_STEP)

    def zoom_out(self) -> None:
        self.set_zoom(self.zoom / ZOOM_STEP)

    def actual_size(self) -> None:
        """100 %: one screen pixel per full-resolution image pixel."""
        self.set_zoom(1.0)

    def fit(self) -> None:
        """Show the whole image, as large as the view allows; kept fitted on resize."""
        if self._shape is None:
            return
        self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True
        self._update_brush_cursor()
        self.zoom_changed.emit(self.zoom)

    def frame_region(self, bbox: tuple[int, int, int, int], max_zoom: float = 8.0) -> None:
        """Centre on the full-resolution box (y0, x0, y1, x1) with half its size of context
        around it, zoomed in no further than ``max_zoom`` (a speck should not fill the screen)."""
        y0, x0, y1, x1 = bbox
        w, h = max(x1 - x0, 1), max(y1 - y0, 1)
        view = self.viewport().rect()
        zoom = min(view.width() / (2 * w), view.height() / (2 * h), max_zoom)
        self.setTransform(QTransform.fromScale(zoom, zoom))
        self.centerOn(QPointF(x0 + w / 2, y0 + h / 2))
        self._fitted = False
        self._update_brush_cursor()
        self.zoom_changed.emit(self.zoom)

    def map_to_image(self, view_pos: QPointF) -> tuple[float, float]:
        """Image (x, y) under a viewport position, at sub-pixel precision."""
        inverse, _ = self.viewportTransform().inverted()
        p = inverse.map(QPointF(view_pos))
        return (p.x(), p.y())

    def map_from_image(self, x: float, y: float) -> QPointF:
        """Viewport position of image point (x, y)."""
        return self.viewportTransform().map(QPointF(x, y))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event) -> None:
        # Plain wheel and Ctrl+wheel both zoom at the cursor: annotators zoom far more than scroll.
        delta = event.angleDelta().y() or event.angleDelta().x()
        if not delta:
            delta = event.pixelDelta().y()
        if delta and self._shape is not None:
            self.set_zoom(self.zoom * WHEEL_NOTCH_ZOOM ** (delta / 120), event.position())
        event.accept()

    # ---- tools --------------------------------------------------------------------------------
    @property
    def tool(self) -> str:
        return self._tool

    def set_tool(self, name: str) -> None:
        if name not in TOOLS:
            raise ValueError(f"unknown tool {name!r}; expected one of {', '.join(TOOLS)}")
        self.cancel()
        self._tool = name
        self._update_cursor()

    @property
    def brush_radius(self) -> float:
        """Brush / eraser radius in full-resolution image pixels."""
        return self._radius

    @brush_radius.setter
    def brush_radius(self, value: float) -> None:
        value = min(max(float(value), RADIUS_MIN), RADIUS_MAX)
        if value != self._radius:
            self._radius = value
            self._update_brush_cursor()
            self.brush_radius_changed.emit(value)

    @property
    def busy(self) -> bool:
        """A stroke, polygon, rectangle or pan is in progress."""
        return any(v is not None for v in (self._stroke, self._poly, self._rect_from, self._pan_from))

    def cancel(self) -> bool:
        """Drop the stroke / polygon / rectangle in progress; True if there was one."""
        had = self._stroke is not None or self._poly is not None or self._rect_from is not None
        self._stroke = self._poly = self._rect_from = None
        self._poly_subtract = False
        self._preview.setPath(QPainterPath())
        self._rect_preview.setVisible(False)
        return had

    def _in_image(self, p: tuple[float, float]) -> bool:
        return self._shape is not None and 0 <= p[0] < self._shape[1] and 0 <= p[1] < self._shape[0]

    def mousePressEvent(self, event) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        button, mods = event.button(), event.modifiers()
        left = button == Qt.MouseButton.LeftButton
        if button == Qt.MouseButton.MiddleButton or (left and (self._space or self._tool == "pan")):
            self._pan_from = event.position()
            self._update_cursor()
            return
        if self._shape is None:
            return
        p = self.map_to_image(event.position())
        if left and mods & Qt.KeyboardModifier.ControlModifier and self._poly is None:
            if self._in_image(p):
                self.region_clicked.emit(*p)
            return
        if self._tool in ("brush", "eraser") and left:
            self._stroke = [p]
            self._draw_stroke_preview()
        elif self._tool == "fill" and left:
            if self._in_image(p):
                self.fill_requested.emit(*p)
        elif self._tool == "polygon" and button in (Qt.MouseButton.LeftButton,
                                                    Qt.MouseButton.RightButton):
            if button == Qt.MouseButton.RightButton or mods & Qt.KeyboardModifier.ShiftModifier:
                self._poly_subtract = True
            if self._poly is None:
                self._poly = []
            # The press of a double-click lands on the vertex just placed: do not repeat it.
            if not self._poly or self._screen_distance(self._poly[-1], p) > DRAG_THRESHOLD_PX:
                self._poly.append(p)
            self._draw_polygon_preview(p)
        elif self._tool == "rectangle" and left:
            self._rect_from = (event.position(), p)
            self._draw_rect_preview(p)

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        p = self.map_to_image(pos)
        self._hover = True
        self._pointer = QPointF(pos)
        self._update_brush_cursor(p)
        if self._shape is not None:
            self.cursor_moved.emit(*p)
        if self._pan_from is not None:
            delta = pos - self._pan_from
            self._pan_from = pos
            hbar, vbar = self.horizontalScrollBar(), self.verticalScrollBar()
            hbar.setValue(hbar.value() - round(delta.x()))
            vbar.setValue(vbar.value() - round(delta.y()))
            self._fitted = False
        elif self._stroke is not None:
            if p != self._stroke[-1]:
                self._stroke.append(p)
                self._draw_stroke_preview()
        elif self._poly is not None:
            self._draw_polygon_preview(p)
        elif self._rect_from is not None:
            self._draw_rect_preview(p)

    def mouseReleaseEvent(self, event) -> None:
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton,
                                                              Qt.MouseButton.LeftButton):
            self._pan_from = None
            self._update_cursor()
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        if self._stroke is not None:
            points, self._stroke = self._stroke, None
            self._preview.setPath(QPainterPath())
            self.stroke_finished.emit(points, self._radius, self._tool == "eraser")
        elif self._rect_from is not None:
            (start_pos, start), self._rect_from = self._rect_from, None
            self._rect_preview.setVisible(False)
            end = self.map_to_image(event.position())
            moved = event.position() - start_pos
            if max(abs(moved.x()), abs(moved.y())) >= DRAG_THRESHOLD_PX:
                self.rectangle_finished.emit(start[0], start[1], end[0], end[1])

    def mouseDoubleClickEvent(self, event) -> None:
        # Qt sends this instead of the second press: still a click for every tool. For the
        # polygon the first press already placed the vertex (a press never adds it twice).
        self.mousePressEvent(event)
        if self._tool == "polygon" and self._poly is not None:
            self._finish_polygon()

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = True
            self._update_cursor()
        elif key == Qt.Key.Key_Space or (key == Qt.Key.Key_Escape and self.cancel()):
            pass  # auto-repeated Space; Esc that cancelled something
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self._poly is not None:
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self._poly_subtract = True
            self._finish_polygon()
        elif key == Qt.Key.Key_Backspace and self._poly:
            self._poly.pop()
            self._draw_polygon_preview(None)
        elif key == Qt.Key.Key_BracketLeft:
            self.brush_radius = self._radius / RADIUS_STEP
        elif key == Qt.Key.Key_BracketRight:
            self.brush_radius = self._radius * RADIUS_STEP
        else:
            super().keyPressEvent(event)  # unhandled keys (Esc with nothing to cancel) go up
            return
        event.accept()

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._update_cursor()
            event.accept()
            return
        super().keyReleaseEvent(event)

    def focusOutEvent(self, event) -> None:
        self._space = False  # the release may go to another widget
        self._update_cursor()
        super().focusOutEvent(event)

    def enterEvent(self, event) -> None:
        # Space-drag must work as soon as the pointer is over the image, without a click first;
        # but never steal the keys from a text field the user is typing in.
        focused = QApplication.focusWidget()
        if not isinstance(focused, QLineEdit) and self.window().isActiveWindow():
            self.setFocus(Qt.FocusReason.MouseFocusReason)
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:
        self._hover = False
        self._pointer = None
        self._update_brush_cursor()
        self.pointer_left.emit()
        super().leaveEvent(event)

    def pointer_image_pos(self) -> tuple[float, float] | None:
        """Image (x, y) under the pointer now (after a zoom, a fit or another image too), or None
        when the pointer is not over the view or no image is shown."""
        if self._pointer is None or self._shape is None:
            return None
        return self.map_to_image(self._pointer)

    def _finish_polygon(self) -> None:
        points, subtract = self._poly, self._poly_subtract
        self.cancel()
        if points is not None and len(points) >= 3:
            self.polygon_finished.emit(points, subtract)

    # ---- previews and cursors ---------------------------------------------------------------
    def _screen_distance(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        return math.hypot(a[0] - b[0], a[1] - b[1]) * self.zoom

    def _draw_stroke_preview(self) -> None:
        path = QPainterPath(QPointF(*self._stroke[0]))
        for x, y in self._stroke[1:]:
            path.lineTo(x, y)
        if len(self._stroke) == 1:  # a dot: Qt draws nothing for a path that never moves
            path.lineTo(self._stroke[0][0] + 1e-3, self._stroke[0][1])
        r, g, b = (230, 230, 230) if self._tool == "eraser" else self.brush_color
        pen = QPen(QColor(r, g, b, 140), 2 * self._radius, Qt.PenStyle.SolidLine,
                   Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
        self._preview.setPen(pen)
        self._preview.setBrush(Qt.BrushStyle.NoBrush)
        self._preview.setPath(path)

    def _draw_polygon_preview(self, hover: tuple[float, float] | None) -> None:
        if not self._poly:
            self._preview.setPath(QPainterPath())
            return
        path = QPainterPath(QPointF(*self._poly[0]))
        for x, y in self._poly[1:] + ([hover] if hover is not None else []):
            path.lineTo(x, y)
        path.closeSubpath()
        color = QColor(255, 80, 80) if self._poly_subtract else QColor(*self.brush_color)
        self._preview.setPen(QPen(color, 0, Qt.PenStyle.DashLine if self._poly_subtract
                                  else Qt.PenStyle.SolidLine))
        fill = QColor(color)
        fill.setAlpha(70)
        self._preview.setBrush(QBrush(fill))
        self._preview.setPath(path)

    def _draw_rect_preview(self, p: tuple[float, float]) -> None:
        # Snapped to whole pixels like editing.tools.rectangle: the preview is what gets painted.
        (_, (ax, ay)) = self._rect_from
        x0, y0 = math.floor(min(ax, p[0])), math.floor(min(ay, p[1]))
        x1 = max(math.ceil(max(ax, p[0])), x0 + 1)
        y1 = max(math.ceil(max(ay, p[1])), y0 + 1)
        self._rect_preview.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        self._rect_preview.setVisible(True)

    def _update_brush_cursor(self, p: tuple[float, float] | None = None) -> None:
        show = (self._hover and self._tool in ("brush", "eraser") and self._shape is not None
                and not self._space)
        if p is None:
            rect = self._cursor_items[0].rect()
            p = (rect.center().x(), rect.center().y()) if not rect.isNull() else None
        for item in self._cursor_items:
            item.setVisible(show and p is not None)
            if p is not None:
                r = self._radius
                item.setRect(QRectF(p[0] - r, p[1] - r, 2 * r, 2 * r))

    def _update_cursor(self) -> None:
        if self._pan_from is not None:
            shape = Qt.CursorShape.ClosedHandCursor
        elif self._space or self._tool == "pan":
            shape = Qt.CursorShape.OpenHandCursor
        else:
            shape = Qt.CursorShape.CrossCursor
        self.viewport().setCursor(shape)
        self._update_brush_cursor()
