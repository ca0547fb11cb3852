"""What an empty window shows: open a folder, open the demo, or one of the recent projects.

It only emits what was chosen; the main window opens it. Shown whenever no project is open, so
a new user never faces a blank grey canvas with no hint.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["WelcomePage"]

PATH_ROLE = Qt.ItemDataRole.UserRole


class WelcomePage(QWidget):
    open_folder_requested = Signal()
    demo_requested = Signal()
    recent_requested = Signal(str)  # a folder path

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("<h1>Chimera</h1>")
        intro = QLabel("Open a folder of images, type the names of the classes you want, and Chimera "
                       "predicts a full label map for every image. Correct it with the brush, eraser "
                       "and fill, mark each image <b>Verified</b>, and export COCO JSON or PNG masks.")
        intro.setWordWrap(True)
        self.open_button = QPushButton("Open a folder…  (Ctrl+O)")
        self.open_button.setToolTip("Choose a folder of images (searched recursively); its labels are kept "
                                    "in a .chimera folder inside it")
        self.demo_button = QPushButton("Open the demo")
        self.demo_button.setToolTip("A few images of coloured shapes with a small bundled model: works offline, "
                                    "in seconds")
        for button in (self.open_button, self.demo_button):
            button.setMinimumHeight(36)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.demo_button)
        buttons.addStretch(1)
        self.recent_title = QLabel("<b>Recent projects</b>")
        self.recent_list = QListWidget()
        self.recent_list.setToolTip("Double-click (or Enter) to open")
        self.recent_list.setMaximumHeight(220)
        self.recent_empty = QLabel("No recent projects yet.")
        self.recent_empty.setEnabled(False)

        column = QVBoxLayout()
        column.addWidget(title)
        column.addWidget(intro)
        column.addSpacing(12)
        column.addLayout(buttons)
        column.addSpacing(18)
        column.addWidget(self.recent_title)
        column.addWidget(self.recent_list)
        column.addWidget(self.recent_empty)
        column.addSpacing(18)
        keys = QLabel("In a project: <b>1</b>–<b>9</b> pick a class · <b>B</b> <b>E</b> <b>G</b> brush, eraser, "
                      "fill · <b>V</b> verified · <b>D</b> / <b>A</b> next / previous · <b>F1</b> every key")
        keys.setWordWrap(True)
        keys.setEnabled(False)
        column.addWidget(keys)
        column.addStretch(1)
        holder = QWidget()
        holder.setLayout(column)
        holder.setMaximumWidth(640)
        column.setContentsMargins(0, 40, 0, 0)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addWidget(holder, 3)
        outer.addStretch(1)

        self.open_button.clicked.connect(self.open_folder_requested)
        self.demo_button.clicked.connect(self.demo_requested)
        self.recent_list.itemActivated.connect(lambda item: self.recent_requested.emit(item.data(PATH_ROLE)))

    def set_recent(self, folders: list[Path]) -> None:
        self.recent_list.clear()
        for folder in folders:
            item = QListWidgetItem(f"{folder.name}    {folder.parent}")
            item.setData(PATH_ROLE, str(folder))
            item.setToolTip(str(folder))
            self.recent_list.addItem(item)
        self.recent_list.setVisible(bool(folders))
        self.recent_empty.setVisible(not folders)

    def recent(self) -> list[str]:
        return [self.recent_list.item(r).data(PATH_ROLE) for r in range(self.recent_list.count())]
