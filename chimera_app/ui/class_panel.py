"""The class panel: type a class name to add it, and manage the project's ``ClassList``.

It only routes input: every change goes through the ``ClassList`` (which validates it) and the
panel redraws from the list, so the list stays the single truth. While the user types, a throttled
``draft_changed`` lets the window preview the class before it exists (live re-segmentation); the
draft is checked as it is typed with the list's (= the engine's) grammar, so an invalid one is
never sent to the engine. Errors a user can cause (empty or duplicate names) are shown in red
under the field, never in a dialog: a modal box would break the typing flow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QStyle,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from chimera_app.project.classes import ClassList, LabelClass
from chimera_engine.class_names import normalize
from chimera_engine.errors import ClassNameError

__all__ = ["ClassPanel"]

ID_ROLE = Qt.ItemDataRole.UserRole
ERROR_COLOR = "#c62828"
ROW_HEIGHT = 26

Confirm = Callable[[QWidget, str, str], bool]  # (parent, title, question) -> yes?
ChooseColor = Callable[[QWidget, tuple[int, int, int], str], "tuple[int, int, int] | None"]


def ask_yes_no(parent: QWidget, title: str, question: str) -> bool:
    answer = QMessageBox.question(parent, title, question, QMessageBox.StandardButton.Yes
                                  | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def pick_color_dialog(parent: QWidget, rgb: tuple[int, int, int], title: str) -> tuple[int, int, int] | None:
    color = QColorDialog.getColor(QColor(*rgb), parent, title)
    return (color.red(), color.green(), color.blue()) if color.isValid() else None


def row_rects(rect: QRect) -> tuple[QRect, QRect, QRect, QRect]:
    """(swatch, text, key, eye) areas of one row; painting and clicking share this layout."""
    h = rect.height()
    swatch = QRect(rect.left() + 6, rect.top() + (h - 14) // 2, 14, 14)
    eye = QRect(rect.right() - 6 - 20, rect.top() + (h - 14) // 2, 20, 14)
    key = QRect(eye.left() - 22, rect.top(), 18, h)
    text = QRect(swatch.right() + 8, rect.top(), key.left() - swatch.right() - 12, h)
    return swatch, text, key, eye


def draw_eye(painter: QPainter, rect: QRect, color: QColor, hidden: bool) -> None:
    """An eye (visible) or a struck-through grey eye (hidden); drawn, so no icon files are needed."""
    r = QRectF(rect).adjusted(1, 2, -1, -2)
    path = QPainterPath(QPointF(r.left(), r.center().y()))
    path.quadTo(QPointF(r.center().x(), r.top() - r.height() * 0.6), QPointF(r.right(), r.center().y()))
    path.quadTo(QPointF(r.center().x(), r.bottom() + r.height() * 0.6), QPointF(r.left(), r.center().y()))
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(color, 1.3))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawPath(path)
    painter.setBrush(color)
    painter.drawEllipse(r.center(), r.height() * 0.28, r.height() * 0.28)
    if hidden:
        painter.setPen(QPen(color, 1.6))
        painter.drawLine(QPointF(r.left() + 2, r.bottom() + 1), QPointF(r.right() - 2, r.top() - 1))
    painter.restore()


class _RowDelegate(QStyledItemDelegate):
    """Paints a row (swatch, name + greyed extra phrases, key 1-9, eye) and turns clicks on the
    swatch and the eye into colour picks and visibility toggles; edits rename the class."""

    def __init__(self, panel: ClassPanel) -> None:
        super().__init__(panel)
        self.panel = panel

    def sizeHint(self, option, index) -> QSize:
        return QSize(160, ROW_HEIGHT)

    def paint(self, painter: QPainter, option, index) -> None:
        cls = self.panel._class_at(index)
        if cls is None:
            return
        widget = option.widget
        style = widget.style() if widget else None
        self.initStyleOption(option, index)
        option.text = ""
        if style is not None:  # selection / hover background in the platform's style
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter, widget)
        swatch, text_rect, key_rect, eye_rect = row_rects(option.rect)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        fg = option.palette.color(role)
        grey = QColor(fg)
        grey.setAlphaF(0.45)
        painter.save()
        painter.setPen(QPen(QColor(0, 0, 0, 90), 1))
        painter.setBrush(QColor(*cls.color))
        painter.drawRect(swatch.adjusted(0, 0, -1, -1))
        name_color = grey if cls.hidden else fg
        metrics = option.fontMetrics
        name = metrics.elidedText(cls.name, Qt.TextElideMode.ElideRight, text_rect.width())
        painter.setPen(name_color)
        flags = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft
        painter.drawText(text_rect, flags, name)
        rest = text_rect.width() - metrics.horizontalAdvance(name) - 8
        if len(cls.phrases) > 1 and rest > 20:
            extra = metrics.elidedText(", ".join(cls.phrases[1:]), Qt.TextElideMode.ElideRight, rest)
            painter.setPen(grey)
            painter.drawText(text_rect.adjusted(text_rect.width() - rest, 0, 0, 0), flags, extra)
        if index.row() < 9:  # a keycap, not an id: the key that picks this row
            cap = key_rect.adjusted(0, (key_rect.height() - 16) // 2, 0, -((key_rect.height() - 16) // 2))
            painter.setPen(QPen(grey, 1))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(QRectF(cap).adjusted(0.5, 0.5, -0.5, -0.5), 3, 3)
            painter.setPen(fg)
            painter.drawText(cap, Qt.AlignmentFlag.AlignCenter, str(index.row() + 1))
        painter.restore()
        draw_eye(painter, eye_rect, grey if cls.hidden else fg, cls.hidden)

    def editorEvent(self, event, model, option, index) -> bool:
        kind = event.type()
        clicks = (QEvent.Type.MouseButtonRelease, QEvent.Type.MouseButtonDblClick)
        if kind not in clicks or event.button() != Qt.MouseButton.LeftButton:
            return False
        swatch, _, _, eye = row_rects(option.rect)
        pos = event.position().toPoint()
        on_eye, on_swatch = eye.adjusted(-3, -4, 3, 4).contains(pos), swatch.adjusted(-3, -4, 3, 4).contains(pos)
        if not (on_eye or on_swatch):
            return False
        cls = self.panel._class_at(index)
        if cls is not None and kind == QEvent.Type.MouseButtonRelease:
            if on_eye:
                self.panel.set_hidden(cls.id, not cls.hidden)
            else:
                self.panel.pick_color(cls.id)
        return True  # a double-click there must not open the rename editor

    def createEditor(self, parent, option, index):
        return QLineEdit(parent)

    def setEditorData(self, editor: QLineEdit, index) -> None:
        cls = self.panel._class_at(index)
        editor.setText(cls.prompt if cls else "")
        editor.selectAll()

    def setModelData(self, editor: QLineEdit, model, index) -> None:
        # The model is not written: the panel renames in the ClassList and redraws from it.
        cls = self.panel._class_at(index)
        if cls is not None and editor.text().strip() != cls.prompt:
            self.panel.rename_class(cls.id, editor.text())


class _ClassListView(QListWidget):
    """Rows of the panel; drag and Alt+Up/Down reorder through the ClassList, Del deletes."""

    def __init__(self, panel: ClassPanel) -> None:
        super().__init__(panel)
        self.panel = panel
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setDropIndicatorShown(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                             | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.setUniformItemSizes(True)

    def drop_index(self, pos) -> int:
        """The display index a row dropped at ``pos`` ends at (counted after it left its place)."""
        index = self.indexAt(pos)
        if not index.isValid():
            target = self.count()
        else:
            target = index.row() + (1 if pos.y() > self.visualRect(index).center().y() else 0)
        return target - 1 if target > self.currentRow() else target

    def dropEvent(self, event) -> None:
        if event.source() is not self or self.currentItem() is None:
            event.ignore()
            return
        class_id = self.currentItem().data(ID_ROLE)
        new_index = self.drop_index(event.position().toPoint())
        # CopyAction tells QAbstractItemView.startDrag not to delete the dragged row afterwards:
        # the row is moved by the ClassList, not by Qt's model.
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.stopAutoScroll()
        self.setState(QAbstractItemView.State.NoState)
        self.panel.move_class(class_id, new_index)
        QTimer.singleShot(0, self.panel._sync)  # had Qt still removed the dragged row, this restores it

    def keyPressEvent(self, event) -> None:
        item = self.currentItem()
        mods = event.modifiers()
        if item is not None and self.state() != QAbstractItemView.State.EditingState:
            class_id = item.data(ID_ROLE)
            if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and not mods:
                self.panel.remove_class(class_id)
                return
            if event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down) and mods == Qt.KeyboardModifier.AltModifier:
                step = -1 if event.key() == Qt.Key.Key_Up else 1
                self.panel.move_class(class_id, max(0, self.currentRow() + step))
                return
        super().keyPressEvent(event)


class ClassPanel(QWidget):
    """A line edit ("type a class, Enter to add") over the list of classes.

    ``confirm`` and ``choose_color`` are injectable so tests (and scripted use) need no modal
    dialog; by default they are a QMessageBox question and a QColorDialog.
    """

    # Throttled: the field's text (normalised) while it would be a valid new class; "" when it is
    # empty or invalid (the reason is shown inline) -- not after an add.
    draft_changed = Signal(str)
    class_added = Signal(int)
    class_renamed = Signal(int)
    class_removed = Signal(int)
    classes_reordered = Signal()
    visibility_changed = Signal(int, bool)  # class id, visible (True = shown)
    color_changed = Signal(int)
    current_changed = Signal(int)  # class id the brush paints; 0 when no class is selected

    # Throttle, not debounce: the first key press is previewed at once (the engine's queue drops
    # superseded requests anyway), later ones at most every DRAFT_DELAY_MS, the last one always.
    DRAFT_DELAY_MS = 60

    def __init__(self, classes: ClassList | None = None, parent: QWidget | None = None, *,
                 confirm: Confirm | None = None, choose_color: ChooseColor | None = None) -> None:
        super().__init__(parent)
        self._confirm = confirm or ask_yes_no
        self._choose_color = choose_color or pick_color_dialog
        self._classes: ClassList | None = None
        self._observer = lambda *_: self._own_change or self._sync()
        self._own_change = False  # our own edits sync after their signal, not inside the ClassList call
        self._current = 0
        self._draft = ""

        self.entry = QLineEdit(self)
        self.entry.setPlaceholderText("Type a class, Enter to add  (car; automobile)")
        self.entry.setClearButtonEnabled(True)
        self.error = QLabel(self)
        self.error.setStyleSheet(f"color: {ERROR_COLOR};")
        self.error.setWordWrap(True)
        self.error.hide()
        self.list = _ClassListView(self)
        self.list.setItemDelegate(_RowDelegate(self))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.entry)
        layout.addWidget(self.error)
        layout.addWidget(self.list, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(self.DRAFT_DELAY_MS)
        self._timer.timeout.connect(self._on_cooldown_over)
        self._pending = False
        self.entry.textChanged.connect(self._on_text_changed)
        self.entry.returnPressed.connect(self._on_return)
        self.list.currentItemChanged.connect(lambda *_: self._on_current_item())
        self.set_classes(classes if classes is not None else ClassList())

    # -- the list -------------------------------------------------------------------------------
    @property
    def classes(self) -> ClassList:
        return self._classes

    def set_classes(self, classes: ClassList) -> None:
        """Show ``classes`` (e.g. another project's); the panel follows its ``changed`` notices."""
        if self._classes is not None and self._observer in self._classes.changed:
            self._classes.changed.remove(self._observer)
        self._classes = classes
        classes.changed.append(self._observer)
        observer = self._observer
        # The ClassList may outlive this widget: stop notifying a deleted C++ object.
        self.destroyed.connect(lambda *_: observer in classes.changed and classes.changed.remove(observer))
        self.list.clear()
        self._sync()
        if len(classes) and self._current not in classes:
            self.set_current(classes.ids()[0])  # the brush always has a class when there is one

    def _class_at(self, index) -> LabelClass | None:
        class_id = index.data(ID_ROLE)
        return self._classes.by_id(class_id) if class_id in self._classes else None

    def _sync(self) -> None:
        """Redraw from the ClassList: rebuild rows when the order or the set of ids changed."""
        ids = self._classes.ids()
        shown = [self.list.item(r).data(ID_ROLE) for r in range(self.list.count())]
        if ids != shown:
            keep = self._current
            self.list.blockSignals(True)
            self.list.clear()
            for class_id in ids:
                item = QListWidgetItem()
                item.setData(ID_ROLE, class_id)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable | Qt.ItemFlag.ItemIsDragEnabled)
                self.list.addItem(item)
            self.list.blockSignals(False)
            if keep in ids:
                self.set_current(keep)
            elif keep in shown and ids:  # the current class went: its neighbour takes its place
                self.set_current(ids[min(shown.index(keep), len(ids) - 1)])
            else:
                self._on_current_item()
        for row in range(self.list.count()):  # names, colours, visibility: tooltips + repaint
            cls = self._classes.by_id(ids[row])
            key = f"press {row + 1} to paint with it" if row < 9 else "no number key (rows 1-9 have one)"
            tip = (f"{cls.prompt}\n{key}; exported as class id {cls.id} (stable, whatever the order)"
                   + ("\nhidden" if cls.hidden else ""))
            self.list.item(row).setToolTip(tip)
        self.list.viewport().update()

    # -- current class --------------------------------------------------------------------------
    def current_class_id(self) -> int | None:
        return self._current or None

    def set_current(self, class_id: int) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(ID_ROLE) == class_id:
                self.list.setCurrentRow(row)
                return
        raise KeyError(f"no class with id {class_id} in the panel")

    def select_key(self, n: int) -> bool:
        """Make the class on number key ``n`` (1..9) current; False when there is none."""
        cls = self._classes.at_key(n)
        if cls is None:
            return False
        self.set_current(cls.id)
        return True

    def _on_current_item(self) -> None:
        item = self.list.currentItem()
        class_id = item.data(ID_ROLE) if item is not None else 0
        if class_id != self._current:
            self._current = class_id
            self.current_changed.emit(class_id)

    # -- typing ---------------------------------------------------------------------------------
    def draft(self) -> str:
        return self.entry.text().strip()

    def _on_text_changed(self, _text: str) -> None:
        self._show_error(self._check_draft()[1])  # at every key: the check is cheap, the preview is not
        if self._timer.isActive():
            self._pending = True  # sent when the cool-down ends
        else:
            self._emit_draft()
            self._timer.start()

    def _on_cooldown_over(self) -> None:
        if self._pending:
            self._pending = False
            self._emit_draft()
            self._timer.start()

    def _check_draft(self) -> tuple[str, str]:
        """(the draft to preview, or ""; why it is not a valid new class, or "") -- what Enter
        would say, said while typing."""
        text = self.draft()
        if not text:
            return "", ""
        try:
            self._classes.check(text)
        except ClassNameError as exc:
            return "", str(exc)
        return normalize(text), ""

    def _emit_draft(self) -> None:
        preview = self._check_draft()[0]
        if preview != self._draft:
            self._draft = preview
            self.draft_changed.emit(preview)

    def _on_return(self) -> None:
        self._timer.stop()
        self._pending = False
        if self.add_class(self.entry.text()) is not None:
            self.entry.blockSignals(True)
            self.entry.clear()
            self.entry.blockSignals(False)
            # The draft became a real class: no draft_changed("") follows class_added (the
            # window drops its preview there), which would only cost one more prediction.
            self._draft = ""

    # -- operations (all validated by the ClassList) ---------------------------------------------
    def add_class(self, text: str) -> LabelClass | None:
        """Add a class typed as "name; phrase"; None (and the reason in red) when it is invalid."""
        try:
            with self._editing():
                cls = self._classes.add(text)
        except ClassNameError as exc:
            self._show_error(str(exc))
            return None
        self._show_error("")
        self.class_added.emit(cls.id)
        self._sync()
        self.set_current(cls.id)  # a new class is usually the one to paint next
        return cls

    def rename_class(self, class_id: int, text: str) -> bool:
        old = self._classes.by_id(class_id).name
        try:
            with self._editing():
                self._classes.rename(class_id, text)
        except ClassNameError as exc:
            self._show_error(f"cannot rename {old!r}: {exc}")
            return False
        self._show_error("")
        self.class_renamed.emit(class_id)
        self._sync()
        return True

    def remove_class(self, class_id: int, ask: bool = True) -> bool:
        """Delete a class after a yes/no question (``ask=False`` skips it); True when deleted."""
        cls = self._classes.by_id(class_id)
        if ask and not self._confirm(self, "Delete class",
                                     f"Delete the class {cls.name!r}? Its pixels become unlabeled "
                                     "in every image. This cannot be undone."):
            return False
        with self._editing():
            self._classes.remove(class_id)
        self.class_removed.emit(class_id)
        self._sync()  # selects the neighbour: current_changed follows class_removed
        return True

    def move_class(self, class_id: int, new_index: int) -> None:
        before = self._classes.ids()
        with self._editing():
            self._classes.move(class_id, new_index)
        if self._classes.ids() != before:
            self.classes_reordered.emit()
        self._sync()
        self.set_current(class_id)

    def set_hidden(self, class_id: int, hidden: bool) -> None:
        if self._classes.by_id(class_id).hidden == bool(hidden):
            return
        with self._editing():
            self._classes.set_hidden(class_id, hidden)
        self.visibility_changed.emit(class_id, not hidden)
        self._sync()

    def pick_color(self, class_id: int) -> bool:
        cls = self._classes.by_id(class_id)
        rgb = self._choose_color(self, cls.color, f"Colour of {cls.name}")
        if rgb is None or tuple(rgb) == cls.color:
            return False
        with self._editing():
            self._classes.set_color(class_id, tuple(rgb))
        self.color_changed.emit(class_id)
        self._sync()
        return True

    @contextlib.contextmanager
    def _editing(self):
        self._own_change = True
        try:
            yield
        finally:
            self._own_change = False

    def error_text(self) -> str:
        return self.error.text() if self.error.isVisibleTo(self) else ""

    def _show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))
