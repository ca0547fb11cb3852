"""Choose the segmentation model, device and precision; download hub weights with progress.

Model downloads are where other tools leave users stuck, so this dialog says where the weights go
(the Hugging Face cache), whether they are already there, shows progress with a Cancel, and offers a
local file for offline machines. Offline (HF_HUB_OFFLINE=1, or the hub not answering within 1.5 s)
with weights not cached, it says so at once with the two ways out, and OK stays off: loading could
only wait for the hub client to give up. A checkpoint is called one only once its header reads.
``clip:`` models get a training-free method combo (NACLIP, the default, SCLIP, ClearCLIP, MaskCLIP). The download itself runs on a thread of the engine service
(through ``EngineClient``); this dialog only starts it and listens to its signals.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from chimera_app.service import downloads
from chimera_engine.errors import ChimeraError
from chimera_engine.model_names import BUNDLED as BUNDLED_NAMES
from chimera_engine.model_names import DEFAULT_METHOD, METHODS, ModelName, parse_model_name

__all__ = ["CLIP_EXAMPLES", "DEVICES", "METHOD_TEXT", "PRECISIONS", "ModelDialog", "offline_message"]

BUNDLED_TEXT = {"shapes-chimera": "Bundled shapes model, Chimera-Seg (offline demo)",
                "shapes-clip": "Bundled shapes model, dense CLIP (offline demo)"}
BUNDLED = tuple((name, BUNDLED_TEXT[name]) for name in sorted(BUNDLED_NAMES, key=list(BUNDLED_TEXT).index))
CLIP_EXAMPLES = ("ViT-B-16/openai", "ViT-L-14/openai", "ViT-B-16/laion2b_s34b_b88k")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
WEIGHT_FILTER = "Weights (*.safetensors *.pt *.pth *.bin);;All files (*)"
CHECKPOINT_FILTER = "Chimera checkpoints (*.safetensors);;All files (*)"
OK, INFO, ERROR = "ok", "info", "error"
STYLES = {OK: "color: #2e7d32;", INFO: "", ERROR: "color: #c62828;"}
MB = 1024 * 1024
METHOD_TEXT = {"naclip": "NACLIP (default)", "sclip": "SCLIP", "clearclip": "ClearCLIP", "maskclip": "MaskCLIP"}


def clip_field(model: ModelName) -> str:
    """What the CLIP field shows for a ``clip:`` model: ``<arch>/<weights>`` (the method has its
    own combo)."""
    return model.clip


def offline_message(model: str, reason: str, cache: Path) -> str:
    """The one message for weights that are not cached on a machine that cannot download them:
    why, and the two ways out."""
    return (f"{model} is not in the cache and cannot be downloaded: {reason}.\n"
            f"Two ways out: (1) copy a Hugging Face cache that holds it into {cache} (for example "
            f"after `chimera-label --download {model}` on a machine with internet), or (2) choose its "
            f"weights file with \u201cUse a local file\u2026\u201d. Cancel keeps the current model.")


def _open_file(parent: QWidget, title: str, filter_: str) -> str:
    return QFileDialog.getOpenFileName(parent, title, "", filter_)[0]


def _read_checkpoint(path: Path) -> str:
    """A one-line description of a Chimera checkpoint, read from its header only (ChimeraError
    when the file is not one)."""
    from chimera_engine.checkpoints import read_metadata  # here: it imports torch

    meta = read_metadata(path)
    clip = meta.get("clip") if isinstance(meta.get("clip"), dict) else {}
    arch = clip.get("arch") or meta.get("arch") or ""
    return f"Chimera checkpoint ({meta.get('kind', 'model')}{', ' + str(arch) if arch else ''})"


class ModelDialog(QDialog):
    """``client`` is an EngineClient (or any QObject with ``download(spec)``, ``cancel_download()``
    and the signals ``download_progress(int, int)``, ``download_finished(str)``, ``failed(str, str)``);
    None hides downloading. Read the choice with ``model_name()``, ``device()``, ``precision()``."""

    def __init__(self, client=None, current: str | None = None, device: str = "auto", precision: str = "auto",
                 parent: QWidget | None = None, *, cache_dir: Callable[[], Path] = downloads.cache_dir,
                 cached_file: Callable[[ModelName], Path | None] = downloads.cached_clip_weights,
                 open_file: Callable[[QWidget, str, str], str] = _open_file,
                 offline_reason: Callable[[], str | None] = downloads.offline_reason,
                 read_checkpoint: Callable[[Path], str] = _read_checkpoint) -> None:
        super().__init__(parent)
        self.setWindowTitle("Model")
        self.setMinimumWidth(640)  # long paths and the offline message wrap instead of squashing the form
        self.client = client
        self._cache_dir = cache_dir
        self._cached_file = cached_file
        self._offline_reason = offline_reason
        self._read_checkpoint = read_checkpoint
        self._checkpoint_status: tuple[str, tuple[str, str]] | None = None  # (path, status) read last
        self._open_file = open_file
        self._downloading: str | None = None  # the model name being downloaded
        self.downloaded_path: str | None = None

        self.choices = QButtonGroup(self)
        grid = QGridLayout()
        self.radios: dict[str, QRadioButton] = {}
        for row, (name, text) in enumerate(BUNDLED):
            self._add_radio(grid, row, name, text)
        self._add_radio(grid, 2, "clip", "CLIP from the Hugging Face hub:  clip:")
        self.clip_edit = QLineEdit(CLIP_EXAMPLES[0], self)
        self.clip_edit.setPlaceholderText("<architecture>/<pretrained tag>")
        self.clip_edit.setToolTip("Examples: " + ", ".join(CLIP_EXAMPLES)
                                  + "\nor <architecture>/<path to a weights file>")
        self.local_button = QPushButton("Use a local file…", self)
        grid.addWidget(self.clip_edit, 2, 1)
        grid.addWidget(self.local_button, 2, 2)
        self.examples = QLabel("Examples: " + " · ".join(CLIP_EXAMPLES), self)
        self.examples.setEnabled(False)
        grid.addWidget(self.examples, 3, 1, 1, 2)
        self.method_combo = QComboBox(self)
        for method in METHODS:
            self.method_combo.addItem(METHOD_TEXT.get(method, method), method)
        self.method_combo.setToolTip("How CLIP's last block is turned into a dense (per-pixel) predictor, "
                                     "without training.\nNACLIP is the default; the others are worth a try "
                                     "when its regions look wrong.")
        method_row = QHBoxLayout()
        method_row.addWidget(QLabel("Training-free method", self))
        method_row.addWidget(self.method_combo)
        method_row.addStretch(1)
        grid.addLayout(method_row, 4, 1, 1, 2)
        self._add_radio(grid, 5, "checkpoint", "Checkpoint file:")
        self.checkpoint_edit = QLineEdit(self)
        self.checkpoint_edit.setPlaceholderText("a .safetensors file written by chimera-train")
        self.checkpoint_button = QPushButton("Browse…", self)
        grid.addWidget(self.checkpoint_edit, 5, 1)
        grid.addWidget(self.checkpoint_button, 5, 2)
        grid.setColumnStretch(1, 1)

        self.cache_label = QLabel(f"Hugging Face cache: {cache_dir()}", self)
        self.cache_label.setWordWrap(True)
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton("Download", self)
        self.cancel_button = QPushButton("Cancel download", self)
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(True)
        download_row = QHBoxLayout()
        download_row.addWidget(self.progress, 1)
        download_row.addWidget(self.download_button)
        download_row.addWidget(self.cancel_button)

        self.device_combo = QComboBox(self)
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(device)
        self.precision_combo = QComboBox(self)
        self.precision_combo.addItems(PRECISIONS)
        self.precision_combo.setCurrentText(precision)
        self.precision_combo.setToolTip("auto: bf16 on GPUs and on CPUs where it measures faster")
        form = QFormLayout()
        form.addRow("Device", self.device_combo)
        form.addRow("Precision", self.precision_combo)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel, self)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.cache_label)
        layout.addWidget(self.status_label)
        layout.addLayout(download_row)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.choices.buttonToggled.connect(lambda *_: self._refresh())
        self.clip_edit.textChanged.connect(lambda _: self._choose("clip"))
        self.method_combo.currentIndexChanged.connect(lambda _: self._choose("clip"))
        self.checkpoint_edit.textChanged.connect(lambda _: self._choose("checkpoint"))
        self.local_button.clicked.connect(self.use_local_file)
        self.checkpoint_button.clicked.connect(self.browse_checkpoint)
        self.download_button.clicked.connect(self.start_download)
        self.cancel_button.clicked.connect(self.cancel_download)
        if client is not None:
            client.download_progress.connect(self._on_progress)
            client.download_finished.connect(self._on_finished)
            client.failed.connect(self._on_failed)
        self.set_model_name(current or BUNDLED[0][0])

    def _add_radio(self, grid: QGridLayout, row: int, key: str, text: str) -> None:
        radio = QRadioButton(text, self)
        self.radios[key] = radio
        self.choices.addButton(radio)
        grid.addWidget(radio, row, 0)

    def _choose(self, key: str) -> None:
        if not self.radios[key].isChecked():
            self.radios[key].setChecked(True)  # triggers _refresh
        else:
            self._refresh()

    # -- the choice -----------------------------------------------------------------------------
    def set_model_name(self, name: str) -> None:
        """Preselect ``name`` (as EngineClient.load_model takes it)."""
        try:
            model = parse_model_name(name)
        except ChimeraError:  # e.g. a checkpoint path that is gone: shown as such, with its status
            model = ModelName("checkpoint", path=name.strip())
        if model.kind == "clip":
            self.clip_edit.setText(clip_field(model))
            self.set_method(model.method or DEFAULT_METHOD)
            self._choose("clip")
        elif model.kind == "bundled" and model.path in self.radios and model.method is None:
            self._choose(model.path)
        else:  # a checkpoint, or a name the radios have no field for (chimera:..., shapes-clip+sclip)
            self.checkpoint_edit.setText(str(model))
            self._choose("checkpoint")

    def method(self) -> str:
        return self.method_combo.currentData()

    def set_method(self, method: str) -> None:
        self.method_combo.setCurrentIndex(max(0, self.method_combo.findData(method)))

    def choice(self) -> str:
        return next(key for key, radio in self.radios.items() if radio.isChecked())

    def model_name(self) -> str:
        """What to pass to ``EngineClient.load_model`` / ``chimera_engine.load_segmenter``."""
        key = self.choice()
        if key == "clip":
            text = self.clip_edit.text().strip()
            if "+" in text:  # a method typed into the field wins over the combo
                return "clip:" + text
            try:
                model = parse_model_name("clip:" + text)
            except ChimeraError:
                return "clip:" + text  # loading says what is wrong with it
            method = self.method()
            return f"clip:{model.clip}" + ("" if method == DEFAULT_METHOD else f"+{method}")
        if key == "checkpoint":
            return self.checkpoint_edit.text().strip()
        return key

    def device(self) -> str:
        return self.device_combo.currentText()

    def precision(self) -> str:
        return self.precision_combo.currentText()

    def use_local_file(self) -> None:
        """CLIP weights from a file (offline machines): keeps the architecture typed before."""
        path = self._open_file(self, "CLIP weights file", WEIGHT_FILTER)
        if path:
            try:
                current = parse_model_name("clip:" + self.clip_edit.text().strip())
            except ChimeraError:
                current = parse_model_name("clip:" + CLIP_EXAMPLES[0])
            local = ModelName("clip", arch=current.arch, weights=str(Path(path).resolve()), method=current.method)
            self.clip_edit.setText(clip_field(local))

    def browse_checkpoint(self) -> None:
        path = self._open_file(self, "Chimera checkpoint", CHECKPOINT_FILTER)
        if path:
            self.checkpoint_edit.setText(str(Path(path).resolve()))

    def _refresh(self) -> None:
        """Status line and buttons for the current choice: cached? downloadable? file present?"""
        key = self.choice()
        if key == "clip":
            message, level = self._clip_status(self.clip_edit.text().strip())
        elif key == "checkpoint":
            message, level = self._checkpoint_state(self.checkpoint_edit.text().strip())
        else:
            message, level = "bundled with Chimera: works offline", OK
        self._set_status(message, level)
        busy = self._downloading is not None
        self.download_button.setVisible(self.client is not None)
        self.download_button.setEnabled(level == INFO and not busy)
        self.cancel_button.setVisible(busy)
        self.progress.setVisible(busy)
        # Not-yet-downloaded weights may still be chosen: loading fetches them (or, offline, says
        # how to get them). An impossible choice, or one mid-download, may not.
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(level != ERROR and not busy)

    def _checkpoint_state(self, text: str) -> tuple[str, str]:
        """(message, level) of a checkpoint path: its header is read (and remembered per path)
        before it is called a checkpoint; a file that merely exists is not one."""
        if not text:
            return "choose a checkpoint file", ERROR
        path = Path(text).expanduser()
        if not path.is_file():
            return f"file not found: {path}", ERROR
        if self._checkpoint_status is None or self._checkpoint_status[0] != str(path):
            try:
                status = (f"{self._read_checkpoint(path)}: {path}", OK)
            except ChimeraError as exc:
                status = (f"not a Chimera checkpoint: {exc}", ERROR)
            except (OSError, ValueError) as exc:
                status = (f"cannot read {path}: {exc}", ERROR)
            self._checkpoint_status = (str(path), status)
        return self._checkpoint_status[1]

    def _clip_status(self, spec: str) -> tuple[str, str]:
        """(message, level) of ``<arch>/<tag|random|file>[+method]``; level INFO means "downloadable"."""
        try:
            model = parse_model_name("clip:" + spec)
        except ChimeraError:
            return "type <architecture>/<tag>, e.g. " + CLIP_EXAMPLES[0], ERROR
        if model.weights == "random":
            return "random weights (for tests; nothing to download)", OK
        if model.is_local_file:
            path = Path(model.weights).expanduser()
            return (f"local file {path}", OK) if path.is_file() else (f"file not found: {path}", ERROR)
        try:
            hit = self._cached_file(model)
        except ChimeraError as exc:
            return str(exc), ERROR
        if hit is not None:
            return f"cached: {hit}", OK
        reason = self._offline_reason()
        if reason:  # OK would only wait for the hub client to give up: say so now, and the ways out
            return offline_message(f"clip:{model.clip}", reason, self._cache_dir()), ERROR
        return "not downloaded yet: Download fetches it into the cache (or use a local file)", INFO

    def _set_status(self, message: str, level: str) -> None:
        self.status_label.setText(message)
        self.status_label.setStyleSheet(STYLES[level])

    # -- downloading ----------------------------------------------------------------------------
    def is_downloading(self) -> bool:
        return self._downloading is not None

    def start_download(self) -> None:
        if self.client is None or self._downloading is not None or self.choice() != "clip":
            return
        self._downloading = self.model_name()
        self.progress.setRange(0, 0)  # busy until the size is known
        self._refresh()
        self._set_status(f"downloading {self._downloading} …", INFO)
        self.client.download(self._downloading)

    def cancel_download(self) -> None:
        if self._downloading is None:
            return
        self.client.cancel_download()
        name, self._downloading = self._downloading, None  # later progress of it is ignored
        self._refresh()
        self._set_status(f"download of {name} cancelled", INFO)

    def _on_progress(self, done: int, total: int) -> None:
        if self._downloading is None:
            return
        if total > 0:
            # Progress bars hold ints: count in KiB so multi-GB files do not overflow.
            self.progress.setRange(0, max(1, total // 1024))
            self.progress.setValue(min(done, total) // 1024)
            self.progress.setFormat(f"{done / MB:.1f} / {total / MB:.1f} MB")
        else:
            self.progress.setRange(0, 0)
            self.progress.setFormat(f"{done / MB:.1f} MB")

    def _on_finished(self, path) -> None:
        if self._downloading is None:
            return
        self._downloading, self.downloaded_path = None, str(path)
        self._refresh()
        self._set_status(f"downloaded to {path}", OK)

    def _on_failed(self, kind: str, message: str) -> None:
        # The client's ``failed`` carries every kind of error; while a download runs, the ones
        # about images are not about it.
        if self._downloading is None or kind == "image":
            return
        self._downloading = None
        self._refresh()
        self._set_status(f"download failed: {message}", ERROR)

    def reject(self) -> None:
        self.cancel_download()  # closing the dialog must not leave a download running unseen
        super().reject()

