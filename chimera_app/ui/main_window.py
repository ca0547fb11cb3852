"""The main window: lays out the welcome page or the canvas, the class panel, the file list and the
status bar, and routes commands. Behaviour lives elsewhere (``AnnotationController``, ``Session``,
``EngineClient``; menus.py builds the actions, status_bar.py the status line); this module opens
and closes projects and connects the pieces.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
)

from chimera_app.project.classes import default_color
from chimera_app.project.store import Project
from chimera_app.service.requests import ModelLoaded
from chimera_app.session import Session
from chimera_app.ui.canvas import Canvas
from chimera_app.ui.class_panel import ClassPanel
from chimera_app.ui.controller import AnnotationController
from chimera_app.ui.file_list import FileList
from chimera_app.ui.improve_model import ImproveModel
from chimera_app.ui.menus import TOOLS, build_menus, build_toolbar
from chimera_app.ui.recent import RecentProjects
from chimera_app.ui.status_bar import StatusBar, StatusPanel
from chimera_app.ui.versions_menu import ModelVersionsMenu
from chimera_app.ui.welcome import WelcomePage
from chimera_app.worker import EngineClient
from chimera_engine import ChimeraError

__all__ = ["DEFAULT_MODEL", "PHOTO_MODEL", "TOOLS", "MainWindow"]

DEFAULT_MODEL = "shapes-chimera"  # the demo's (shapes-world folders)
PHOTO_MODEL = "clip:ViT-B-16/openai"  # the documented default for photos, when its weights are cached


class MainWindow(QMainWindow):
    def __init__(self, device: str = "auto", client: EngineClient | None = None,
                 recent: RecentProjects | None = None):
        super().__init__()
        self.setWindowTitle("Chimera")
        self.device, self.precision = device, "auto"
        self.client = client or EngineClient()
        self.recent = recent or RecentProjects()
        self.project: Project | None = None
        self.session: Session | None = None
        self.controller: AnnotationController | None = None
        self.model_name: str | None = None  # asked for last
        self.model_in_use: str | None = None  # loaded, predicting now
        self.predictions_shown = 0
        self.report_window = None

        self.canvas = Canvas()
        self.welcome = WelcomePage()
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.canvas)
        self.setCentralWidget(self.pages)
        self.class_panel = ClassPanel()
        self.file_list = FileList()
        self._dock("Classes", self.class_panel, Qt.LeftDockWidgetArea)
        self._dock("Images", self.file_list, Qt.RightDockWidgetArea)
        self.setStatusBar(StatusBar(self))  # long messages end at a word, never under the cursor readout
        self.status = StatusPanel(self.statusBar())
        # Item 2 of PRODUCT.md's edge: an explicit "unlabeled" decision, not a forced best guess.
        self.min_confidence = QDoubleSpinBox(minimum=0.0, maximum=0.99, singleStep=0.05, decimals=2, value=0.0)
        self.min_confidence.setToolTip("Pixels the model is less sure of than this stay unlabeled "
                                       "(0: every pixel gets its best class)")
        self.min_confidence.valueChanged.connect(self._set_min_confidence)
        self.status.opacity.valueChanged.connect(lambda v: setattr(self.canvas, "opacity", v / 100))
        self.canvas.zoom_changed.connect(lambda z: self.status.zoom_label.setText(f"{z * 100:.0f} %"))
        self.canvas.cursor_moved.connect(self._on_cursor)
        self.canvas.pointer_left.connect(self.status.clear_cursor)
        self.canvas.brush_radius_changed.connect(
            lambda r: self.statusBar().showMessage(f"Brush radius {r:.0f} px", 1500))
        self.class_panel.draft_changed.connect(self._on_draft)
        self.class_panel.class_added.connect(lambda *_: self.status.set_draft("", None))  # the draft is a class now
        self.welcome.open_folder_requested.connect(self.choose_folder)
        self.welcome.demo_requested.connect(self.open_demo)
        self.welcome.recent_requested.connect(lambda folder: self.open_project(Path(folder)))
        self._model_dialog = None  # made on first use, then reused
        self._guide = None
        self.client.model_loaded.connect(self._on_model_loaded)
        self.client.failed.connect(self._on_failed)
        self.client.download_cancelled.connect(self._on_load_cancelled)
        self.status.cancel_load.clicked.connect(self.client.cancel_download)
        self.actions_by_name = {}
        self.improve_model = ImproveModel(self)  # Model → Improve model: fine-tuning in a subprocess
        self.status.finetune.clicked.connect(lambda *_: self.improve_model.start())  # running: shows it
        build_menus(self)
        build_toolbar(self)
        self.model_versions = ModelVersionsMenu(self, self.versions_menu)
        self.improve_model.client.finished.connect(lambda *_: self.update_actions())
        self._prelabel_running = False
        self._show_welcome()

    def _dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _show_welcome(self) -> None:
        self.welcome.set_recent(self.recent.folders())
        self.pages.setCurrentWidget(self.welcome)
        self.update_actions()

    def update_actions(self) -> None:
        """Offer only what can run now: nothing that needs a folder without one, Improve model only
        with a model in use (or to show the one running), one folder pre-label at a time, Resume
        only when a pre-label stopped before it was done."""
        a, has_project = self.actions_by_name, self.project is not None
        running = self._prelabel_running
        a["improve_model"].setEnabled(self.improve_model.running or (has_project and bool(self.model_in_use)))
        a["prelabel"].setEnabled(has_project and not running)
        a["reprelabel"].setEnabled(has_project and not running)
        a["resume_prelabel"].setEnabled(has_project and not running and self.controller is not None
                                        and self.controller.can_resume_prelabel)
        a["cancel_prelabel"].setEnabled(has_project and running)

    def fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        folders = self.recent.folders()
        for folder in folders:
            action = self.recent_menu.addAction(str(folder))
            action.triggered.connect(lambda *_, f=folder: self.open_project(f))
        if not folders:
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    # -- commands -------------------------------------------------------------------------------
    def has_project(self) -> bool:
        """Whether a folder is open; if not, the status bar says how to open one."""
        if self.project is None or self.controller is None:
            self.statusBar().showMessage("Open a folder first (Ctrl+O)", 4000)
            return False
        return True

    def with_controller(self, method: str, *args) -> None:
        if self.has_project():
            getattr(self.controller, method)(*args)

    def set_tool(self, name: str) -> None:
        self.canvas.set_tool(name)
        self.actions_by_name[name].setChecked(True)

    def scale_brush(self, factor: float) -> None:
        self.canvas.brush_radius = self.canvas.brush_radius * factor  # the canvas clamps and reports it

    def _set_min_confidence(self, value: float) -> None:
        if self.controller is not None:
            self.controller.set_min_confidence(value)
        else:
            self.client.set_min_confidence(value)

    def set_protect(self, on: bool) -> None:
        if self.session is not None:
            self.session.protect_others = on

    def set_provenance_view(self, on: bool) -> None:
        self.canvas.show_provenance = on
        if on:
            self.statusBar().showMessage("Hatched: pixels the model decided and no person has checked yet", 4000)

    def _on_cursor(self, x: float, y: float) -> None:
        what = self.controller.describe_pixel(x, y) if self.controller is not None else ""
        self.status.set_cursor(x, y, what)

    def refresh_cursor(self) -> None:
        """The pixel under the pointer changed without the pointer moving (an edit, a prediction,
        another image, a model switch): read it again; nothing when the pointer is not over it."""
        where = self.canvas.pointer_image_pos()
        if where is None or self.controller is None:
            self.status.clear_cursor()
        else:
            self._on_cursor(*where)

    def _on_draft(self, text: str) -> None:
        classes = self.class_panel.classes
        self.status.set_draft(text, default_color(classes.next_id) if text else None)

    # -- project --------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_project(Path(folder))

    def open_demo(self) -> bool:
        from chimera_app.app import create_demo_folder, default_demo_dir, demo_classes, demo_model

        folder = create_demo_folder(default_demo_dir())
        return self.open_project(folder, model=demo_model(), classes=demo_classes(folder))

    def open_project(self, images: Path, project_dir: Path | None = None, model: str | None = None,
                     classes: list[str] = ()) -> bool:
        """Open (or create) the project of ``images``; False (after a message) when it cannot be.
        ``classes`` already in the project are skipped (re-running --demo after a rename or a
        reorder is no clash); classes typed before any folder was open are added too."""
        typed_before = [c.prompt for c in self.class_panel.classes] if self.project is None else []
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
        notes = self._add_classes(project, [*typed_before, *classes])
        self._save_meta(project)
        self.class_panel.set_classes(project.classes)
        self.file_list.set_project(project.images(), project.state, project.uncertainty)
        if project.recovered and not project.recovery_problems:
            notes.append(f"Recovered unsaved edits of {len(project.recovered)} image(s)")
        if project.skipped_images:  # broken or looping links, unreadable folders
            more = len(project.skipped_images) - 2
            notes.append(f"Skipped {len(project.skipped_images)} unreadable entries: "
                         + "; ".join(project.skipped_images[:2]) + (f"; and {more} more" if more > 0 else ""))
        if notes:  # shown in the status bar, not in a box: nothing here needs an answer
            self.statusBar().showMessage("; ".join(notes), 0 if project.skipped_images else 8000)
        if project.recovery_problems:
            QMessageBox.warning(self, "Recovered with problems", "\n".join(map(str, project.recovery_problems)))
        self._attach_controller()
        self.setWindowTitle(f"Chimera — {images}")
        self.pages.setCurrentWidget(self.canvas)
        self.recent.add(Path(images))
        self._start_model(model or self._model_at_open(project))
        if project.images():
            self.file_list.select(project.images()[0])
        else:
            self.statusBar().showMessage(f"No images found in {images}", 8000)
        self._maybe_show_guide()
        return True

    def _add_classes(self, project: Project, texts: list[str]) -> list[str]:
        """Add ``texts`` not in the project yet; what was refused, as status notes."""
        notes = []
        for text in texts:
            if project.classes.find(text) is not None:
                continue
            try:
                project.classes.add(text)
            except ChimeraError as error:  # e.g. a phrase another class already has
                notes.append(f"Class '{text}' not added: {error}")
        return notes

    def _attach_controller(self) -> None:
        self.controller = AnnotationController(self.session, self.client, self.canvas, self.class_panel,
                                               self.file_list, self)
        self.controller.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        self.controller.failed.connect(self._on_failed)
        self.controller.state_changed.connect(self._on_state_changed)
        self.controller.prediction_shown.connect(self._on_prediction_shown)
        self.controller.prelabel_running.connect(self._on_prelabel_running)
        self.controller.prelabel_progress.connect(self.status.set_progress)
        self.controller.view_changed.connect(self.refresh_cursor)
        self._on_prelabel_running(False)
        self.session.protect_others = self.actions_by_name["protect"].isChecked()

    def _model_at_open(self, project: Project) -> str | None:
        """The project's active fine-tuned version, else its own model choice."""
        from chimera_app.service.versions import model_at_open

        try:
            return model_at_open(project.data_dir, project.model)
        except ChimeraError as error:  # a damaged index or a missing version: the project's own model
            QMessageBox.warning(self, "Model versions", f"{error}\nUsing the project's own model instead; "
                                "Model → Versions switches to another version.")
            return project.model

    def _start_model(self, model: str | None) -> None:
        """Load ``model``; with none given or remembered, the default for photos when its weights
        are cached, else no model and a note saying how to get one (never, silently, the shapes
        toy model on a folder of photos)."""
        if model:
            self.load_model(model)
            return
        if self.model_in_use and self.model_in_use != DEFAULT_MODEL:
            return  # keep the model already loaded: it is not the shapes toy model
        from chimera_app.service.downloads import cached_clip_weights
        from chimera_engine.model_names import parse_model_name

        try:
            cached = cached_clip_weights(parse_model_name(PHOTO_MODEL)) is not None
        except ChimeraError:
            cached = False
        if cached:
            self.load_model(PHOTO_MODEL)
            return
        self.status.set_model("no model yet", "Model → Choose model…")
        self.statusBar().showMessage(
            f"No model for this folder yet: the default for photos, {PHOTO_MODEL}, is not in the cache. "
            "Model → Choose model… to download it or use a local file (the bundled shapes model only "
            "knows coloured shapes). You can paint meanwhile.", 0)

    def close_project(self) -> None:
        if self.project is None:
            return
        self.client.cancel_prelabel()
        self.improve_model.project_closing()
        if self.controller is not None:
            self.controller.detach()
            self.controller.deleteLater()
        self.session.close()
        self.project.close()
        self.project = self.session = self.controller = None
        self.status.hide_progress()
        self.status.clear_cursor()
        self.status.set_draft("", None)
        self.update_actions()

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

    # -- model ----------------------------------------------------------------------------------
    def load_model(self, name: str, device: str | None = None) -> None:
        from chimera_engine.model_names import parse_model_name

        self.model_name = name
        using = f" (still using {self.model_in_use})" if self.model_in_use else ""
        try:
            downloads = parse_model_name(name).needs_download
        except ChimeraError:
            downloads = False  # the load itself says what is wrong with the name
        self.status.set_model(f"loading {name}…{using}", cancellable=downloads)
        self.client.load_model(name, device or self.device, self.precision)

    def _on_load_cancelled(self) -> None:
        self.status.set_model(f"{self.model_in_use} (loading {self.model_name} cancelled)"
                              if self.model_in_use else "no model")

    def _on_model_loaded(self, info: ModelLoaded) -> None:
        self.model_in_use = info.name
        version = self.model_versions.model_loaded(info.name)  # the versions index records it
        self.status.set_model(f"{version or info.name} · {info.device}",
                              f"{info.name}\n{info.reason}" if version else info.reason)
        if self.project is not None and version is None:  # a version never replaces the base model
            self.project.model = info.name
            self._save_meta(self.project)
        self.update_actions()
        if self.controller is not None:
            self.controller.request_prediction()

    def _on_failed(self, kind: str, message: str) -> None:
        if kind == "image":  # marked in the file list and said on the canvas: never a box
            self.statusBar().showMessage(message, 8000)
            return
        if kind == "model":  # the previous model (if any) still predicts: say which
            self.model_versions.load_failed()
            if self.model_in_use:
                self.status.set_model(f"{self.model_in_use} (loading {self.model_name} failed)", message)
            else:
                self.status.set_model("no model", message)
        if any(dialog.isVisible() and dialog.isModal() for dialog in self.findChildren(QDialog)):
            return  # an open dialog (e.g. a download) shows its own errors
        QMessageBox.warning(self, f"Chimera: {kind} error", message)

    def _on_state_changed(self, rel: str, state: str) -> None:
        self.file_list.set_state(rel, state)
        if self.session is not None and rel == self.session.rel:
            self.status.state_label.setText(f"{rel}: {state.replace('-', ' ')}")

    def rgb_ready(self) -> bool:
        """The current image is decoded and on the canvas."""
        return self.controller is not None and self.controller.rgb is not None

    def _on_prediction_shown(self, rel: str, seconds: float) -> None:
        self.predictions_shown += 1

    def _on_prelabel_running(self, running: bool) -> None:
        """One folder pre-label at a time: while one runs, only Cancel is offered."""
        self._prelabel_running = running
        self.update_actions()
        if not running:
            self.status.hide_progress()

    # -- dialogs and windows --------------------------------------------------------------------
    def _back_to_canvas(self) -> None:
        """After a dialog: keys (digits, Space) go to the canvas again, not to a text field."""
        if self.project is not None:
            self.activateWindow()  # the window system may not hand the keyboard back by itself
            self.canvas.setFocus(Qt.FocusReason.OtherFocusReason)

    def choose_model(self) -> None:
        from chimera_app.ui.dialogs import ModelDialog

        if self._model_dialog is None:  # one dialog: its connections to the client are made once
            self._model_dialog = ModelDialog(self.client, parent=self)
        dialog = self._model_dialog
        dialog.set_model_name(self.model_name or DEFAULT_MODEL)
        if dialog.exec():
            self.device, self.precision = dialog.device(), dialog.precision()
            self.load_model(dialog.model_name(), self.device)
        self._back_to_canvas()

    def export(self) -> None:
        if not self.has_project():
            return
        from chimera_app.ui.dialogs import ExportDialog

        self.save()
        ExportDialog(self.project, parent=self).exec()
        self._back_to_canvas()

    def show_report(self) -> None:
        if not self.has_project():
            return
        from chimera_app.report import build_report
        from chimera_app.ui.report_window import ReportWindow

        self.save()
        report = build_report(self.project)
        if self.report_window is not None:
            self.report_window.close()
        self.report_window = ReportWindow(report, self.project.root.name, parent=self,
                                          start_dir=self.project.root.parent)
        self.report_window.show()

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
        self._back_to_canvas()

    def show_guide(self) -> None:
        from chimera_app.ui.first_run import FirstRunGuide

        if self._guide is None:
            self._guide = FirstRunGuide(self)
            self._guide.finished.connect(lambda *_: self._back_to_canvas())
        self._guide.show()
        self._guide.raise_()

    def _maybe_show_guide(self) -> None:
        from chimera_app.ui.first_run import guide_dismissed

        if not guide_dismissed():
            self.show_guide()

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
        self.improve_model.shutdown()  # a fine-tune in flight is asked to stop (it saves), then waited for
        self.client.shutdown()
        super().closeEvent(event)
