"""Wires one open project to the widgets and the engine: image switching and prefetch, live
predictions while the user types, tools → edits → repaint, undo/redo, folder pre-labelling.

The document lives in ``Session``, pixels in ``Canvas``, the model behind the ``EngineClient``.
What the controller keeps is view state: the decoded image on screen, the draft class being
previewed, its own outstanding requests, the uncertain regions of N, and what a cancelled folder
pre-label left to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from chimera_app.editing import tools
from chimera_app.editing.uncertainty import next_region, uncertain_regions
from chimera_app.project.document import ImageState, Patch, Provenance, Region
from chimera_app.project.store import SaveError
from chimera_app.service.prelabel import store_prediction
from chimera_app.service.requests import PrelabelResult, PrelabelSummary, Segmented
from chimera_app.session import Session
from chimera_engine import ChimeraError
from chimera_app.project.classes import default_color

PREFETCH_AHEAD = 2  # images decoded and encoded ahead of D / A
FULL_RES_DELAY_MS = 250  # after typing settles, re-score at full resolution


class AnnotationController(QObject):
    """Signals for the window's status line; everything else is direct calls on widgets."""

    message = Signal(str)  # transient status text
    failed = Signal(str, str)  # kind, message: shown like an engine failure
    state_changed = Signal(str, str)  # rel, ImageState value
    prediction_shown = Signal(str, float)  # rel, seconds from request to repaint
    prelabel_running = Signal(bool)  # a folder pre-label started (True) or ended (False)
    prelabel_progress = Signal(int, int, float)  # done, total, seconds left (-1: not known yet)
    view_changed = Signal()  # the labels or provenance on screen changed (the cursor readout is stale)

    def __init__(self, session: Session, client, canvas, class_panel, file_list, parent=None):
        super().__init__(parent)
        self.session, self.client, self.canvas = session, client, canvas
        self.class_panel, self.file_list = class_panel, file_list
        self.project = session.project
        self.rgb: np.ndarray | None = None  # the current image, once decoded
        self.draft = ""  # a valid new class being typed (the class panel checks it), previewed
        self._requests: dict[int, tuple[str, bool, float]] = {}  # generation → (rel, is draft, t0)
        self._regions: list[Region] = []
        self._region_index: int | None = None
        self._prelabel_remaining: list[str] = []
        self._prelabel_started: tuple[float, int] | None = None  # (time, images done) at the start
        self._full_res = QTimer(self, singleShot=True, interval=FULL_RES_DELAY_MS)
        self._full_res.timeout.connect(self._settled)

        self._connections = [
            (client.image_ready, self._on_image_ready),
            (client.image_failed, self._on_image_failed),
            (client.segmented, self._on_segmented),
            (client.prelabel_progress, self._on_prelabel_progress),
            (client.prelabel_result, self._on_prelabel_result),
            (client.prelabel_failed, self.file_list.set_failed),  # marked in the list, the run goes on
            (client.prelabel_finished, self._on_prelabel_finished),
            (canvas.stroke_finished, self._on_stroke),
            (canvas.fill_requested, self._on_fill),
            (canvas.polygon_finished, self._on_polygon),
            (canvas.rectangle_finished, self._on_rectangle),
            (canvas.region_clicked, self._on_region_clicked),
            (class_panel.draft_changed, self._on_draft),
            (class_panel.class_added, self._on_classes_changed),
            (class_panel.class_renamed, self._on_classes_changed),
            (class_panel.class_removed, self._on_class_removed),
            (class_panel.classes_reordered, self._on_classes_reordered),
            (class_panel.visibility_changed, self._on_looks_changed),
            (class_panel.color_changed, self._on_looks_changed),
            (class_panel.current_changed, self._on_current_class),
            (file_list.current_changed, self.show_image),
        ]
        for signal, slot in self._connections:
            signal.connect(slot)
        self._on_current_class(class_panel.current_class_id() or 0)

    def detach(self) -> None:
        """Stop listening (the project is closing): late engine results must not touch it."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self._connections = []
        self._full_res.stop()

    # -- images ---------------------------------------------------------------------------------
    def show_image(self, rel: str) -> None:
        if not rel or rel == self.session.rel and self.rgb is not None:
            return
        self.rgb, self._regions, self._region_index = None, [], None
        try:
            self.session.open_image(rel)
        except ChimeraError as error:  # damaged saved labels: nothing is written
            self._show_failure(rel, str(error))
            return
        self.canvas.set_notice("")
        self.client.show_image(rel, self.project.root / rel)
        self.state_changed.emit(rel, self.session.doc.state.value)
        self.view_changed.emit()  # what was under the cursor belonged to the previous image

    def _on_image_failed(self, rel: str, reason: str) -> None:
        """An image the engine could not decode: marked in the list, said on the canvas, and
        never a dialog (the user may be typing, and the same file would ask again on every visit)."""
        self.file_list.set_failed(rel, reason)
        if rel == self.session.rel:
            self._show_failure(rel, reason)

    def _show_failure(self, rel: str, reason: str) -> None:
        """The canvas no longer shows the previous image as if it were ``rel``: it shows why."""
        self.rgb = None
        self.file_list.set_failed(rel, reason)
        self.canvas.clear(f"{rel} cannot be opened:\n{reason}\n\nD / A go on to the next image.")
        self.message.emit(f"{rel}: {reason}")
        self.view_changed.emit()

    def _on_image_ready(self, rel: str, rgb: np.ndarray) -> None:
        if rel != self.session.rel:
            return  # a prefetched image, or one the user already left
        if self.file_list.failed_reason(rel) is not None:
            self.file_list.set_failed(rel, None)  # readable now (e.g. the file was replaced)
        self.rgb = rgb
        self.canvas.set_image(rgb)
        doc = self.session.doc
        if doc.labels.shape != rgb.shape[:2]:
            self.message.emit(f"{rel}: saved labels are {doc.labels.shape[1]}x{doc.labels.shape[0]}, "
                              f"the image is {rgb.shape[1]}x{rgb.shape[0]}; labels not shown")
            return
        self._repaint()
        self.canvas.set_confidence(doc.confidence)
        self.request_prediction()
        self._prefetch_next()

    def _prefetch_next(self) -> None:
        upcoming = self.file_list.upcoming(PREFETCH_AHEAD) if hasattr(self.file_list, "upcoming") else []
        if upcoming:
            self.client.prefetch([(rel, self.project.root / rel) for rel in upcoming])

    # -- predictions ----------------------------------------------------------------------------
    def request_prediction(self, draft: str = "", preview: bool = False) -> None:
        """Ask for a prediction of the current image with the project's classes (+ a draft class
        being typed: shown, never written to the document). ``preview``: at display resolution,
        shown and never stored."""
        rel = self.session.rel
        if rel is None or self.rgb is None:
            return
        classes = list(self.project.classes)
        prompts, ids = [c.prompt for c in classes], [c.id for c in classes]
        if draft:
            prompts.append(draft)
            ids.append(self.project.classes.next_id)
        if not prompts:
            self._repaint()
            return
        generation = self.client.segment(rel, prompts, class_ids=ids, preview=preview,
                                         display_size=self._display_size() if preview else None)
        self._requests = {g: r for g, r in self._requests.items() if r[0] != rel}  # results only for the newest
        self._requests[generation] = (rel, bool(draft), time.perf_counter())

    def _display_size(self) -> tuple[int, int]:
        """Score about at screen resolution while typing (a preview: one prompt template for the
        new name, too); the full-resolution, full-ensemble pass follows when typing pauses."""
        h, w = self.rgb.shape[:2]
        view = self.canvas.viewport().size()
        scale = min(1.0, max(view.width() / w, view.height() / h))
        return max(1, round(h * scale)), max(1, round(w * scale))

    def _on_segmented(self, result: Segmented) -> None:
        rel, labels = result.key, result.labels
        request = self._requests.pop(result.generation, None)
        if request is None or rel != self.session.rel:
            return  # superseded while it ran, or the user moved on
        _, is_draft, started = request
        doc = self.session.doc
        if result.preview or is_draft:  # shown, never stored
            if labels.shape != doc.labels.shape:  # scored at display resolution
                size = (doc.labels.shape[1], doc.labels.shape[0])
                labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
            self.canvas.set_labels(self.session.preview(labels), self._colors(), self._hidden())
            self.view_changed.emit()
        else:
            self.session.set_prediction(labels, result.confidence)
            self._repaint()
            self.canvas.set_confidence(self.session.doc.confidence)
            self._regions, self._region_index = [], None
            self.state_changed.emit(rel, doc.state.value)
        self.prediction_shown.emit(rel, time.perf_counter() - started)

    def _on_draft(self, text: str) -> None:
        """``text``: a draft the class panel found valid as a new class, or "" (none, or invalid:
        the panel shows why, inline)."""
        self.draft = text
        self.request_prediction(self.draft, preview=True)
        self._full_res.start()

    def _settled(self) -> None:
        """Typing paused: the same request at full resolution and with the full prompt ensemble
        (still a draft: shown, not stored)."""
        self.request_prediction(self.draft)

    def _on_classes_changed(self, *_) -> None:
        self._save_meta()
        self.draft = ""
        self.request_prediction()

    def _save_meta(self) -> None:
        """Write project.json (classes, states); a disk that refuses it is reported, and the
        classes stay in memory to be written with the next save."""
        try:
            self.project.save_meta()
        except ChimeraError as error:
            self.failed.emit("disk", str(error))

    def _on_fill(self, x: float, y: float) -> None:
        """Bucket fill: the connected pixels of the clicked class *and* decider (model or person),
        so it never spreads through pixels a person drew; filling the model's region with its
        own class makes it the person's."""
        if self.rgb is not None:
            doc = self.session.doc
            self._edit(tools.flood(doc.labels, int(x), int(y), doc.provenance))

    def _on_classes_reordered(self) -> None:
        self._save_meta()

    def _on_looks_changed(self, *_) -> None:
        self._save_meta()
        self._repaint()

    def _on_prelabel_progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == 0 or self._prelabel_started is None:
            self._prelabel_started = (now, done)
            self.prelabel_progress.emit(done, total, -1.0)
            return
        t0, done0 = self._prelabel_started
        rate = (done - done0) / max(now - t0, 1e-6)
        self.prelabel_progress.emit(done, total, (total - done) / rate if rate > 0 else -1.0)

    def _on_class_removed(self, class_id: int) -> None:
        self.session.forget_history()  # patches may hold the deleted id
        if self.session.doc is None:
            return self._on_classes_changed()
        self.session.doc.drop_classes(set(self.project.classes.ids()))
        self.session.save()
        self._on_classes_changed()
        self._repaint()

    def _on_current_class(self, class_id: int) -> None:
        self.session.active_class = class_id if class_id > 0 else None
        if class_id > 0:
            self.canvas.brush_color = self.project.classes.by_id(class_id).color

    # -- drawing --------------------------------------------------------------------------------
    def _colors(self) -> dict[int, tuple[int, int, int]]:
        colors = {c.id: c.color for c in self.project.classes}
        colors[self.project.classes.next_id] = default_color(self.project.classes.next_id)
        return colors

    def _hidden(self) -> set[int]:
        return {c.id for c in self.project.classes if c.hidden}

    def _repaint(self, patch: Patch | None = None) -> None:
        if self.rgb is None:
            return
        if patch is None:
            self.canvas.set_labels(self.session.doc.labels, self._colors(), self._hidden())
            self.canvas.set_provenance(self.session.doc.provenance)
        elif patch.labels_after.size:
            self.canvas.update_labels(patch.bbox)
        self.view_changed.emit()

    # -- tools ----------------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        return self.session.doc.labels.shape

    def _edit(self, region: Region, erase: bool = False) -> None:
        if self.rgb is None or region.is_empty:
            return
        if not erase and self.session.active_class is None:
            self.message.emit("Pick a class first (type a name, or press 1-9)")
            return
        self._after_edit(lambda: self.session.paint(region, erase))

    def _after_edit(self, edit: Callable[[], Patch | None]) -> Patch | None:
        """Run a Session edit and show it; one the disk refused was taken back: say so."""
        try:
            patch = edit()
        except SaveError as error:
            self.failed.emit("disk", str(error))
            self._repaint()
            return None
        if patch is not None:
            self._repaint(patch)
            self.state_changed.emit(self.session.rel, self.session.doc.state.value)
        return patch

    def _on_stroke(self, points: list, radius: float, erase: bool) -> None:
        self._edit(tools.brush(self._shape(), points, radius), erase)

    def _on_polygon(self, points: list, subtract: bool) -> None:
        region = tools.polygon(self._shape(), points)
        if subtract and self.rgb is not None and not region.is_empty:
            self._after_edit(lambda: self.session.subtract(region))
        else:
            self._edit(region)

    def _on_rectangle(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self._edit(tools.rectangle(self._shape(), (x0, y0), (x1, y1)))

    def _on_region_clicked(self, x: float, y: float) -> None:
        """Accept the prediction in the connected predicted region under the click."""
        doc = self.session.doc
        if self.rgb is None or doc.prediction is None:
            return
        region = tools.flood(doc.prediction, int(x), int(y))
        patch = self._after_edit(lambda: self.session.accept(region))
        self._say_accepted(patch, "in the clicked region")

    def set_min_confidence(self, value: float) -> None:
        """The unlabeled rule: pixels the model is less sure of than ``value`` stay unlabeled."""
        self.client.set_min_confidence(value)
        self.request_prediction()

    def accept_all(self) -> None:
        if self.rgb is not None:
            patch = self._after_edit(self.session.accept)
            if patch is not None:
                self.message.emit(f"Accepted {self._accepted_pixels(patch):,} model pixels; "
                                  f"{self.session.rel} is verified")
            else:
                self.message.emit("Nothing to accept: the image is verified and no model pixel is left")

    def accept_class(self) -> None:
        if self.rgb is None:
            return
        if self.session.active_class is None:
            self.message.emit("Pick a class first (type a name, or press 1-9)")
            return
        name = self.project.classes.by_id(self.session.active_class).name
        patch = self._after_edit(lambda: self.session.accept(class_id=self.session.active_class))
        self._say_accepted(patch, f"of '{name}'")

    def _say_accepted(self, patch: Patch | None, where: str) -> None:
        n = 0 if patch is None else self._accepted_pixels(patch)
        self.message.emit(f"Accepted {n:,} model pixels {where}" if n
                          else f"No model pixels {where} to accept (a person decided them already)")

    @staticmethod
    def _accepted_pixels(patch: Patch) -> int:
        return int(((patch.prov_before == Provenance.MODEL) & (patch.prov_after == Provenance.HUMAN)).sum())

    def toggle_verified(self) -> None:
        if self.rgb is None:
            return
        verify = self.session.doc.state != ImageState.VERIFIED
        patch = self._after_edit(lambda: self.session.mark_verified(verify))
        if patch is None:
            return
        if verify:
            n = self._accepted_pixels(patch)
            accepted = f"; its {n:,} model pixels count as yours" if n else ""
            self.message.emit(f"{self.session.rel} verified{accepted} (D: next image)")
        else:
            self.message.emit(f"{self.session.rel} is no longer verified")

    def describe_pixel(self, x: float, y: float) -> str:
        """The status bar's readout of image pixel (x, y): class, the model's confidence there,
        and who decided it; "" outside the image."""
        doc = self.session.doc
        if self.rgb is None or doc is None:
            return ""
        h, w = doc.labels.shape
        col, row = int(x), int(y)
        if not (0 <= row < h and 0 <= col < w):
            return ""
        class_id = int(self.canvas.labels[row, col]) if self.canvas.labels is not None else int(doc.labels[row, col])
        if class_id == 0:
            text = "unlabeled"
        elif class_id in self.project.classes.ids():
            text = self.project.classes.by_id(class_id).name
        else:
            text = self.draft or f"class {class_id}"
        who = {Provenance.HUMAN: "person", Provenance.MODEL: "model"}.get(int(doc.provenance[row, col]))
        if doc.confidence is not None and who != "person":
            text += f" {doc.confidence[row, col]:.0%}"
        return f"{text} · {who}" if who else text

    def undo(self) -> None:
        self._history(self.session.undo)

    def redo(self) -> None:
        self._history(self.session.redo)

    def _history(self, step: Callable[[], Patch | None]) -> None:
        if self.rgb is None:
            return
        undoing = step == self.session.undo
        stack = self.session.undo_stack
        if not (stack.can_undo if undoing else stack.can_redo):
            self.message.emit("Nothing to undo" if undoing else "Nothing to redo")
            return
        self._after_edit(step)

    def next_uncertain(self) -> None:
        """N: frame the next most uncertain region the model left (human pixels excluded)."""
        doc = self.session.doc
        if self.rgb is None or doc.confidence is None:
            self.message.emit("No prediction yet")
            return
        if not self._regions:
            self._regions, self._region_index = uncertain_regions(doc.confidence, doc.provenance), None
        index = next_region(self._regions, self._region_index)
        if index is None:
            self.message.emit("No uncertain regions left")
            return
        self._region_index = index
        y0, x0, y1, x1 = self._regions[index].bbox
        self.canvas.frame_region((y0, x0, y1, x1))
        self.message.emit(f"Uncertain region {index + 1} of {len(self._regions)}")

    # -- folder pre-label -----------------------------------------------------------------------
    def prelabel(self, resume: bool = False) -> None:
        """Pre-label every image not human-verified (resume: only those a cancelled run left)."""
        classes = list(self.project.classes)
        if not classes:
            self.message.emit("Add classes first")
            return
        if not resume or not self._prelabel_remaining:
            self._prelabel_remaining = [rel for rel in self.project.images()
                                        if self.project.state(rel) != ImageState.VERIFIED]
        items = [(rel, self.project.root / rel) for rel in self._prelabel_remaining]
        if self.client.prelabel(items, [c.prompt for c in classes], class_ids=[c.id for c in classes]):
            self._prelabel_started = None
            self.prelabel_running.emit(True)
            self.prelabel_progress.emit(0, len(items), -1.0)

    def cancel_prelabel(self) -> None:
        self.client.cancel_prelabel()

    @property
    def can_resume_prelabel(self) -> bool:
        """A folder pre-label stopped before it labelled everything (cancelled, or images failed)."""
        return bool(self._prelabel_remaining)

    def _on_prelabel_result(self, result: PrelabelResult) -> None:
        rel, ids, confidence = result.key, result.labels, result.confidence
        if rel in self._prelabel_remaining:
            self._prelabel_remaining.remove(rel)
        if rel == self.session.rel:
            if ids.shape == self.session.doc.labels.shape:
                self.session.set_prediction(ids, confidence)
                self._repaint()
        else:  # loaded, merged and written on the saver thread: the GUI never waits on PNGs
            self.session.saver.submit(lambda: store_prediction(self.project, rel, ids, confidence))
        # A prediction moves only an unlabeled image on; one in progress stays in progress.
        try:
            before = self.file_list.state(rel)
        except KeyError:  # not listed (a folder walk that changed): the store has the truth
            before = ImageState.UNLABELED
        after = ImageState.PREDICTED if before == ImageState.UNLABELED else before
        self.state_changed.emit(rel, after.value)

    def _on_prelabel_finished(self, summary: PrelabelSummary) -> None:
        self.prelabel_running.emit(False)
        failed = summary.failed
        text = "Pre-label cancelled" if summary.cancelled else "Pre-label finished"
        text += f": {summary.done} image" + ("" if summary.done == 1 else "s")
        if failed:
            text += f", {len(failed)} failed ({failed[0][0]}: {failed[0][1]})"
        self.message.emit(text)
        self.file_list.resort()
