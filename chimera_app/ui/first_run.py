"""A short guide shown over the first project a user opens: what the colours mean and the six
steps of the work. Dismissed once ("Got it"), it stays dismissed (a marker file in the config
folder); Help → Getting started shows it again."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

__all__ = ["GUIDE_HTML", "FirstRunGuide", "guide_dismissed", "mark_guide_dismissed"]

GUIDE_HTML = """
<h3>Getting started</h3>
<ol>
<li><b>The coloured overlay</b> is the model's guess: one colour per class, in the class list on
the left. Press <b>M</b> to hatch what the model decided and <b>C</b> for where it is unsure.</li>
<li><b>Type a class</b> in the field above the class list (Enter adds it): the overlay updates
as you type. <b>1</b>–<b>9</b> pick the class to paint with.</li>
<li><b>Fix</b> what is wrong with <b>B</b> brush, <b>E</b> eraser, <b>G</b> fill
(<b>[</b> <b>]</b> brush size; Ctrl+click accepts one predicted region).</li>
<li>Press <b>V</b> when the image is right: it becomes <b>Verified</b> (a green tick in the
file list). Edited but not yet verified images show a half circle: in progress.</li>
<li><b>D</b> goes to the next image, <b>A</b> back. Everything is saved as you go.</li>
<li><b>Export</b> with Ctrl+E (COCO JSON or PNG masks); F1 lists every key.</li>
</ol>
"""


def _marker() -> Path:
    override = os.environ.get("CHIMERA_CONFIG_DIR")
    if override:
        return Path(override) / "guide-dismissed"
    import platformdirs

    return platformdirs.user_config_path("chimera") / "guide-dismissed"


def guide_dismissed() -> bool:
    return _marker().exists()


def mark_guide_dismissed() -> None:
    try:
        _marker().parent.mkdir(parents=True, exist_ok=True)
        _marker().touch()
    except OSError:
        pass  # then it shows again next time: harmless


class FirstRunGuide(QDialog):
    """Non-modal, so the window stays usable while it is open."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Getting started")
        self.setModal(False)
        text = QLabel(GUIDE_HTML)
        text.setWordWrap(True)
        buttons = QDialogButtonBox(self)
        self.ok_button = buttons.addButton("Got it", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(buttons)
        self.setMinimumWidth(480)
        self.adjustSize()

    def accept(self) -> None:
        mark_guide_dismissed()
        super().accept()
