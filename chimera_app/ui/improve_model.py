"""**Improve model**: the Qt side of fine-tuning on the project's verified images.

``FinetuneClient`` carries ``chimera_app.service.finetune_runner`` events to the GUI thread as
signals (as ``worker.EngineClient`` does for the engine); ``ImproveModelDialog`` only shows them;
``ImproveModel`` wires the window to both: save first, start the trainer subprocess on the
project, show progress (also in the status bar, so the dialog may be closed), cancel, and at the end
the held-out measurement with an offer to switch. Everything that decides anything (the command,
parsing, cancel and its escalation, what an exit status means) is in the Qt-free runner.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from chimera_app.service.finetune_runner import (
    FinetuneNote,
    FinetuneOutcome,
    FinetuneProgress,
    FinetuneRunner,
    finetune_command,
)
from chimera_app.service.versions import compare_rows
from chimera_app.ui.status_bar import eta_text
from chimera_engine.errors import ChimeraError
from chimera_engine.formats.model_versions import active_checkpoint, models_dir

__all__ = ["FinetuneClient", "ImproveModel", "ImproveModelDialog"]

INTRO = ("Learns from the images people verified in this folder (only the pixels a person decided), "
         "and measures the result on some of them held out. Keep working meanwhile: the model in use "
         "changes only if you switch at the end.")


class FinetuneClient(QObject):
    """One trainer subprocess at a time; its events arrive as signals on the GUI thread."""

    progress = Signal(object)  # FinetuneProgress
    note = Signal(str)
    finished = Signal(object)  # FinetuneOutcome

    _arrived = Signal(object)  # emitted on the runner's threads, delivered on the GUI thread

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.runner: FinetuneRunner | None = None
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def start(self, command: list[str], **options) -> bool:
        """Start ``command`` (see ``finetune_command``); False (and ``finished``) if it cannot start."""
        if self.running:
            raise RuntimeError("a fine-tune is already running")
        self.runner = FinetuneRunner(command, self._arrived.emit, **options)
        return self.runner.start()

    def cancel(self) -> None:
        if self.runner is not None:
            self.runner.cancel()

    def shutdown(self, wait_s: float = 10.0) -> None:
        """App exit: cancel a running fine-tune (it saves and can resume) and wait a little for it."""
        if self.running:
            self.runner.cancel()
            self.runner.wait(wait_s)

    def _deliver(self, event: object) -> None:
        if isinstance(event, FinetuneProgress):
            self.progress.emit(event)
        elif isinstance(event, FinetuneNote):
            self.note.emit(event.message)
        elif isinstance(event, FinetuneOutcome):
            self.finished.emit(event)


class ImproveModelDialog(QDialog):
    """Non-modal: progress with ETA and Cancel while the trainer runs; then the held-out numbers
    before and after, and the offer to switch to the new version."""

    cancel_requested = Signal()
    switch_requested = Signal(str, bool)  # version name, re-pre-label the images nobody verified

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Improve model")
        self.setModal(False)
        self.resize(560, 420)
        self.version: str | None = None
        intro = QLabel(INTRO, wordWrap=True)
        self.stage = QLabel("Starting…")
        self.bar = QProgressBar()
        self.eta = QLabel("")
        self.notes = QLabel("", wordWrap=True)
        self.notes.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary = QLabel("", wordWrap=True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["held-out images", "model in use", "new version"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the fine-tune; nothing changes, and the next Improve model resumes it")
        self.cancel_button.clicked.connect(self._cancel)
        self.use_button = QPushButton("Use it")
        self.use_button.clicked.connect(lambda: self._switch(False))
        self.use_prelabel_button = QPushButton("Use it and re-pre-label")
        self.use_prelabel_button.setToolTip("Switch, then pre-label again every image nobody verified")
        self.use_prelabel_button.clicked.connect(lambda: self._switch(True))
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.hide)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.cancel_button, self.use_button, self.use_prelabel_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        for widget in (intro, self.stage, self.bar, self.eta, self.notes, self.summary, self.table):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        self.start_run()

    def start_run(self) -> None:
        self.version = None
        self.stage.setText("Starting the trainer…")
        self.bar.setRange(0, 0)  # busy until the first progress line
        self.bar.setVisible(True)
        for label in (self.eta, self.notes, self.summary):
            label.setText("")
        self.summary.setStyleSheet("")
        self.table.setRowCount(0)
        self.table.setVisible(False)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setVisible(True)
        self.close_button.setText("Hide")
        self.close_button.setToolTip("Hide this window; the fine-tune goes on (its progress stays in the status bar)")
        for button in (self.use_button, self.use_prelabel_button):
            button.setVisible(False)

    def set_progress(self, progress: FinetuneProgress) -> None:
        self.stage.setText(progress.describe())
        self.bar.setRange(0, max(progress.total, 1))
        self.bar.setValue(min(progress.done, progress.total))
        self.eta.setText(eta_text(-1 if progress.eta_s is None else progress.eta_s))

    def add_note(self, message: str) -> None:
        self.notes.setText("\n".join(filter(None, [self.notes.text(), message])))

    def set_stopping(self) -> None:
        self.cancel_button.setEnabled(False)
        self.stage.setText("Stopping… (the trainer saves its run, so the next Improve model resumes it)")

    def show_outcome(self, outcome: FinetuneOutcome) -> None:
        """The end: the measurement and the switch offer, or what happened instead (never a traceback;
        the trainer's last lines are in the tooltip for whoever wants them)."""
        self.cancel_button.setVisible(False)
        self.bar.setVisible(False)
        self.eta.setText("")
        self.close_button.setText("Close")
        self.close_button.setToolTip("")
        titles = {"done": "Finished", "failed": "Cannot improve the model", "cancelled": "Cancelled",
                  "crashed": "The fine-tune stopped"}
        self.stage.setText(titles.get(outcome.status, outcome.status))
        self.summary.setToolTip(outcome.log[-4000:] if outcome.status == "crashed" else "")
        if outcome.status != "done":
            self.summary.setText(outcome.message)
            self.summary.setStyleSheet("color: #a33;" if outcome.status in ("failed", "crashed") else "")
            return
        result = outcome.result or {}
        self.version = outcome.version
        held = result.get("held_out_images") or []
        self.summary.setText(
            f"{self.version}: trained on {result.get('train_images', '?')} verified images for "
            f"{result.get('iterations', '?')} steps, measured on {len(held)} held-out ones. "
            f"Blend factor α = {result.get('alpha', '?')} (0 keeps the model in use, 1 is fully fine-tuned; "
            f"{result.get('alpha_rule', '')}). Switching is one click, and so is rolling back "
            "(Model → Versions).")
        rows = compare_rows(result)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.setVisible(True)
        self.use_button.setText(f"Use {self.version}")
        self.use_prelabel_button.setText(f"Use {self.version} and re-pre-label")
        for button in (self.use_button, self.use_prelabel_button):
            button.setVisible(True)

    def _cancel(self) -> None:
        self.set_stopping()
        self.cancel_requested.emit()

    def _switch(self, prelabel: bool) -> None:
        if self.version:
            self.switch_requested.emit(self.version, prelabel)
            self.hide()


class ImproveModel(QObject):
    """The window's Improve model command. ``extra_args`` are appended to the trainer's command
    line (e.g. ``["--iterations", "200"]``)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.client = FinetuneClient(self)
        self.extra_args: list[str] = []
        self.dialog: ImproveModelDialog | None = None
        self._data_dir: Path | None = None  # the project the running (or last) fine-tune belongs to
        self.client.progress.connect(self._on_progress)
        self.client.note.connect(self._on_note)
        self.client.finished.connect(self._on_finished)

    @property
    def running(self) -> bool:
        return self.client.running

    def start(self) -> None:
        w = self.window
        if w.project is None:
            w.statusBar().showMessage("Open a folder first (Ctrl+O)", 4000)
            return
        if self.running:  # one at a time: show the one that runs
            self._show_dialog()
            return
        w.save()  # the trainer reads the files: the latest verified masks must be in them
        project = w.project
        try:  # start from the model in use: the active version, else the trainer takes project.json's
            base = active_checkpoint(models_dir(project.data_dir))
        except ChimeraError as error:
            w.statusBar().showMessage(f"Model versions: {error}", 8000)
            return
        custom_dir = project.data_dir if project.data_dir != project.root / ".chimera" else None
        command = finetune_command(project.root, custom_dir, None if base is None else str(base), w.device,
                                   self.extra_args)
        self._data_dir = project.data_dir
        self._dialog().start_run()
        self._show_dialog()
        if self.client.start(command):
            w.status.set_finetune("Improving the model…")

    def cancel(self) -> None:
        if self.running:
            self._dialog().set_stopping()
            self.client.cancel()
            self.window.status.set_finetune("Improving the model: stopping…")

    def project_closing(self) -> None:
        """The fine-tune belongs to the project being closed: stop it (it is saved and resumes)."""
        if self.running:
            self.cancel()

    def shutdown(self) -> None:
        self.client.shutdown()

    # -- events ---------------------------------------------------------------------------------
    def _dialog(self) -> ImproveModelDialog:
        if self.dialog is None:
            self.dialog = ImproveModelDialog(self.window)
            self.dialog.cancel_requested.connect(self.cancel)
            self.dialog.switch_requested.connect(self._switch)
        return self.dialog

    def _show_dialog(self) -> None:
        dialog = self._dialog()
        dialog.show()
        dialog.raise_()

    def _on_progress(self, progress: FinetuneProgress) -> None:
        if self.client.runner is not None and self.client.runner.cancel_requested:
            return  # "stopping…" stays until it has stopped
        self._dialog().set_progress(progress)
        eta = eta_text(-1 if progress.eta_s is None else progress.eta_s)
        self.window.status.set_finetune(f"Improve model · {progress.describe()}" + (f" · {eta}" if eta else ""))

    def _on_note(self, message: str) -> None:
        self._dialog().add_note(message)

    def _on_finished(self, outcome: FinetuneOutcome) -> None:
        w = self.window
        w.status.set_finetune(None)
        project = w.project
        if project is None or project.data_dir != self._data_dir:  # the user moved on meanwhile
            w.statusBar().showMessage(f"Improve model of {self._data_dir}: {outcome.message}", 8000)
            return
        self._dialog().show_outcome(outcome)
        self._show_dialog()
        w.statusBar().showMessage(f"Improve model: {outcome.message.splitlines()[0]}", 8000)

    def _switch(self, version: str, prelabel: bool) -> None:
        self.window.model_versions.switch(version, prelabel)
