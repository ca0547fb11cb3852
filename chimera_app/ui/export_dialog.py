"""Export the project's labels as COCO JSON or indexed PNG masks, and say what was written.

The exporters (``chimera_app.project.exports``) validate before an atomic write, so a failed export
writes nothing; this dialog only collects the choices, runs the exporter, and shows its summary or
its validation errors. The exporters are injectable for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from chimera_engine.errors import ChimeraError

__all__ = ["COCO", "PNG_MASKS", "ExportDialog"]

COCO, PNG_MASKS = "coco", "png-masks"
ERROR_STYLE = "color: #c62828;"


def _export_coco(project, path, states=None) -> dict:
    from chimera_app.project.exports import export_coco

    return export_coco(project, path, states=states)


def _export_png_masks(project, out_dir, states=None) -> dict:
    from chimera_app.project.exports import export_png_masks

    return export_png_masks(project, out_dir, states=states)


def _save_file(parent: QWidget, title: str, start: str) -> str:
    return QFileDialog.getSaveFileName(parent, title, start, "COCO JSON (*.json)")[0]


def _choose_dir(parent: QWidget, title: str, start: str) -> str:
    """A folder, existing or not (the export creates it): a save-style dialog, where a new name
    can be typed; the stock folder chooser accepts only folders that already exist."""
    dialog = QFileDialog(parent, title, start)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    dialog.setOption(QFileDialog.Option.DontConfirmOverwrite, True)
    dialog.setLabelText(QFileDialog.DialogLabel.FileName, "Folder")
    dialog.setLabelText(QFileDialog.DialogLabel.Accept, "Choose")
    return dialog.selectedFiles()[0] if dialog.exec() and dialog.selectedFiles() else ""


def _count(value) -> int | None:
    """A summary field may be a number or the list itself (``images`` of a COCO dict)."""
    if isinstance(value, int):
        return value
    return len(value) if isinstance(value, (list, tuple, dict)) else None


def error_lines(exc: BaseException) -> list[str]:
    """What went wrong, one problem a line (validators attach a ``problems`` / ``errors`` list)."""
    problems = getattr(exc, "problems", None) or getattr(exc, "errors", None)
    if isinstance(problems, (list, tuple)) and problems:
        return [str(exc).splitlines()[0] if str(exc) else type(exc).__name__, *map(str, problems)]
    return str(exc).splitlines() or [type(exc).__name__]


class ExportDialog(QDialog):
    """``project`` is an open ``Project`` (``root`` is read here; the exporters read the rest)."""

    exported = Signal(dict)  # the exporter's summary, with "kind" and "path" filled in

    def __init__(self, project, parent: QWidget | None = None, *,
                 export_coco: Callable[..., dict] = _export_coco,
                 export_png_masks: Callable[..., dict] = _export_png_masks,
                 save_file: Callable[[QWidget, str, str], str] = _save_file,
                 choose_dir: Callable[[QWidget, str, str], str] = _choose_dir) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export labels")
        self.project = project
        self._export = {COCO: export_coco, PNG_MASKS: export_png_masks}
        self._save_file, self._choose_dir = save_file, choose_dir
        self.summary: dict | None = None
        root = Path(project.root)
        # Default targets beside the image folder, never inside it: a masks folder inside would be
        # picked up as images when the folder is opened again.
        self._names = {COCO: f"{root.name}_coco.json", PNG_MASKS: f"{root.name}_masks"}
        self._paths = {kind: str(root.parent / name) for kind, name in self._names.items()}
        self._chosen: set[str] = set()  # formats whose target the user set (typed or browsed)

        self.formats = QButtonGroup(self)
        self.coco_radio = QRadioButton("COCO JSON (one RLE annotation per image and class)", self)
        self.png_radio = QRadioButton("Indexed PNG masks + class list", self)
        self.states = QButtonGroup(self)
        self.all_radio = QRadioButton("All labelled images", self)
        self.verified_radio = QRadioButton("Verified images only", self)
        self.all_radio.setToolTip("Every image with labels: predicted, in progress and verified")
        self.verified_radio.setToolTip("Only images a person marked Verified (V) or accepted whole")
        for group, buttons in ((self.formats, (self.coco_radio, self.png_radio)),
                               (self.states, (self.all_radio, self.verified_radio))):
            for button in buttons:
                group.addButton(button)
        self.coco_radio.setChecked(True)
        self.all_radio.setChecked(True)
        self.path_edit = QLineEdit(self._paths[COCO], self)
        self.browse_button = QPushButton("Browse…", self)
        self.result_label = QLabel(self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        grid = QGridLayout()
        grid.addWidget(QLabel("Format"), 0, 0)
        grid.addWidget(self.coco_radio, 0, 1)
        grid.addWidget(self.png_radio, 1, 1)
        grid.addWidget(QLabel("Images"), 2, 0)
        grid.addWidget(self.all_radio, 2, 1)
        grid.addWidget(self.verified_radio, 3, 1)
        grid.addWidget(QLabel("Target"), 4, 0)
        target = QHBoxLayout()
        target.addWidget(self.path_edit, 1)
        target.addWidget(self.browse_button)
        grid.addLayout(target, 4, 1)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.setDefault(True)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.result_label)
        layout.addWidget(self.buttons)

        self.buttons.rejected.connect(self.reject)
        self.export_button.clicked.connect(self.run_export)
        self.browse_button.clicked.connect(self.browse)
        self.formats.buttonToggled.connect(self._on_format)
        self.path_edit.textEdited.connect(self._on_path_typed)

    # -- choices --------------------------------------------------------------------------------
    def kind(self) -> str:
        return COCO if self.coco_radio.isChecked() else PNG_MASKS

    def set_kind(self, kind: str) -> None:
        (self.coco_radio if kind == COCO else self.png_radio).setChecked(True)

    def verified_only(self) -> bool:
        return self.verified_radio.isChecked()

    def target(self) -> Path | None:
        text = self.path_edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_target(self, path: str | Path) -> None:
        self.path_edit.setText(str(path))
        self._on_path_typed(str(path))

    def _on_path_typed(self, text: str) -> None:
        kind = self.kind()
        self._paths[kind] = text
        self._chosen.add(kind)
        # The other format follows into the same folder until the user sets its target too.
        other = PNG_MASKS if kind == COCO else COCO
        if other not in self._chosen and text.strip():
            self._paths[other] = str(Path(text.strip()).expanduser().parent / self._names[other])

    def _on_format(self, *_) -> None:
        kind = self.kind()
        self.path_edit.setText(self._paths[kind])

    def browse(self) -> None:
        start = self.path_edit.text()
        if self.kind() == COCO:
            path = self._save_file(self, "Export COCO JSON", start)
        else:
            path = self._choose_dir(self, "Folder for the PNG masks", start)
        if path:
            self.set_target(path)

    # -- running --------------------------------------------------------------------------------
    def run_export(self) -> dict | None:
        """Export with the current choices; the summary, or None (and the errors shown)."""
        self.summary = None
        target, kind = self.target(), self.kind()
        problem = self._check_target(target, kind)
        if problem:
            self._show_errors([problem])
            return None
        self.result_label.setStyleSheet("")
        self.result_label.setText("Exporting…")
        QGuiApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            summary = self._export[kind](self.project, target, states=self._states())
        except (ChimeraError, ValueError, OSError) as exc:  # user-caused: bad labels, disk, rights
            self._show_errors(error_lines(exc))
            return None
        finally:
            QGuiApplication.restoreOverrideCursor()
        self.summary = {**(summary or {}), "kind": kind, "path": str((summary or {}).get("path", target))}
        self._show_summary(self.summary)
        self.exported.emit(self.summary)
        return self.summary

    def _states(self):
        """Verified only, or every image with labels (in progress included: a person started it)."""
        from chimera_app.project.document import ImageState

        if self.verified_only():
            return {ImageState.VERIFIED}
        return {ImageState.PREDICTED, ImageState.IN_PROGRESS, ImageState.VERIFIED}

    def _check_target(self, target: Path | None, kind: str) -> str:
        if target is None:
            return "choose where to write the export"
        if kind == COCO and target.is_dir():
            return f"{target} is a folder: give a file name ending in .json"
        if kind == PNG_MASKS and target.exists() and not target.is_dir():
            return f"{target} is a file: PNG masks go into a folder"
        try:
            inside = target.resolve().is_relative_to(Path(self.project.root).resolve())
        except OSError:
            inside = False
        if kind == PNG_MASKS and inside:
            return (f"{target} is inside the image folder: the masks would be opened as images next "
                    "time. Choose a folder outside it.")
        return ""

    def _show_summary(self, summary: dict) -> None:
        parts = []
        for key in ("images", "annotations", "masks", "classes"):
            n = _count(summary.get(key))
            if n is not None:
                parts.append(f"{n} {key}")
        what = ", ".join(parts) or "done"
        self.result_label.setStyleSheet("")
        self.result_label.setText(f"Exported {what} to {summary['path']}")

    def _show_errors(self, lines: list[str]) -> None:
        shown = lines[:20] + ([f"… and {len(lines) - 20} more"] if len(lines) > 20 else [])
        self.result_label.setStyleSheet(ERROR_STYLE)
        self.result_label.setText("Nothing was exported:\n" + "\n".join(shown))

    def result_text(self) -> str:
        return self.result_label.text()
