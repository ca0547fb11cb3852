"""**Improve model**: the Qt side of fine-tuning on the project's verified images.

``FinetuneClient`` carries ``chimera_app.service.finetune_runner`` events to the GUI thread as
signals (as ``worker.EngineClient`` does for the engine); ``ImproveModelDialog`` only shows them;
``ImproveModel`` wires the window to both: save first, check what the app already knows would be
refused (no model, no classes, fewer verified images than ``MIN_VERIFIED_IMAGES``, the trainer's
own minimum), start the trainer subprocess on the project, show progress (also in the status bar,
so the dialog may be closed), cancel, and at the end the held-out measurement with an offer to
switch. A refusal is worded for the app's users from the trainer's reason (never a command-line
flag) with the way forward, e.g. "Improve without these classes". Everything that decides anything
about the subprocess (the command, parsing, cancel and its escalation, what an exit status means)
is in the Qt-free runner.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from chimera_app.project.document import ImageState
from chimera_app.service.finetune_runner import (
    FinetuneNote,
    FinetuneOutcome,
    FinetuneProgress,
    FinetuneRefusal,
    FinetuneRunner,
    finetune_command,
)
from chimera_app.service.versions import compare_rows
from chimera_app.ui.status_bar import eta_text
from chimera_engine.errors import ChimeraError
from chimera_engine.formats.model_versions import MIN_VERIFIED_IMAGES, active_checkpoint, models_dir

__all__ = ["FinetuneClient", "ImproveModel", "ImproveModelDialog", "precheck", "refusal_text"]

INTRO = ("Learns from the images people verified in this folder (V or Ctrl+Enter: every pixel you did not "
         "change counts as yours), and measures the result on some of them held out. Keep working meanwhile: "
         "the model in use changes only if you switch at the end.")
SKIP_EMPTY = "--skip-empty-classes"  # chimera-train finetune: leave classes without pixels out of training


def _count(n: int, word: str) -> str:
    """'1 image', '3 images'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _names(names: list[str]) -> str:
    """"'a'", "'a' and 'b'", "'a', 'b' and 'c'"."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def refusal_text(refusal: FinetuneRefusal) -> tuple[str | None, bool]:
    """(what to tell an app user, whether "Improve without these classes" is a way forward) for the
    trainer's reason; (None, False) for a reason this app does not know (then its message is shown)."""
    d = refusal.details
    if refusal.reason == "too_few_images":
        verified, needed = int(d.get("verified", 0)), int(d.get("needed", MIN_VERIFIED_IMAGES))
        were = "is" if verified == 1 else "are"
        return (f"Improve model learns from the images a person verified: {verified} {were} verified, and it "
                f"needs at least {needed} (one is held out to measure the result). Correct more images and "
                "press V on each one that is right (Ctrl+Enter accepts the whole prediction), then Improve "
                "model again."), False
    if refusal.reason == "no_classes":
        return ("This folder has no classes yet: type the name of each class you label in the class box, "
                "label and verify a few images, then Improve model again."), False
    if refusal.reason == "no_model":
        return "No model is in use: choose one in Model → Choose model… first.", False
    if refusal.reason == "empty_classes":
        classes, held = list(d.get("classes") or []), list(d.get("held_out") or [])
        them, it_keeps = ("it", "it keeps") if len(classes) == 1 else ("them", "they keep")
        train = int(d.get("train_images", 0))
        text = f"No pixel of {_names(classes)} was decided by a person in the {_count(train, 'verified image')} " \
               "used for training"
        if held:
            text += f" ({', '.join(held)} {'was' if len(held) == 1 else 'were'} held out to measure the result)"
        text += (f". Paint {them} in a verified image (or press V on an image where the model got {them} right) "
                 "and Improve model again")
        if d.get("all_classes"):
            return text + ".", False
        return text + f", or improve without {them}: {it_keeps} the current model's behaviour.", True
    return None, False


def precheck(project, model_in_use: str | None) -> str | None:
    """Why Improve model would be refused, known without starting the trainer (the trainer's own
    rules: a model, a class, ``MIN_VERIFIED_IMAGES`` verified images); None when it may start."""
    if not model_in_use:
        return refusal_text(FinetuneRefusal("no_model", {}))[0]
    if not len(project.classes):
        return refusal_text(FinetuneRefusal("no_classes", {}))[0]
    verified = sum(1 for rel in project.images() if project.state(rel) == ImageState.VERIFIED)
    if verified < MIN_VERIFIED_IMAGES:
        return refusal_text(FinetuneRefusal("too_few_images", {"verified": verified,
                                                               "needed": MIN_VERIFIED_IMAGES}))[0]
    return None


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
    retry_requested = Signal(list)  # run again with these extra trainer arguments

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Improve model")
        self.setModal(False)
        self.resize(640, 300)
        self.version: str | None = None
        intro = QLabel(INTRO, wordWrap=True)
        self.stage = QLabel("Starting…")
        self.stage.setStyleSheet("font-weight: bold;")
        self.bar = QProgressBar()
        self.eta = QLabel("")
        self.notes = QLabel("", wordWrap=True)
        self.notes.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary = QLabel("", wordWrap=True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["on the held-out images", "model in use", "new version"])
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSizeAdjustPolicy(QAbstractScrollArea.AdjustToContents)  # every row shows, no scrolling
        self.table.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Minimum)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the fine-tune; nothing changes, and the next Improve model resumes it")
        self.cancel_button.clicked.connect(self._cancel)
        self.use_button = QPushButton("Use it")
        self.use_button.clicked.connect(lambda: self._switch(False))
        self.use_prelabel_button = QPushButton("Use it and re-pre-label")
        self.use_prelabel_button.setToolTip("Switch, then pre-label again every image nobody verified")
        self.use_prelabel_button.clicked.connect(lambda: self._switch(True))
        self.skip_button = QPushButton("Improve without these classes")
        self.skip_button.setToolTip("Fine-tune on the other classes; the ones without person-decided pixels keep "
                                    "the current model's behaviour")
        self.skip_button.clicked.connect(lambda: self.retry_requested.emit([SKIP_EMPTY]))
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.hide)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (self.cancel_button, self.skip_button, self.use_button, self.use_prelabel_button,
                       self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        for widget in (intro, self.stage, self.bar, self.eta, self.notes, self.summary, self.table):
            layout.addWidget(widget)
        layout.addStretch(1)  # spare height goes below the text, never between its lines
        layout.addLayout(buttons)
        self.start_run()

    def start_run(self) -> None:
        self.version = None
        self.stage.setText("Starting the trainer…")
        self.bar.setRange(0, 0)  # busy until the first progress line
        self.bar.setVisible(True)
        for label in (self.eta, self.notes, self.summary):
            label.setText("")
            label.setVisible(False)  # an empty label would still take a line
        self.summary.setStyleSheet("")
        self.table.setRowCount(0)
        self.table.setVisible(False)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setVisible(True)
        self.close_button.setText("Hide")
        self.close_button.setToolTip("Hide this window; the fine-tune goes on (its progress stays in the status bar)")
        for button in (self.use_button, self.use_prelabel_button, self.skip_button):
            button.setVisible(False)
        self._fit()

    def set_progress(self, progress: FinetuneProgress) -> None:
        self.stage.setText(progress.describe())
        self.bar.setRange(0, max(progress.total, 1))
        self.bar.setValue(min(progress.done, progress.total))
        self.eta.setText(eta_text(-1 if progress.eta_s is None else progress.eta_s))
        self.eta.setVisible(bool(self.eta.text()))

    def add_note(self, message: str) -> None:
        self.notes.setText("\n".join(filter(None, [self.notes.text(), message])))
        self.notes.setVisible(bool(self.notes.text()))
        self._fit()

    def set_stopping(self, training_started: bool = True) -> None:
        self.cancel_button.setEnabled(False)
        self.eta.setText("")  # the time left of a run that stops means nothing
        self.eta.setVisible(False)
        self.bar.setRange(0, 0)
        self.stage.setText("Stopping… (the trainer saves its run, so the next Improve model resumes it)"
                           if training_started else "Stopping…")

    def show_refusal(self, text: str, offer_skip: bool = False) -> None:
        """The app knew (or the trainer said) why it cannot improve the model: say it in the app's
        words, with the way forward."""
        self.show_outcome(FinetuneOutcome("failed", text))
        self.skip_button.setVisible(offer_skip)
        self._fit()

    def show_outcome(self, outcome: FinetuneOutcome) -> None:
        """The end: the measurement and the switch offer, or what happened instead (never a traceback;
        the trainer's last lines are in the tooltip for whoever wants them)."""
        self.cancel_button.setVisible(False)
        self.bar.setVisible(False)
        self.eta.setText("")
        self.eta.setVisible(False)
        self.summary.setVisible(True)
        self.close_button.setText("Close")
        self.close_button.setToolTip("")
        self.stage.setText(outcome.title)
        self.summary.setToolTip(outcome.log[-4000:] if outcome.status == "crashed" else "")
        if outcome.status != "done":
            text, offer_skip = refusal_text(outcome.refusal) if outcome.refusal else (None, False)
            self.summary.setText(text or outcome.message)
            self.summary.setStyleSheet("color: #a33;" if outcome.status in ("failed", "crashed") else "")
            self.skip_button.setVisible(offer_skip)
            self._fit()
            return
        result = outcome.result or {}
        self.version = outcome.version
        held = result.get("held_out_images") or []
        train = result.get("train_images")
        rule = str(result.get("alpha_rule", "")).replace(  # versions written before the rule was in words
            "decided_accuracy", "share of person-decided pixels pre-labelled right")
        trained_on = "?" if train is None else _count(int(train), "verified image")
        self.summary.setText(
            f"{self.version}: trained on {trained_on} for {result.get('iterations', '?')} steps, measured on "
            f"{_count(len(held), 'held-out image')}" + (f" ({', '.join(held)})" if 0 < len(held) <= 5 else "")
            + f". Blend factor α = {result.get('alpha', '?')} (0 keeps the model in use, 1 is fully fine-tuned"
            + (f"; {rule}" if rule else "") + "). Switching is one click, and so is rolling back "
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
        self._fit()

    def _fit(self) -> None:
        """As tall as the text and the table need (no scrolling, no gaps), within the screen."""
        self.table.resizeRowsToContents()
        self.table.updateGeometry()
        layout = self.layout()
        layout.invalidate()
        layout.activate()
        width = max(self.width(), self.sizeHint().width())
        height = layout.totalHeightForWidth(width) if layout.hasHeightForWidth() else self.sizeHint().height()
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is not None:
            height = min(height, int(screen.height() * 0.9))
        self.resize(width, max(height, layout.totalMinimumSize().height()))

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

    def start(self, extra: list[str] | None = None) -> None:
        """Improve model: check, save, start the trainer (``extra``: more trainer arguments, e.g.
        ``--skip-empty-classes`` from a refusal's button)."""
        w = self.window
        if not w.has_project():
            return
        if self.running:  # one at a time: show the one that runs
            self._show_dialog()
            return
        w.save()  # the trainer reads the files: the latest verified masks must be in them
        project = w.project
        refused = precheck(project, w.model_in_use)
        if refused is not None:  # known already: no trainer is started
            self._dialog().start_run()
            self._dialog().show_refusal(refused)
            self._show_dialog()
            return
        try:  # start from the model in use: the active version, else the trainer takes project.json's
            base = active_checkpoint(models_dir(project.data_dir))
        except ChimeraError as error:
            w.statusBar().showMessage(f"Model versions: {error}", 8000)
            return
        custom_dir = project.data_dir if project.data_dir != project.root / ".chimera" else None
        command = finetune_command(project.root, custom_dir, None if base is None else str(base), w.device,
                                   [*self.extra_args, *(extra or [])])
        self._data_dir = project.data_dir
        self._dialog().start_run()
        self._show_dialog()
        if self.client.start(command):
            w.status.set_finetune("Improving the model…")

    def cancel(self) -> None:
        if self.running:
            self._dialog().set_stopping(self.client.runner.training_started)
            self.client.cancel()
            self.window.status.set_finetune("Improve model: stopping…")

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
            self.dialog.retry_requested.connect(self.start)
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
        said = (refusal_text(outcome.refusal)[0] if outcome.refusal else None) or outcome.message
        if project is None or project.data_dir != self._data_dir:  # the user moved on meanwhile
            w.statusBar().showMessage(f"Improve model of {self._data_dir}: {outcome.title}. {said}", 8000)
            return
        self._dialog().show_outcome(outcome)
        self._show_dialog()
        w.statusBar().showMessage(f"Improve model: {outcome.title}. {said.splitlines()[0]}", 8000)

    def _switch(self, version: str, prelabel: bool) -> None:
        self.window.model_versions.switch(version, prelabel)
