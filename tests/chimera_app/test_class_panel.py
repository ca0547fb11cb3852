"""ClassPanel: typing previews a draft, Enter adds through the ClassList, inline errors, rename,
delete, reorder, visibility and colour — driven with real key presses and clicks (offscreen)."""

import time

import pytest
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, Qt
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication, QLineEdit

from chimera_app.project.classes import ClassList, default_color
from chimera_app.ui.class_panel import ClassPanel, row_rects


class Recorder:
    """Records (signal name, *args) of ``obj``'s signals ``names``, in emission order."""

    def __init__(self, obj, *names):
        self.calls = []
        for name in names:
            getattr(obj, name).connect(lambda *args, name=name: self.calls.append((name, *args)))


@pytest.fixture
def make_panel(qtbot):
    def make(texts=(), confirm=True, color=(10, 20, 30)):
        classes = ClassList()
        for text in texts:
            classes.add(text)
        asked, picked = [], []

        def confirm_fn(parent, title, question):
            asked.append(question)
            return confirm

        def color_fn(parent, rgb, title):
            picked.append(rgb)
            return color

        panel = ClassPanel(classes, confirm=confirm_fn, choose_color=color_fn)
        qtbot.addWidget(panel)
        panel.resize(320, 400)
        panel.show()
        qtbot.waitExposed(panel)
        panel.asked, panel.picked = asked, picked
        return panel

    return make


def test_typing_previews_at_once_then_throttles_and_ends_on_the_last_text(make_panel, qtbot):
    panel = make_panel()
    drafts, times = [], []
    panel.draft_changed.connect(lambda text: (drafts.append(text), times.append(time.perf_counter())))
    started = time.perf_counter()
    qtbot.keyClicks(panel.entry, "car; auto")
    assert drafts[0] == "c" and times[0] - started < 0.05  # the first key press is previewed at once
    qtbot.waitUntil(lambda: drafts[-1] == "car; auto", timeout=2000)
    qtbot.wait(3 * panel.DRAFT_DELAY_MS)
    assert drafts[-1] == "car; auto" and len(drafts) < 9  # throttled: fewer signals than key presses
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= panel.DRAFT_DELAY_MS / 1000 * 0.8 for g in gaps)
    assert len(panel.classes) == 0  # a draft is only previewed, never added


def test_enter_adds_the_class_and_makes_it_current(make_panel, qtbot):
    panel = make_panel()
    qtbot.keyClicks(panel.entry, "car; automobile")
    rec = Recorder(panel, "class_added", "current_changed", "draft_changed")
    qtbot.keyClick(panel.entry, Qt.Key.Key_Return)
    (cls,) = list(panel.classes)
    assert (cls.name, cls.phrases) == ("car", ["car", "automobile"])
    assert rec.calls == [("class_added", cls.id), ("current_changed", cls.id)]  # known before used
    assert panel.current_class_id() == cls.id and panel.entry.text() == ""
    assert panel.list.count() == 1 and panel.error_text() == ""
    qtbot.wait(200)  # the pending draft was dropped: no stale "car; automobile" preview
    assert not [c for c in rec.calls if c[0] == "draft_changed"]


def test_duplicate_and_empty_names_show_an_inline_error_and_add_nothing(make_panel, qtbot):
    panel = make_panel(["car"])
    rec = Recorder(panel, "class_added")
    qtbot.keyClicks(panel.entry, "Car")
    qtbot.keyClick(panel.entry, Qt.Key.Key_Return)
    assert len(panel.classes) == 1 and rec.calls == []
    assert "car" in panel.error_text() and panel.error.isVisible()
    assert panel.entry.text() == "Car"  # kept, so the user can fix it
    assert QApplication.activeModalWidget() is None  # inline, not a dialog
    qtbot.keyClicks(panel.entry, "x")
    assert panel.error_text() == ""  # typing clears the error
    panel.entry.clear()
    qtbot.keyClick(panel.entry, Qt.Key.Key_Return)
    assert panel.error_text() and len(panel.classes) == 1


def test_rename_with_f2_and_a_rejected_rename(make_panel, qtbot):
    panel = make_panel(["car", "tree"])
    car, tree = list(panel.classes)
    rec = Recorder(panel, "class_renamed")
    panel.set_current(car.id)
    panel.list.setFocus()
    qtbot.keyClick(panel.list, Qt.Key.Key_F2)
    editor = panel.list.viewport().findChild(QLineEdit)
    assert editor is not None and editor.text() == "car"
    editor.selectAll()
    qtbot.keyClicks(editor, "truck; lorry")
    qtbot.keyClick(editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: rec.calls != [], timeout=2000)  # Qt commits an editor on the next loop
    assert panel.classes.by_id(car.id).phrases == ["truck", "lorry"]
    assert rec.calls == [("class_renamed", car.id)]
    assert not panel.rename_class(tree.id, "LORRY")  # duplicate phrase of another class
    assert panel.classes.by_id(tree.id).name == "tree" and "truck" in panel.error_text()
    assert rec.calls == [("class_renamed", car.id)]


def test_delete_asks_first_and_selects_the_neighbour(make_panel, qtbot):
    panel = make_panel(["a", "b", "c"])
    a, b, c = list(panel.classes)
    rec = Recorder(panel, "class_removed", "current_changed")
    panel.set_current(b.id)
    rec.calls.clear()
    qtbot.keyClick(panel.list, Qt.Key.Key_Delete)
    assert panel.classes.ids() == [a.id, c.id] and len(panel.asked) == 1 and "'b'" in panel.asked[0]
    assert rec.calls[0] == ("class_removed", b.id)
    assert panel.current_class_id() == c.id and ("current_changed", c.id) in rec.calls
    assert panel.list.count() == 2


def test_delete_declined_keeps_the_class(make_panel, qtbot):
    panel = make_panel(["a"], confirm=False)
    rec = Recorder(panel, "class_removed")
    assert not panel.remove_class(panel.classes.ids()[0])
    assert len(panel.classes) == 1 and rec.calls == []
    panel.remove_class(panel.classes.ids()[0], ask=False)
    assert len(panel.classes) == 0 and panel.current_class_id() is None


def test_alt_arrows_reorder_and_keys_follow_the_order(make_panel, qtbot):
    panel = make_panel(["a", "b", "c"])
    a, b, c = list(panel.classes)
    rec = Recorder(panel, "classes_reordered")
    panel.set_current(a.id)
    qtbot.keyClick(panel.list, Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier)
    assert panel.classes.ids() == [b.id, a.id, c.id] and rec.calls == [("classes_reordered",)]
    assert panel.current_class_id() == a.id
    qtbot.keyClick(panel.list, Qt.Key.Key_Up, Qt.KeyboardModifier.AltModifier)
    qtbot.keyClick(panel.list, Qt.Key.Key_Up, Qt.KeyboardModifier.AltModifier)  # already first: no-op
    assert panel.classes.ids() == [a.id, b.id, c.id] and len(rec.calls) == 2
    assert panel.select_key(3) and panel.current_class_id() == c.id
    assert not panel.select_key(4)


def test_dropping_a_row_moves_the_class(make_panel, qtbot):
    panel = make_panel(["a", "b", "c"])
    a, b, c = list(panel.classes)
    rec = Recorder(panel, "classes_reordered")
    panel.set_current(a.id)
    view = panel.list
    below_c = view.visualItemRect(view.item(2)).center() + QPoint(0, 5)  # lower half of row 3
    mime = view.model().mimeData([view.currentIndex()])
    possible = Qt.DropAction.MoveAction | Qt.DropAction.CopyAction  # what a QListWidget drag offers
    event = QDropEvent(QPointF(below_c), possible, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    event.source = lambda: view  # a synthetic drop has no drag source; a real internal one has
    view.dropEvent(event)
    assert panel.classes.ids() == [b.id, c.id, a.id] and rec.calls == [("classes_reordered",)]
    assert event.dropAction() == Qt.DropAction.CopyAction  # Qt must not delete the dragged row
    assert [view.item(r).data(Qt.ItemDataRole.UserRole) for r in range(3)] == [b.id, c.id, a.id]
    foreign = QDropEvent(QPointF(below_c), Qt.DropAction.MoveAction, QMimeData(), Qt.MouseButton.LeftButton,
                         Qt.KeyboardModifier.NoModifier)
    view.dropEvent(foreign)  # from elsewhere: ignored
    assert panel.classes.ids() == [b.id, c.id, a.id]


def test_clicking_the_eye_hides_and_the_swatch_picks_a_colour(make_panel, qtbot):
    panel = make_panel(["a", "b"], color=(10, 20, 30))
    _, b = list(panel.classes)
    rec = Recorder(panel, "visibility_changed", "color_changed", "class_renamed")
    rect = panel.list.visualItemRect(panel.list.item(1))
    swatch, _, _, eye = row_rects(rect)
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=eye.center())
    assert panel.classes.by_id(b.id).hidden and rec.calls == [("visibility_changed", b.id, False)]
    qtbot.mouseDClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=eye.center())
    assert panel.list.viewport().findChild(QLineEdit) is None  # no rename editor from the eye
    panel.set_hidden(b.id, False)
    assert rec.calls[-1] == ("visibility_changed", b.id, True)
    rec.calls.clear()
    qtbot.mouseClick(panel.list.viewport(), Qt.MouseButton.LeftButton, pos=swatch.center())
    assert panel.classes.by_id(b.id).color == (10, 20, 30) and rec.calls == [("color_changed", b.id)]
    # The row is painted with the class colour (the delegate draws the swatch).
    image = panel.list.viewport().grab().toImage()
    pixel = image.pixelColor(swatch.center() * image.devicePixelRatio())
    assert (pixel.red(), pixel.green(), pixel.blue()) == (10, 20, 30)
    assert panel.picked == [default_color(b.id)]  # the dialog opened on b's palette colour


def test_panel_follows_changes_made_elsewhere_and_detaches(qtbot):
    classes = ClassList()
    classes.add("a")
    panel = ClassPanel(classes)
    classes.add("b")  # e.g. a COCO import
    assert panel.list.count() == 2
    other = ClassList()
    panel.set_classes(other)
    classes.add("c")
    assert panel.list.count() == 0 and classes.changed == []
    other.add("x")
    assert panel.list.count() == 1
    panel.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    assert other.changed == []  # the deleted widget is no longer notified
    other.add("y")
