"""The project's images: state of each (unlabeled / predicted / in progress / human-verified), which
ones could not be opened (and why), a state filter, a name search, and an order (by name, or most
uncertain first) that next/previous walk.

The window opens images only in response to ``current_changed``: clicks, ``select``, ``next`` and
``previous`` all end there, so there is one path from "which image" to "show it".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from chimera_app.project.document import ImageState

__all__ = ["SORT_NAME", "SORT_UNCERTAINTY", "STATE_COLORS", "FileList"]

REL_ROLE = Qt.ItemDataRole.UserRole
SORT_NAME, SORT_UNCERTAINTY = "name", "uncertainty"
STATE_COLORS = {ImageState.UNLABELED: "#9e9e9e", ImageState.PREDICTED: "#1e88e5",
                ImageState.IN_PROGRESS: "#fb8c00", ImageState.VERIFIED: "#43a047"}
STATE_TEXT = {ImageState.UNLABELED: "unlabeled", ImageState.PREDICTED: "predicted",
              ImageState.IN_PROGRESS: "in progress", ImageState.VERIFIED: "verified"}
FILTERS = (("All images", None), ("Unlabeled", ImageState.UNLABELED), ("Predicted", ImageState.PREDICTED),
           ("In progress", ImageState.IN_PROGRESS), ("Human-verified", ImageState.VERIFIED))
FAILED_COLOR = "#c62828"

StateSource = Callable[[str], ImageState] | Mapping[str, ImageState]
Uncertainty = Callable[[str], "float | None"]


def failed_icon(size: int = 12) -> QIcon:
    """A red cross: the image could not be opened."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor(FAILED_COLOR), 2.2))
    painter.drawLine(QPointF(2.5, 2.5), QPointF(size - 2.5, size - 2.5))
    painter.drawLine(QPointF(size - 2.5, 2.5), QPointF(2.5, size - 2.5))
    painter.end()
    return QIcon(pixmap)


def state_icon(state: ImageState, size: int = 12) -> QIcon:
    """A ring (unlabeled), a dot (predicted), a half-filled ring (in progress) or a dot with a tick
    (verified): told apart by shape as well as by colour, for colour-blind users. Each sits on a
    white disc, so it shows on the selected row's highlight too (a blue dot on a blue highlight
    vanished), and the selected row gets the same pixmap, not the style's tinted one."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    color = QColor(STATE_COLORS[state])
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor("white"))
    painter.drawEllipse(QRectF(0, 0, size, size))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    r = QRectF(2, 2, size - 4, size - 4)
    if state == ImageState.UNLABELED:
        painter.setPen(QPen(color, 1.5))
        painter.drawEllipse(r)
    elif state == ImageState.IN_PROGRESS:
        painter.setPen(QPen(color, 1.5))
        painter.drawEllipse(r)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        painter.drawPie(r, 90 * 16, 180 * 16)  # the left half: work started, not finished
    else:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        painter.drawEllipse(r)
    if state == ImageState.VERIFIED:
        tick = QPainterPath(QPointF(size * 0.28, size * 0.52))
        tick.lineTo(QPointF(size * 0.44, size * 0.68))
        tick.lineTo(QPointF(size * 0.74, size * 0.34))
        painter.setPen(QPen(QColor("white"), 1.6))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(tick)
    painter.end()
    icon = QIcon(pixmap)
    icon.addPixmap(pixmap, QIcon.Mode.Selected)
    return icon


class FileList(QWidget):
    """The image list with a filter combo, a sort combo and per-state counts."""

    current_changed = Signal(str)  # relative path of the image to show

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._states: dict[str, ImageState] = {}
        self._uncertainty_of: Uncertainty | None = None
        self._uncertainty: dict[str, float | None] = {}
        self._order: list[str] = []
        self._rows: dict[str, int] = {}
        self._current: str | None = None
        self._icons = {state: state_icon(state) for state in ImageState}
        self._failed_icon = failed_icon()
        self._failed: dict[str, str] = {}  # rel -> why it could not be opened

        self.filter_combo = QComboBox(self)
        for text, state in FILTERS:
            self.filter_combo.addItem(text, state)
        self.sort_combo = QComboBox(self)
        self.sort_combo.addItem("By name", SORT_NAME)
        self.sort_combo.addItem("Most uncertain first", SORT_UNCERTAINTY)
        self.search_edit = QLineEdit(self)
        self.search_edit.setPlaceholderText("Search file names…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.setToolTip("Show only images whose path contains this text (D / A walk the matches)")
        self.counts_label = QLabel(self)
        self.counts_label.setWordWrap(True)
        self.list = QListWidget(self)
        self.list.setUniformItemSizes(True)  # keeps a 100k-image folder fast to lay out
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        top = QHBoxLayout()
        top.addWidget(self.filter_combo, 1)
        top.addWidget(self.sort_combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.search_edit)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.list, 1)

        self.filter_combo.currentIndexChanged.connect(lambda _: self._apply_filter())
        self.search_edit.textChanged.connect(lambda _: self._apply_filter())
        self.sort_combo.currentIndexChanged.connect(lambda _: self._sort())
        self.list.currentItemChanged.connect(lambda *_: self._on_current_item())
        self._update_counts()
        self._update_sort_enabled()

    # -- content --------------------------------------------------------------------------------
    def set_project(self, rels: Iterable[str], states: StateSource,
                   uncertainty: Uncertainty | None = None) -> None:
        """Show ``rels``; ``states`` is ``project.state`` or a mapping; ``uncertainty`` (e.g.
        ``project.uncertainty``: rel -> float | None) enables "most uncertain first"."""
        get = states.__getitem__ if isinstance(states, Mapping) else states
        self._states = {rel: ImageState(get(rel)) for rel in rels}
        self._failed = {}
        self._uncertainty_of = uncertainty
        self._current = None
        self._update_sort_enabled()
        self._sort()
        self._update_counts()

    def set_uncertainty_source(self, uncertainty: Uncertainty | None) -> None:
        self._uncertainty_of = uncertainty
        self._update_sort_enabled()
        self.resort()

    def resort(self) -> None:
        """Re-read uncertainties and re-order (call after predictions changed, e.g. a batch run).
        Not done on every ``set_state``: rows jumping while one works would be disorienting."""
        self._sort()

    def set_state(self, rel: str, state: ImageState | str) -> None:
        state = ImageState(state)
        if rel not in self._states or self._states[rel] == state:
            return
        self._states[rel] = state
        item = self.list.item(self._rows[rel])
        self._decorate(item, rel)
        self.list.setRowHidden(self._rows[rel], not self._visible(rel))
        self._update_counts()

    def state(self, rel: str) -> ImageState:
        return self._states[rel]

    def set_failed(self, rel: str, reason: str | None) -> None:
        """Mark ``rel`` as an image that could not be opened (icon, tooltip with ``reason``), or
        clear the mark (None)."""
        if rel not in self._states:
            return
        if reason is None:
            self._failed.pop(rel, None)
        else:
            self._failed[rel] = reason
        self._decorate(self.list.item(self._rows[rel]), rel)

    def failed_reason(self, rel: str) -> str | None:
        return self._failed.get(rel)

    def images(self) -> list[str]:
        """All images, in display order (filter ignored)."""
        return list(self._order)

    def visible_images(self) -> list[str]:
        """The images the filter lets through, in display order."""
        return [rel for rel in self._order if self._matches(rel)]

    def counts(self) -> dict[ImageState, int]:
        result = dict.fromkeys(ImageState, 0)
        for state in self._states.values():
            result[state] += 1
        return result

    # -- filter and order -----------------------------------------------------------------------
    def filter_state(self) -> ImageState | None:
        return self.filter_combo.currentData()

    def set_filter(self, state: ImageState | str | None) -> None:
        state = None if state is None else ImageState(state)
        self.filter_combo.setCurrentIndex(next(i for i, (_, s) in enumerate(FILTERS) if s == state))

    def sort_mode(self) -> str:
        return self.sort_combo.currentData()

    def set_sort(self, mode: str) -> None:
        index = self.sort_combo.findData(mode)
        if index < 0:
            raise ValueError(f"unknown sort {mode!r}: use {SORT_NAME!r} or {SORT_UNCERTAINTY!r}")
        self.sort_combo.setCurrentIndex(index)

    def search_text(self) -> str:
        return self.search_edit.text()

    def set_search(self, text: str) -> None:
        self.search_edit.setText(text)

    def _matches(self, rel: str) -> bool:
        wanted, needle = self.filter_state(), self.search_edit.text().strip().lower()
        return (wanted is None or self._states[rel] == wanted) and (not needle or needle in rel.lower())

    def _visible(self, rel: str) -> bool:
        # The open image stays listed even when the filter no longer matches it (e.g. it was just
        # verified under "Unlabeled"): it disappears once the user moves on.
        return rel == self._current or self._matches(rel)

    def _apply_filter(self) -> None:
        for rel, row in self._rows.items():
            self.list.setRowHidden(row, not self._visible(rel))

    def _sort(self) -> None:
        rels = sorted(self._states)
        if self.sort_mode() == SORT_UNCERTAINTY and self._uncertainty_of is not None:
            self._uncertainty = {rel: self._uncertainty_of(rel) for rel in rels}
            # Most uncertain first; images without a prediction (None) last; ties by name.
            rels.sort(key=lambda r: (self._uncertainty[r] is None, -(self._uncertainty[r] or 0.0)))
        else:
            self._uncertainty = {}
        self._order = rels
        self._rows = {rel: row for row, rel in enumerate(rels)}
        self.list.blockSignals(True)  # rebuilding is not a change of the current image
        self.list.clear()
        for rel in rels:
            item = QListWidgetItem()
            item.setData(REL_ROLE, rel)
            self._decorate(item, rel)
            self.list.addItem(item)
        if self._current in self._rows:
            self.list.setCurrentRow(self._rows[self._current])
        self.list.blockSignals(False)
        self._apply_filter()
        if self._current in self._rows:
            self.list.scrollToItem(self.list.item(self._rows[self._current]))

    def _decorate(self, item: QListWidgetItem, rel: str) -> None:
        state = self._states[rel]
        u = self._uncertainty.get(rel)
        item.setText(rel if u is None else f"{rel}   ({u:.0%} uncertain)")
        if rel in self._failed:
            item.setIcon(self._failed_icon)
            item.setToolTip(f"{rel}\ncannot be opened: {self._failed[rel]}")
            return
        item.setIcon(self._icons[state])
        tip = f"{rel}\n{STATE_TEXT[state]}"
        if self._uncertainty_of is not None and self.sort_mode() == SORT_UNCERTAINTY:
            tip += "\nno prediction yet" if u is None else f"\nuncertainty {u:.3f}"
        item.setToolTip(tip)

    def _update_sort_enabled(self) -> None:
        item = self.sort_combo.model().item(1)
        item.setEnabled(self._uncertainty_of is not None)
        if self._uncertainty_of is None and self.sort_mode() == SORT_UNCERTAINTY:
            self.sort_combo.setCurrentIndex(0)

    def _update_counts(self) -> None:
        counts, total = self.counts(), len(self._states)
        self.counts_label.setText(f"{counts[ImageState.VERIFIED]} / {total} verified · "
                                  f"{counts[ImageState.IN_PROGRESS]} in progress · "
                                  f"{counts[ImageState.PREDICTED]} predicted · "
                                  f"{counts[ImageState.UNLABELED]} unlabeled")
        for i, (text, state) in enumerate(FILTERS):
            self.filter_combo.setItemText(i, f"{text} ({total if state is None else counts[state]})")

    # -- navigation -----------------------------------------------------------------------------
    def current(self) -> str | None:
        return self._current

    def select(self, rel: str) -> bool:
        """Make ``rel`` current (shown even if the filter hides it); emits current_changed when it
        changes. False when ``rel`` is not in the list."""
        if rel not in self._rows:
            return False
        self.list.setCurrentRow(self._rows[rel])
        return True

    def next(self) -> str | None:
        """Select the next image the filter lets through; None (nothing changes) at the end."""
        return self._step(1)

    def previous(self) -> str | None:
        return self._step(-1)

    def upcoming(self, n: int) -> list[str]:
        """The next ``n`` images ``next()`` would visit (for background decoding)."""
        start = self._rows.get(self._current, -1) + 1
        return [rel for rel in self._order[start:] if self._matches(rel)][:n]

    def _step(self, direction: int) -> str | None:
        if self._current in self._rows:
            row = self._rows[self._current]
        else:
            row = -1 if direction > 0 else len(self._order)
        rows = range(row + 1, len(self._order)) if direction > 0 else range(row - 1, -1, -1)
        for r in rows:
            rel = self._order[r]
            if self._matches(rel):
                self.select(rel)
                return rel
        return None

    def _on_current_item(self) -> None:
        item = self.list.currentItem()
        rel = item.data(REL_ROLE) if item is not None else None
        if rel is None or rel == self._current:
            return
        previous, self._current = self._current, rel
        if previous in self._rows:
            self.list.setRowHidden(self._rows[previous], not self._visible(previous))
        self.list.setRowHidden(self._rows[rel], False)
        self.list.scrollToItem(item)
        self.current_changed.emit(rel)
