"""File → Report: the dataset report (``chimera_app.report``) as a window with a bar chart of
pixels per class, the state counts, a table, and "Save as Markdown…". Draws only: the numbers
come from ``build_report``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from chimera_app.report import STATE_ORDER, STATE_TEXT, DatasetReport
from chimera_app.ui.file_list import STATE_COLORS

__all__ = ["ClassChart", "ReportWindow"]


def _save_path(parent: QWidget, start: str) -> str:
    return QFileDialog.getSaveFileName(parent, "Save the report as Markdown", start, "Markdown (*.md)")[0]


class ClassChart(QWidget):
    """Horizontal bars: pixels per class in the class colour, the share a person decided drawn solid
    and the model's share lighter; then one stacked bar of image states."""

    BAR, GAP, LABEL_W = 18, 6, 140

    def __init__(self, report: DatasetReport, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.report = report
        rows = len(report.classes) + 2
        self.setMinimumHeight(rows * (self.BAR + self.GAP) + 24)
        self.setMinimumWidth(420)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        width = self.width() - self.LABEL_W - 90
        most = max((c.pixels for c in self.report.classes), default=0) or 1
        y = 8
        for c in self.report.classes:
            painter.setPen(fg)
            painter.drawText(QRectF(4, y, self.LABEL_W - 8, self.BAR), Qt.AlignmentFlag.AlignVCenter
                             | Qt.AlignmentFlag.AlignRight, c.name)
            full = width * c.pixels / most
            human = width * c.human_pixels / most
            color = QColor(*c.color)
            light = QColor(color)
            light.setAlpha(110)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(light)
            painter.drawRect(QRectF(self.LABEL_W, y, full, self.BAR))
            painter.setBrush(color)
            painter.drawRect(QRectF(self.LABEL_W, y, human, self.BAR))
            painter.setPen(fg)
            painter.drawText(QRectF(self.LABEL_W + full + 6, y, 90, self.BAR), Qt.AlignmentFlag.AlignVCenter,
                             f"{c.pixels:,}")
            y += self.BAR + self.GAP
        y += self.GAP
        painter.drawText(QRectF(4, y, self.LABEL_W - 8, self.BAR), Qt.AlignmentFlag.AlignVCenter
                         | Qt.AlignmentFlag.AlignRight, "images")
        x, total = float(self.LABEL_W), max(self.report.images, 1)
        for state in STATE_ORDER:
            n = self.report.states.get(state, 0)
            w = width * n / total
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(STATE_COLORS[state]))
            painter.drawRect(QRectF(x, y, w, self.BAR))
            if n and w > 24:
                painter.setPen(QColor("white"))
                painter.drawText(QRectF(x, y, w, self.BAR), Qt.AlignmentFlag.AlignCenter, str(n))
            x += w
        painter.end()


class ReportWindow(QDialog):
    """Non-modal: the user can keep it open beside the canvas."""

    def __init__(self, report: DatasetReport, title: str, parent: QWidget | None = None, *,
                 save_path: Callable[[QWidget, str], str] = _save_path, start_dir: Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Report — {title}")
        self.report, self.title = report, title
        self._save_path, self._start = save_path, start_dir or Path.home()
        states = " · ".join(f"{report.states.get(s, 0)} {STATE_TEXT[s]}" for s in STATE_ORDER)
        summary = QLabel(f"<b>{report.images} images</b>: {states}. "
                         f"{len(report.never_touched)} never touched (no label at all)."
                         "<br>Bars: pixels per class; solid = decided by a person, light = by the model.")
        summary.setWordWrap(True)
        self.chart = ClassChart(report, self)
        self.table = QTableWidget(len(report.classes), 6, self)
        self.table.setHorizontalHeaderLabels(["Class", "Id", "Pixels", "By a person", "Images", "Mean confidence"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for row, c in enumerate(report.classes):
            conf = "–" if c.mean_confidence is None else f"{c.mean_confidence:.0%}"
            human = f"{c.human_pixels / c.pixels:.0%}" if c.pixels else "–"
            for col, text in enumerate((c.name, str(c.id), f"{c.pixels:,}", human, str(c.images), conf)):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.status = QLabel("")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.save_button = buttons.addButton("Save as Markdown…", QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.save_button.clicked.connect(self.save_markdown)
        layout = QVBoxLayout(self)
        layout.addWidget(summary)
        layout.addWidget(self.chart)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.resize(720, 640)

    def markdown(self) -> str:
        return self.report.to_markdown(f"Dataset report: {self.title}")

    def save_markdown(self) -> Path | None:
        path = self._save_path(self, str(self._start / "report.md"))
        if not path:
            return None
        try:
            Path(path).write_text(self.markdown(), encoding="utf-8")
        except OSError as exc:
            self.status.setText(f"Could not write {path}: {exc}")
            return None
        self.status.setText(f"Saved {path}")
        return Path(path)
