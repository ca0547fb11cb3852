"""The main window: lays out the canvas, the class panel and the file list, and binds every action
to its shortcut. Behaviour lives elsewhere (``AnnotationController``, ``Session``, ``EngineClient``);
this module only builds widgets and routes commands.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
)

from chimera_app.project.store import Project
from chimera_app.service.requests import ModelLoaded
from chimera_app.session import Session
from chimera_app.ui import shortcuts
from chimera_app.ui.canvas import Canvas
from chimera_app.ui.class_panel import ClassPanel
from chimera_app.ui.controller import AnnotationController
from chimera_app.ui.file_list import FileList
from chimera_app.worker import EngineClient
from engine import ChimeraError

DEFAULT_MODEL = "shapes-chimera"
TOOLS = ("brush", "eraser", "fill", "polygon", "rectangle", "pan")


class MainWindow(QMainWindow):
    def __init__(self, device: str = "auto", client: EngineClient | None = None):
        super().__init__()
        self.setWindowTitle("Chimera")
        self.device, self.precision = device, "auto"
        self.client = client or EngineClient()
        self.project: Project | None = None
        self.session: Session | None = None
        self.controller: AnnotationController | None = None
        self.model_name: str | None = None
        self.predictions_shown = 0

        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.class_panel = ClassPanel()
        self.file_list = FileList()
        self._dock("Classes", self.class_panel, Qt.LeftDockWidgetArea)
        self._dock("Images", self.file_list, Qt.RightDockWidgetArea)
        self.device_label, self.state_label, self.zoom_label = QLabel("no model"), QLabel(""), QLabel("")
        self.cursor_label = QLabel("")  # image pixel under the pointer
        for label in (self.cursor_label, self.state_label, self.zoom_label, self.device_label):
            self.statusBar().addPermanentWidget(label)
        self.canvas.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f} %"))
        self.canvas.cursor_moved.connect(lambda x, y: self.cursor_label.setText(f"x {int(x)}  y {int(y)}"))
        self.canvas.brush_radius_changed.connect(
            lambda r: self.statusBar().showMessage(f"Brush radius {r:.0f} px", 1500))
        self._model_dialog = None  # made on first use, then reused
        self.client.model_loaded.connect(self._on_model_loaded)
        self.client.failed.connect(self._on_failed)
        self.actions_by_name: dict[str, QAction] = {}
        self._build_menus()
        self._build_toolbar()

    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    # -- actions --------------------------------------------------------------------------------
    def _action(self, menu, name: str, text: str, slot, checkable: bool = False, checked: bool = False) -> QAction:
        action = QAction(text, self, checkable=checkable)
        if checkable:
            action.setChecked(checked)
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda *_: slot())
        keys = shortcuts.keys_for(name)
        if keys:
            action.setShortcuts([QKeySequence(k) for k in keys])
        action.setShortcutContext(Qt.WindowShortcut)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work while the menu bar is hidden too
        self.actions_by_name[name] = action
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "open_folder", "Open folder…", self.choose_folder)
        self._action(file, "save", "Save", self.save)
        file.addSeparator()
        self._action(file, "import_coco", "Import COCO JSON…", self.import_coco)
        self._action(file, "export", "Export…", self.export)
        file.addSeparator()
        self._action(file, "quit", "Quit", self.close)

        edit = bar.addMenu("&Edit")
        self._action(edit, "undo", "Undo", lambda: self._with_controller("undo"))
        self._action(edit, "redo", "Redo", lambda: self._with_controller("redo"))
        edit.addSeparator()
        self._action(edit, "accept_image", "Accept all", lambda: self._with_controller("accept_all"))
        self._action(edit, "accept_class", "Accept class",
                     lambda: self._with_controller("accept_class"))
        self._action(edit, "toggle_verified", "Verified",
                     lambda: self._with_controller("toggle_verified"))
        self._action(edit, "protect", "Protect others", self._set_protect, checkable=True)

        tool_menu = bar.addMenu("&Tools")
        group = QActionGroup(self)
        for name in TOOLS:
            action = self._action(tool_menu, name, name.capitalize(), lambda on, n=name: on and self.set_tool(n),
                                  checkable=True, checked=name == "brush")
            group.addAction(action)
        tool_menu.addSeparator()
        self._action(tool_menu, "brush_smaller", "Smaller brush", lambda: self._brush(1 / 1.25))
        self._action(tool_menu, "brush_larger", "Larger brush", lambda: self._brush(1.25))
        self._action(tool_menu, "cancel", "Cancel", self.canvas.cancel)

        view = bar.addMenu("&View")
        self._action(view, "toggle_masks", "Masks", lambda on: setattr(self.canvas, "show_masks", on),
                     checkable=True, checked=True)
        self._action(view, "toggle_outlines", "Outlines", lambda on: setattr(self.canvas, "show_outlines", on),
                     checkable=True)
        self._action(view, "toggle_confidence", "Show confidence",
                     lambda on: setattr(self.canvas, "show_confidence", on), checkable=True)
        self.actions_by_name["toggle_confidence"].setText("Confidence")
        view.addSeparator()
        self._action(view, "zoom_in", "Zoom in", self.canvas.zoom_in)
        self._action(view, "zoom_out", "Zoom out", self.canvas.zoom_out)
        self._action(view, "fit", "Fit to window", self.canvas.fit)
        self._action(view, "actual_size", "100 %", self.canvas.actual_size)
        # Item 2 of PRODUCT.md's edge: an explicit "unlabeled" decision, not a forced best guess.
        self.min_confidence = QDoubleSpinBox(minimum=0.0, maximum=0.99, singleStep=0.05, decimals=2, value=0.0)
        self.min_confidence.setToolTip("Pixels the model is less sure of than this stay unlabeled "
                                       "(0: every pixel gets its best class)")
        self.min_confidence.valueChanged.connect(self._set_min_confidence)
        self.opacity = QSlider(Qt.Horizontal, minimum=0, maximum=100, value=50, maximumWidth=120)
        self.opacity.valueChanged.connect(lambda v: setattr(self.canvas, "opacity", v / 100))
        self.statusBar().addPermanentWidget(QLabel("opacity"))
        self.statusBar().addPermanentWidget(self.opacity)

        go = bar.addMenu("&Go")
        self._action(go, "next_image", "Next image", self.file_list.next)
        self._action(go, "previous_image", "Previous image", self.file_list.previous)
        self._action(go, "next_uncertain", "Next uncertain", lambda: self._with_controller("next_uncertain"))
        for n in range(1, 10):
            self._action(go, f"class_{n}", f"Class {n}", lambda n=n: self.class_panel.select_key(n))

        model = bar.addMenu("&Model")
        self._action(model, "choose_model", "Choose model…", self.choose_model)
        self._action(model, "prelabel", "Pre-label folder", lambda: self._with_controller("prelabel"))
        self._action(model, "resume_prelabel", "Resume pre-label", lambda: self._with_controller("prelabel", True))
        self._action(model, "cancel_prelabel", "Cancel pre-label", lambda: self._with_controller("cancel_prelabel"))

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "shortcut_sheet", "Keyboard shortcuts", self.show_shortcuts)

    def _build_toolbar(self) -> None:
        """The tools and the switches people reach for most, one click away; tooltips show the keys."""
        bar = self.addToolBar("Tools")
        bar.setObjectName("Tools")
        bar.setToolButtonStyle(Qt.ToolButtonTextOnly)
        names = (*TOOLS, None, "accept_image", "accept_class", "toggle_verified", "protect", None,
                 "toggle_masks", "toggle_outlines", "toggle_confidence", "next_uncertain", None, "prelabel",
                 "cancel_prelabel")
        for name in names:
            if name is None:
                bar.addSeparator()
                continue
            if name == "prelabel":
                bar.addWidget(QLabel(" Unlabeled below "))
                bar.addWidget(self.min_confidence)
                bar.addSeparator()
            action = self.actions_by_name[name]
            keys = ", ".join(s.toString(QKeySequence.NativeText) for s in action.shortcuts())
            action.setToolTip(f"{action.text()} ({keys})" if keys else action.text())
            bar.addAction(action)

    def _with_controller(self, method: str, *args) -> None:
        if self.controller is None:
            self.statusBar().showMessage("Open a folder first (Ctrl+U)", 4000)
            return
        getattr(self.controller, method)(*args)

    def set_tool(self, name: str) -> None:
        self.canvas.set_tool(name)
        self.actions_by_name[name].setChecked(True)

    def _brush(self, factor: float) -> None:
        self.canvas.brush_radius = self.canvas.brush_radius * factor  # the canvas clamps and reports it

    def _set_min_confidence(self, value: float) -> None:
        if self.controller is not None:
            self.controller.set_min_confidence(value)
        else:
            self.client.set_min_confidence(value)

    def _set_protect(self, on: bool) -> None:
        if self.session is not None:
            self.session.protect_others = on

    # -- project --------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_project(Path(folder))

    def open_project(self, images: Path, project_dir: Path | None = None, model: str | None = None,
                     classes: list[str] = ()) -> bool:
        """Open (or create) the project of ``images``; False (after a message) when it cannot be."""
        if self.project is not None and Path(images).resolve() == self.project.root.resolve():
            self.close_project()  # reopening our own project (e.g. after an import): release its lock first
        try:
            project = Project.open(images, project_dir)
        except ChimeraError as error:
            QMessageBox.critical(self, "Cannot open the project", str(error))
            return False
        self.close_project()
        self.project, self.session = project, Session(project)
        self.session.saver.on_error = lambda rel, e: QTimer.singleShot(
            0, lambda: self._on_failed("disk", f"Could not save {rel}: {e} (edits are kept in the journal)"))
        for text in classes:
            try:
                project.classes.add(text)
            except ChimeraError as error:  # e.g. already in the project
                self.statusBar().showMessage(str(error), 4000)
        self._save_meta(project)
        self.class_panel.set_classes(project.classes)
        self.file_list.set_project(project.images(), project.state, project.uncertainty)
        notes = []  # shown in the status bar, not in a box: nothing here needs an answer
        if project.recovered and not project.recovery_problems:
            notes.append(f"Recovered unsaved edits of {len(project.recovered)} image(s)")
        if project.skipped_images:  # broken or looping links, unreadable folders
            more = len(project.skipped_images) - 2
            notes.append(f"Skipped {len(project.skipped_images)} unreadable entries: "
                         + "; ".join(project.skipped_images[:2]) + (f"; and {more} more" if more > 0 else ""))
        if notes:  # skipped entries stay until the next message: the folder may take long to load
            self.statusBar().showMessage("; ".join(notes), 0 if project.skipped_images else 8000)
        if project.recovery_problems:
            QMessageBox.warning(self, "Recovered with problems", "\n".join(map(str, project.recovery_problems)))
        self.controller = AnnotationController(self.session, self.client, self.canvas, self.class_panel,
                                               self.file_list, self)
        self.controller.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.controller.failed.connect(self._on_failed)
        self.controller.state_changed.connect(self._on_state_changed)
        self.controller.prediction_shown.connect(self._on_prediction_shown)
        self.controller.prelabel_running.connect(self._on_prelabel_running)
        self._on_prelabel_running(False)
        self.session.protect_others = self.actions_by_name["protect"].isChecked()
        self.setWindowTitle(f"Chimera — {images}")
        self.load_model(model or project.model or DEFAULT_MODEL)
        if project.images():
            self.file_list.select(project.images()[0])
        else:
            self.statusBar().showMessage(f"No images found in {images}", 8000)
        return True

    def close_project(self) -> None:
        if self.project is None:
            return
        self.client.cancel_prelabel()
        if self.controller is not None:
            self.controller.detach()
            self.controller.deleteLater()
        self.session.close()
        self.project.close()
        self.project = self.session = self.controller = None

    def save(self) -> None:
        if self.session is not None:
            self.session.save()
            self.session.saver.flush()
            if self._save_meta(self.project):
                self.statusBar().showMessage("Saved", 2000)

    def _save_meta(self, project: Project) -> bool:
        """Write project.json; False (after a message) when the disk refuses it."""
        try:
            project.save_meta()
        except ChimeraError as error:
            self._on_failed("disk", str(error))
            return False
        return True

    def load_model(self, name: str, device: str | None = None) -> None:
        self.model_name = name
        self.device_label.setText(f"loading {name}…")
        self.client.load_model(name, device or self.device, self.precision)

    def _on_model_loaded(self, info: ModelLoaded) -> None:
        self.device_label.setText(f"{info.name} · {info.device}")
        self.device_label.setToolTip(info.reason)
        if self.project is not None:
            self.project.model = self.model_name
            self._save_meta(self.project)
        if self.controller is not None:
            self.controller.request_prediction()

    def _on_failed(self, kind: str, message: str) -> None:
        if kind == "model":
            self.device_label.setText("no model")
        if any(dialog.isVisible() for dialog in self.findChildren(QDialog)):
            return  # an open dialog (e.g. a download) shows its own errors
        QMessageBox.warning(self, f"Chimera: {kind} error", message)

    def _on_state_changed(self, rel: str, state: str) -> None:
        self.file_list.set_state(rel, state)
        if self.session is not None and rel == self.session.rel:
            self.state_label.setText(f"{rel}: {state}")

    def rgb_ready(self) -> bool:
        """The current image is decoded and on the canvas."""
        return self.controller is not None and self.controller.rgb is not None

    def _on_prediction_shown(self, rel: str, seconds: float) -> None:
        self.predictions_shown += 1

    def _on_prelabel_running(self, running: bool) -> None:
        """One folder pre-label at a time: while one runs, only Cancel is offered."""
        self.actions_by_name["prelabel"].setEnabled(not running)
        self.actions_by_name["resume_prelabel"].setEnabled(not running)
        self.actions_by_name["cancel_prelabel"].setEnabled(running)

    # -- dialogs --------------------------------------------------------------------------------
    def choose_model(self) -> None:
        from chimera_app.ui.dialogs import ModelDialog

        if self._model_dialog is None:  # one dialog: its connections to the client are made once
            self._model_dialog = ModelDialog(self.client, parent=self)
        dialog = self._model_dialog
        dialog.set_model_name(self.model_name or DEFAULT_MODEL)
        if dialog.exec():
            self.device, self.precision = dialog.device(), dialog.precision()
            self.load_model(dialog.model_name(), self.device)

    def export(self) -> None:
        if self.project is None:
            return
        from chimera_app.ui.dialogs import ExportDialog

        self.save()
        ExportDialog(self.project, parent=self).exec()

    def import_coco(self) -> None:
        if self.project is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import COCO JSON", str(self.project.root), "COCO JSON (*.json)")
        if not path:
            return
        from chimera_app.project.exports import import_coco

        self.save()
        try:
            report = import_coco(self.project, path)
        except ChimeraError as error:
            QMessageBox.warning(self, "Import failed", str(error))
            return
        self.session.discard()  # the import rewrote the files: never save the stale copy over them
        root, project_dir = self.project.root, self.project.data_dir
        self.open_project(root, project_dir if project_dir != root / ".chimera" else None, model=self.model_name)
        self.statusBar().showMessage(f"Imported {report.get('images', 0)} images from {path}", 8000)

    def show_shortcuts(self) -> None:
        from chimera_app.ui.dialogs import ShortcutSheet

        ShortcutSheet(self).exec()

    # -- lifecycle ------------------------------------------------------------------------------
    def screenshot_when_predicted(self, path: Path, timeout: float) -> int:
        """Wait for the first prediction to be painted, save a screenshot, return an exit code."""
        deadline = time.monotonic() + timeout
        loop = QEventLoop()
        while self.predictions_shown == 0 and time.monotonic() < deadline:
            QTimer.singleShot(50, loop.quit)
            loop.exec()
        QApplication.processEvents()
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = self.grab().save(str(path))
        self.close()
        if not ok or self.predictions_shown == 0:
            print(f"chimera-app: {'no prediction within the timeout' if ok else 'could not write ' + str(path)}")
            return 1
        print(f"chimera-app: wrote {path}")
        return 0

    def closeEvent(self, event) -> None:
        self.close_project()
        self.client.shutdown()
        super().closeEvent(event)
