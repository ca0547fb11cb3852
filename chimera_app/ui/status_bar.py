"""The window's status bar: what is under the cursor, the class being typed, the image's state,
pre-label progress with an estimate of the time left, a running Improve model (click: its window),
zoom, mask opacity and the model in use.

Every piece is a permanent widget (transient messages keep the left side); the window only calls
the setters. The model label always names the model that predicts *now*: a model that failed to
load does not blank it.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QSlider, QStatusBar, QWidget

__all__ = ["StatusBar", "StatusPanel", "elide_words", "eta_text"]

ELLIPSIS = "…"
MESSAGE_GAP = 16  # pixels between a transient message and the permanent widgets on its right


def elide_words(text: str, fits) -> str:
    """``text`` if ``fits(text)``, else its longest prefix ending at a word that fits with "…"
    after it (a single word too long for the space is cut inside it, as nothing else fits)."""
    if fits(text):
        return text
    words = text.split(" ")
    for n in range(len(words) - 1, 0, -1):
        candidate = " ".join(words[:n]).rstrip(" ,;:·—-") + ELLIPSIS
        if fits(candidate):
            return candidate
    for n in range(len(text) - 1, 0, -1):
        if fits(text[:n] + ELLIPSIS):
            return text[:n] + ELLIPSIS
    return ELLIPSIS


class StatusBar(QStatusBar):
    """A status bar whose transient messages end at a word with "…" where they would run under
    the permanent widgets (the cursor readout, the model), the whole message in the tooltip.
    ``currentMessage()`` is the message as given; it is elided again when the bar is resized."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._full, self._shown = "", ""
        self._expiry = QTimer(self, singleShot=True)
        self._expiry.timeout.connect(self.clearMessage)
        self.messageChanged.connect(self._changed)

    def showMessage(self, text: str, timeout: int = 0) -> None:  # noqa: N802 (Qt's name)
        self._full = text
        self._expiry.stop()
        if timeout > 0:
            self._expiry.start(timeout)
        self._show_fitted()

    def clearMessage(self) -> None:  # noqa: N802
        self._expiry.stop()
        self._full = self._shown = ""
        super().clearMessage()

    def currentMessage(self) -> str:  # noqa: N802
        shown = super().currentMessage()
        return self._full if shown and shown == self._shown else shown

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._full and super().currentMessage() == self._shown:
            self._show_fitted()

    def message_width(self) -> int:
        """Pixels a transient message may take: up to the leftmost visible permanent widget."""
        self.layout().activate()
        lefts = [w.geometry().left() for w in self.findChildren(QWidget, options=Qt.FindDirectChildrenOnly)
                 if w.isVisible() and w.geometry().left() > 0]
        right = min(lefts) if lefts else self.width()
        return max(0, right - MESSAGE_GAP - 8)  # 8: the message's own left margin

    def _show_fitted(self) -> None:
        width = self.message_width()
        shown = elide_words(self._full, lambda t: self.fontMetrics().horizontalAdvance(t) <= width)
        self.setToolTip(self._full if shown != self._full else "")
        if shown != super().currentMessage() or shown != self._shown:
            self._shown = shown
            super().showMessage(shown, 0)  # the expiry is ours: a re-fit must not restart it

    def _changed(self, text: str) -> None:
        if text != self._shown:  # shown by Qt itself (a menu's status tip) or cleared
            self._expiry.stop()
            self._full = self._shown = text
            self.setToolTip("")


def eta_text(seconds: float) -> str:
    """'about 3 min left', '40 s left'; '' when not known yet (negative)."""
    if seconds < 0:
        return ""
    if seconds < 60:
        return f"{max(1, round(seconds))} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


class StatusPanel:
    """Owns the permanent widgets of ``bar``."""

    def __init__(self, bar: QStatusBar) -> None:
        self.bar = bar
        self.cursor_label = QLabel("")  # class, confidence and who decided the pixel under the pointer
        self.cursor_label.setToolTip("Under the cursor: class, the model's confidence, who decided it, pixel")
        self.draft_swatch = QLabel("")  # the colour a class being typed will get
        self.draft_swatch.setVisible(False)
        self.state_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)
        self.finetune = QPushButton("")  # a running Improve model; a click shows its window
        self.finetune.setFlat(True)
        self.finetune.setToolTip("Improve model is running: click to see its progress or cancel it")
        self.finetune.setVisible(False)
        self.zoom_label = QLabel("")
        self.opacity = QSlider(Qt.Horizontal, minimum=0, maximum=100, value=50, maximumWidth=120)
        self.opacity.setToolTip("Opacity of the class masks over the image")
        self.model_label = QLabel("no model")
        self.model_label.setToolTip("The model that predicts now, and on which device")
        self.cancel_load = QPushButton("Cancel")  # while hub weights download for a model being loaded
        self.cancel_load.setToolTip("Stop downloading the new model's weights; the current model stays")
        self.cancel_load.setVisible(False)
        for widget in (self.cursor_label, self.draft_swatch, self.state_label, self.progress, self.finetune,
                       self.zoom_label, QLabel("opacity"), self.opacity, self.model_label, self.cancel_load):
            bar.addPermanentWidget(widget)

    # -- cursor and draft -----------------------------------------------------------------------
    def set_cursor(self, x: float, y: float, what: str) -> None:
        pixel = f"x {int(x)}  y {int(y)}"
        self.cursor_label.setText(f"{what}   {pixel}" if what else pixel)

    def clear_cursor(self) -> None:
        """Nothing under the pointer (it left the image)."""
        self.cursor_label.setText("")

    def set_draft(self, name: str, color: tuple[int, int, int] | None) -> None:
        """Show the swatch of the class being typed ("" / None hides it)."""
        if not name or color is None:
            self.draft_swatch.setVisible(False)
            return
        r, g, b = color
        self.draft_swatch.setText(f"<span style='background-color: rgb({r},{g},{b});'>"
                                  f"&nbsp;&nbsp;&nbsp;&nbsp;</span> new: {name}")
        self.draft_swatch.setToolTip(f"'{name}' will be painted in this colour once added (Enter)")
        self.draft_swatch.setVisible(True)

    # -- progress -------------------------------------------------------------------------------
    def set_progress(self, done: int, total: int, seconds_left: float) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, total))
        eta = eta_text(seconds_left)
        self.progress.setFormat(f"Pre-label {done} / {total}" + (f" · {eta}" if eta else ""))
        self.progress.setVisible(True)

    def hide_progress(self) -> None:
        self.progress.setVisible(False)

    def set_finetune(self, text: str | None) -> None:
        """A running fine-tune's progress line; None hides it."""
        self.finetune.setText(text or "")
        self.finetune.setVisible(bool(text))

    # -- model ----------------------------------------------------------------------------------
    def set_model(self, text: str, tooltip: str = "", cancellable: bool = False) -> None:
        """``cancellable``: a load that may be downloading, offered a Cancel beside it."""
        self.cancel_load.setVisible(cancellable)
        self.model_label.setText(text)
        self.model_label.setToolTip(tooltip or "The model that predicts now, and on which device")
