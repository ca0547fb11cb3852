"""The app's dialogs: ``ModelDialog`` (model_dialog.py), ``ExportDialog`` (export_dialog.py) and
``ShortcutSheet`` (here), the list of every shortcut, drawn from the same table the main window
binds its keys from (shortcuts.py)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from chimera_app.ui.export_dialog import ExportDialog
from chimera_app.ui.model_dialog import ModelDialog
from chimera_app.ui.shortcuts import CLASS_PANEL, GROUPS, MOUSE, SHORTCUTS, Shortcut

__all__ = ["ExportDialog", "ModelDialog", "ShortcutSheet", "key_text"]


def key_text(shortcut: Shortcut) -> str:
    """The keys as this platform writes them (⌘ on macOS), alternatives joined by " or "."""
    if shortcut.scope == MOUSE:
        return " or ".join(shortcut.keys)
    native = QKeySequence.SequenceFormat.NativeText
    return " or ".join(QKeySequence(k).toString(native) for k in shortcut.keys)


class ShortcutSheet(QDialog):
    """A read-only table of ``SHORTCUTS``, in sections (Images, Edit, Tools, Classes, View, Mouse)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(0, 2, self)
        self.table.setHorizontalHeaderLabels(["Keys", "Action"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setShowGrid(False)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        bold = QFont(self.font())
        bold.setBold(True)
        for group in GROUPS:
            rows = [s for s in SHORTCUTS if s.group == group]
            if not rows:
                continue
            heading = self._add_row(group, "")
            heading.setFont(bold)
            self.table.setSpan(self.table.rowCount() - 1, 0, 1, 2)
            for s in rows:
                note = "" if s.scope != CLASS_PANEL else "  (in the class list)"
                self._add_row(key_text(s), s.description + note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(560, 640)

    def _add_row(self, keys: str, description: str) -> QTableWidgetItem:
        row = self.table.rowCount()
        self.table.insertRow(row)
        first = QTableWidgetItem(keys)
        self.table.setItem(row, 0, first)
        self.table.setItem(row, 1, QTableWidgetItem(description))
        return first

    def rows(self) -> list[tuple[str, str]]:
        """(keys, description) of every row shown, headings included (for tests and checks)."""
        return [(self.table.item(r, 0).text(), self.table.item(r, 1).text()) for r in range(self.table.rowCount())]
