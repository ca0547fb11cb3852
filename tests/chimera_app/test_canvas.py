"""The canvas, offscreen: what it draws (grabbed viewport pixels) and what its tools emit."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent

from chimera_app.ui import overlay
from chimera_app.ui.canvas import Canvas

GREY = (100, 100, 100)
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)
H, W = 48, 64


@pytest.fixture
def canvas(qtbot):
    view = Canvas()
    qtbot.addWidget(view)
    view.resize(320, 240)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(np.full((H, W, 3), GREY, dtype=np.uint8))
    return view


def labels_fixture():
    labels = np.zeros((H, W), dtype=np.uint16)
    labels[:, :20] = 1  # red band on the left
    labels[30:, 40:] = 2  # blue block bottom right
    labels[:10, 40:] = 3  # green block top right (hidden in some tests)
    return labels


def color_at(view: Canvas, x: float, y: float, image=None):
    """Screen colour at the centre of image pixel (x, y)."""
    image = image if image is not None else view.viewport().grab().toImage()
    pos = view.map_from_image(x + 0.5, y + 0.5).toPoint()
    return image.pixelColor(pos).getRgb()[:3]


def close(a, b, tol=3):
    return all(abs(int(p) - int(q)) <= tol for p, q in zip(a, b))


def view_pos(view: Canvas, x: float, y: float) -> QPoint:
    return view.map_from_image(x, y).toPoint()


def test_labels_render_in_class_colours_and_hidden_classes_are_not_drawn(canvas):
    canvas.opacity = 1.0
    canvas.set_labels(labels_fixture(), {1: RED, 2: BLUE, 3: GREEN}, hidden={3})
    shot = canvas.viewport().grab().toImage()
    assert close(color_at(canvas, 5, 5, shot), RED)
    assert close(color_at(canvas, 50, 40, shot), BLUE)
    assert close(color_at(canvas, 50, 4, shot), GREY)  # class 3 is hidden
    assert close(color_at(canvas, 30, 20, shot), GREY)  # unlabeled

    canvas.opacity = 0.5
    assert close(color_at(canvas, 5, 5), (178, 50, 50), tol=4)  # half red over grey
    canvas.show_masks = False
    assert close(color_at(canvas, 5, 5), GREY)


def test_update_labels_repaints_only_the_given_box(canvas):
    labels = labels_fixture()
    canvas.opacity = 1.0
    canvas.set_labels(labels, {1: RED, 2: BLUE, 3: GREEN})
    labels[20:25, 25:30] = 2  # an edit inside the box ...
    labels[0:2, 30:32] = 2  # ... and one the canvas is not told about
    canvas.update_labels((20, 25, 25, 30))
    shot = canvas.viewport().grab().toImage()
    assert close(color_at(canvas, 27, 22, shot), BLUE)
    assert close(color_at(canvas, 30, 0, shot), GREY)  # untouched: proves the update is local
    canvas.update_labels(None)
    assert close(color_at(canvas, 30, 0), BLUE)


def test_outlines_draw_class_boundaries_only(canvas):
    canvas.opacity = 0.0  # masks invisible: only the outlines show
    canvas.show_outlines = True
    labels = labels_fixture()
    canvas.set_labels(labels, {1: RED, 2: BLUE, 3: GREEN})
    shot = canvas.viewport().grab().toImage()
    assert close(color_at(canvas, 19, 20, shot), RED)  # last red column, next to unlabeled
    assert close(color_at(canvas, 10, 20, shot), GREY)  # inside the band
    assert close(color_at(canvas, 20, 20, shot), GREY)  # the unlabeled side has no outline
    labels[20:26, 30:36] = 1  # an incremental edit grows its own outline
    canvas.update_labels((20, 30, 26, 36))
    shot = canvas.viewport().grab().toImage()
    assert close(color_at(canvas, 30, 22, shot), RED)
    assert close(color_at(canvas, 32, 22, shot), GREY)


def test_confidence_overlay_highlights_low_confidence(canvas):
    conf = np.ones((H, W), dtype=np.float32)
    conf[10:20, 10:20] = 0.1
    canvas.set_confidence(conf)
    canvas.show_confidence = True
    shot = canvas.viewport().grab().toImage()
    r, g, b = color_at(canvas, 15, 15, shot)
    assert r > 150 and b > 150 and g < 60  # strongly tinted magenta
    assert close(color_at(canvas, 30, 30, shot), GREY)
    canvas.show_confidence = False
    assert close(color_at(canvas, 15, 15), GREY)


def test_hidden_confidence_costs_no_buffer_and_is_drawn_when_shown(canvas):
    conf = np.ones((H, W), dtype=np.float32)
    conf[10:20, 10:20] = 0.1
    canvas.set_confidence(conf)
    assert not canvas.show_confidence and canvas._layers.confidence.is_empty  # no ARGB map while hidden
    canvas.show_confidence = True
    r, g, b = color_at(canvas, 15, 15)
    assert r > 150 and b > 150 and g < 60
    canvas.show_confidence = False
    canvas.set_confidence(np.ones((H, W), dtype=np.float32))  # a new prediction while hidden
    canvas.show_confidence = True
    assert close(color_at(canvas, 15, 15), GREY)  # the new map, not the old tint
    canvas.set_image(np.full((H, W, 3), GREY, dtype=np.uint8))  # a new image drops the old map
    assert close(color_at(canvas, 15, 15), GREY)


def test_brush_drag_emits_image_coordinates_at_zoom(canvas, qtbot):
    canvas.set_zoom(5.0, anchor=QPointF(0, 0))
    assert canvas.zoom == pytest.approx(5.0)
    canvas.brush_radius = 3.0
    path = [(20.3, 10.1), (25.0, 12.0), (30.2, 15.8)]
    with qtbot.waitSignal(canvas.stroke_finished) as blocker:
        qtbot.mousePress(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(canvas, *path[0]))
        for p in path[1:]:
            qtbot.mouseMove(canvas.viewport(), pos=view_pos(canvas, *p))
        qtbot.mouseRelease(canvas.viewport(), Qt.MouseButton.LeftButton,
                           pos=view_pos(canvas, *path[-1]))
    points, radius, erase = blocker.args
    assert len(points) == 3 and radius == 3.0 and erase is False
    for (x, y), (ex, ey) in zip(points, path):
        assert abs(x - ex) <= 0.2 and abs(y - ey) <= 0.2  # within one screen pixel at 5x

    canvas.set_tool("eraser")
    with qtbot.waitSignal(canvas.stroke_finished) as blocker:
        qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(canvas, 22, 11))
    assert blocker.args[2] is True


def test_fill_and_ctrl_click(canvas, qtbot):
    canvas.set_tool("fill")
    with qtbot.waitSignal(canvas.fill_requested) as blocker:
        qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(canvas, 12.5, 30.5))
    assert blocker.args == pytest.approx([12.5, 30.5], abs=0.3)
    with qtbot.waitSignal(canvas.region_clicked) as blocker:
        qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.ControlModifier, view_pos(canvas, 40.5, 8.5))
    assert blocker.args == pytest.approx([40.5, 8.5], abs=0.3)


def test_polygon_double_click_enter_and_subtract(canvas, qtbot):
    canvas.set_tool("polygon")
    vp = canvas.viewport()
    corners = [(5, 5), (30, 6), (20, 40)]
    with qtbot.waitSignal(canvas.polygon_finished) as blocker:
        for p in corners[:-1]:
            qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, *p))
        qtbot.mouseDClick(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, *corners[-1]))
    points, subtract = blocker.args
    assert subtract is False and len(points) == 3
    assert np.allclose(points, corners, atol=0.3)

    with qtbot.waitSignal(canvas.polygon_finished) as blocker:  # right button: subtract
        for p in corners:
            qtbot.mouseClick(vp, Qt.MouseButton.RightButton, pos=view_pos(canvas, *p))
        qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert blocker.args[1] is True

    with qtbot.waitSignal(canvas.polygon_finished) as blocker:  # Shift: subtract
        for p in corners:
            qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier,
                             view_pos(canvas, *p))
        qtbot.keyClick(canvas, Qt.Key.Key_Enter)
    assert blocker.args[1] is True


def test_escape_cancels_polygon_and_stroke(canvas, qtbot):
    vp = canvas.viewport()
    canvas.set_tool("polygon")
    with qtbot.assertNotEmitted(canvas.polygon_finished):
        for p in [(5, 5), (30, 6), (20, 40)]:
            qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, *p))
        qtbot.keyClick(canvas, Qt.Key.Key_Escape)
        assert not canvas.busy
        qtbot.keyClick(canvas, Qt.Key.Key_Return)  # nothing left to close
    canvas.set_tool("brush")
    with qtbot.assertNotEmitted(canvas.stroke_finished):
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, 10, 10))
        qtbot.mouseMove(vp, pos=view_pos(canvas, 20, 20))
        qtbot.keyClick(canvas, Qt.Key.Key_Escape)
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, 20, 20))


def test_rectangle_drag(canvas, qtbot):
    canvas.set_tool("rectangle")
    canvas.set_zoom(3.0)
    vp = canvas.viewport()
    with qtbot.waitSignal(canvas.rectangle_finished) as blocker:
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, 30, 20))
        qtbot.mouseMove(vp, pos=view_pos(canvas, 35, 24))
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, 40, 28))
    assert blocker.args == pytest.approx([30, 20, 40, 28], abs=0.4)
    with qtbot.assertNotEmitted(canvas.rectangle_finished):  # a click is not a rectangle
        qtbot.mouseClick(vp, Qt.MouseButton.LeftButton, pos=view_pos(canvas, 30, 20))


def test_zoom_fit_actual_size_and_wheel_at_cursor(canvas, qtbot):
    vp = canvas.viewport().size()
    assert canvas.zoom == pytest.approx(min(vp.width() / W, vp.height() / H), rel=0.05)
    with qtbot.waitSignal(canvas.zoom_changed) as blocker:
        canvas.actual_size()
    assert blocker.args == [pytest.approx(1.0)] and canvas.zoom == pytest.approx(1.0)
    canvas.zoom_in()
    assert canvas.zoom == pytest.approx(1.25)
    canvas.fit()
    assert canvas.zoom == pytest.approx(min(vp.width() / W, vp.height() / H), rel=0.05)

    canvas.set_zoom(8.0)  # the image is larger than the view: there is room to keep the anchor
    anchor = view_pos(canvas, 28.0, 20.0)
    before = canvas.map_to_image(QPointF(anchor))
    event = QWheelEvent(QPointF(anchor), QPointF(canvas.mapToGlobal(anchor)), QPoint(0, 0),
                        QPoint(0, 120), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    canvas.wheelEvent(event)
    assert canvas.zoom == pytest.approx(8.0 * 2 ** 0.25)
    after = canvas.map_to_image(QPointF(anchor))
    assert after == pytest.approx(before, abs=0.3)  # the point under the cursor stays put


def test_space_and_middle_drag_pan_without_painting(canvas, qtbot):
    canvas.set_zoom(6.0)
    vp = canvas.viewport()
    centre = vp.rect().center()
    before = canvas.map_to_image(QPointF(centre))
    with qtbot.assertNotEmitted(canvas.stroke_finished):
        qtbot.mousePress(vp, Qt.MouseButton.MiddleButton, pos=centre)
        qtbot.mouseMove(vp, pos=centre + QPoint(30, 12))
        qtbot.mouseRelease(vp, Qt.MouseButton.MiddleButton, pos=centre + QPoint(30, 12))
        moved = canvas.map_to_image(QPointF(centre))
        assert moved == pytest.approx((before[0] - 5, before[1] - 2), abs=0.3)

        qtbot.keyPress(canvas, Qt.Key.Key_Space)
        qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=centre)
        qtbot.mouseMove(vp, pos=centre - QPoint(30, 12))
        qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=centre - QPoint(30, 12))
        qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert canvas.map_to_image(QPointF(centre)) == pytest.approx(before, abs=0.3)


def test_bracket_keys_change_the_brush_radius(canvas, qtbot):
    canvas.brush_radius = 10.0
    with qtbot.waitSignal(canvas.brush_radius_changed):
        qtbot.keyClick(canvas, Qt.Key.Key_BracketRight)
    assert canvas.brush_radius == pytest.approx(12.0)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    assert canvas.brush_radius == pytest.approx(10.0)
    with pytest.raises(ValueError):
        canvas.set_tool("lasso")


def test_large_images_are_shown_downscaled_with_full_resolution_coordinates(
    canvas, qtbot, monkeypatch
):
    monkeypatch.setattr(overlay, "MAX_DISPLAY_PIXELS", 800)  # 64 x 48 counts as "large" now
    canvas.set_image(np.full((H, W, 3), GREY, dtype=np.uint8))
    assert canvas._layers.grid.shape == (24, 32)  # half resolution in each direction
    labels = labels_fixture()
    canvas.opacity = 1.0
    canvas.set_labels(labels, {1: RED, 2: BLUE, 3: GREEN})
    shot = canvas.viewport().grab().toImage()
    assert close(color_at(canvas, 5, 5, shot), RED) and close(color_at(canvas, 50, 40, shot), BLUE)
    labels[20:30, 26:36] = 3
    canvas.update_labels((20, 26, 30, 36))
    assert close(color_at(canvas, 30, 24), GREEN)
    assert canvas.sceneRect().width() == W  # scene = full-resolution pixels
    with qtbot.waitSignal(canvas.fill_requested) as blocker:
        canvas.set_tool("fill")
        qtbot.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=view_pos(canvas, 50.5, 40.5))
    assert blocker.args == pytest.approx([50.5, 40.5], abs=0.3)


def test_frame_region_and_a_new_image_drops_the_old_labels(canvas):
    canvas.frame_region((20, 30, 28, 40))  # 10 x 8 pixels: zoom capped at 8x, centred on it
    assert canvas.zoom == pytest.approx(8.0)
    centre = canvas.map_to_image(QPointF(canvas.viewport().rect().center()))
    assert centre == pytest.approx((35.0, 24.0), abs=0.5)

    canvas.opacity = 1.0
    canvas.set_labels(labels_fixture(), {1: RED})
    canvas.set_image(np.full((H, W, 3), GREY, dtype=np.uint8))
    assert close(color_at(canvas, 5, 5), GREY)  # labels belonged to the previous image
    canvas.update_labels((0, 0, H, W))  # and there is nothing to update until set_labels
    assert close(color_at(canvas, 5, 5), GREY)
