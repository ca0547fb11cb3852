"""The annotation state of one open project, Qt-free: which image is open, its label document and
undo history, the class the brush paints, and every edit between a tool and the disk.

The window only turns input into ``Region``s and calls these methods; this module decides what an
edit means (which value, which pixels are protected), journals it so a killed process loses nothing,
and keeps the undo history. Full saves (PNG encoding, which takes ~0.1-0.5 s on a 12 MP image) go
through ``saver``, a background thread, so the GUI never waits on the disk.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from chimera_app.project.document import (
    ImageState,
    LabelDocument,
    Patch,
    Provenance,
    Region,
    UndoStack,
)
from chimera_app.project.store import EditNotSavedError, Project

UNDO_CAP_BYTES = 256 * 2 ** 20  # per image; PRODUCT.md: undo as patches with a memory cap
UNDO_IMAGES = 4  # undo histories kept for the most recently visited images


def inverse(patch: Patch) -> Patch:
    """The patch that undoes ``patch`` (journalled when the user presses undo)."""
    return dataclasses.replace(
        patch, labels_before=patch.labels_after, labels_after=patch.labels_before,
        prov_before=patch.prov_after, prov_after=patch.prov_before,
        state_before=patch.state_after, state_after=patch.state_before)


class Saver:
    """One background thread that writes documents; the latest snapshot of an image wins."""

    def __init__(self, project: Project, on_error: Callable[[str, Exception], None] | None = None):
        self.project = project
        self.on_error = on_error
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chimera-saver")
        self._pending: dict[str, tuple[LabelDocument, int]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def save(self, rel: str, doc: LabelDocument) -> None:
        """Queue a save of a snapshot of ``doc`` (copied now, so later edits don't race the writer).

        Labels and provenance are copied; the confidence map is shared: a document never writes
        into it (a new prediction replaces it; it is read-only), and it is the largest map."""
        if self._closed:
            raise RuntimeError("the saver is closed")
        snapshot = LabelDocument(doc.labels.copy(), doc.provenance.copy(), doc.state, doc.confidence)
        # Edits journalled after this copy must stay in the journal when the copy is written.
        mark = self.project.journal_mark(rel)
        with self._lock:
            queued = rel in self._pending
            self._pending[rel] = (snapshot, mark)
        if not queued:
            self._pool.submit(self._write, rel)

    def _write(self, rel: str) -> None:
        with self._lock:
            pending = self._pending.pop(rel, None)
        if pending is None:
            return
        try:
            self.project.save_document(rel, *pending)
        except Exception as error:  # noqa: BLE001 -- a full disk must not kill the thread; the journal still has the edits
            if self.on_error:
                self.on_error(rel, error)

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the saver thread, after the saves queued before it."""
        def run():
            try:
                job()
            except Exception as error:  # noqa: BLE001 -- reported, and the saver thread lives on
                if self.on_error:
                    self.on_error("", error)
        self._pool.submit(run)

    def flush(self) -> None:
        """Wait until every queued save is on disk."""
        self._pool.submit(lambda: None).result()

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)


class Session:
    """Edits to the images of one ``Project``. Every method runs on the caller's (GUI) thread.

    An edit, undo or redo the journal cannot take (a full disk) is taken back before
    ``EditNotSavedError`` is raised: the document, its undo history and the disk always agree."""

    def __init__(self, project: Project, saver: Saver | None = None):
        self.project = project
        self.saver = saver or Saver(project)
        self.rel: str | None = None
        self.doc: LabelDocument | None = None
        self.active_class: int | None = None
        self.protect_others = False
        self._undo: OrderedDict[str, UndoStack] = OrderedDict()
        self._verified_by: weakref.WeakValueDictionary[str, Patch] = weakref.WeakValueDictionary()

    # -- images ---------------------------------------------------------------------------------
    def open_image(self, rel: str) -> LabelDocument:
        """Make ``rel`` the current image (the previous one is saved in the background)."""
        if self.rel == rel and self.doc is not None:
            return self.doc
        self.save()
        self.rel, self.doc = rel, self.project.load_document(rel)
        self._undo.setdefault(rel, UndoStack(UNDO_CAP_BYTES))
        self._undo.move_to_end(rel)
        while len(self._undo) > UNDO_IMAGES:
            self._undo.popitem(last=False)
        return self.doc

    def forget_history(self) -> None:
        """Drop every undo history (after a class is deleted, old patches would bring it back)."""
        for stack in self._undo.values():
            stack.clear()

    @property
    def undo_stack(self) -> UndoStack:
        return self._undo[self.rel]

    def save(self) -> None:
        if self.rel is not None and self.doc is not None:
            self.saver.save(self.rel, self.doc)

    def discard(self) -> None:
        """Forget the open document without saving it: its files were just replaced on disk (an
        import), so the copy in memory is stale."""
        self.saver.flush()
        self.rel, self.doc = None, None
        self._undo.clear()

    def close(self) -> None:
        self.save()
        self.saver.close()

    # -- model output ---------------------------------------------------------------------------
    def set_prediction(self, class_ids: np.ndarray, confidence: np.ndarray) -> None:
        """Write an engine result (uint16 class ids, 0 = unlabeled) for the current image; human
        pixels are never overwritten. The document keeps the arrays (no copy): don't write to them."""
        self.doc.set_prediction(class_ids, confidence)
        self.save()

    def preview(self, class_ids: np.ndarray) -> np.ndarray:
        """What the label map would be with this prediction (e.g. with a class still being typed),
        without changing the document: human pixels as they are, the rest from the prediction."""
        return np.where(self.doc.provenance == Provenance.HUMAN, self.doc.labels, class_ids)

    # -- edits ----------------------------------------------------------------------------------
    def paint(self, region: Region, erase: bool = False) -> Patch | None:
        """Brush, fill, polygon, rectangle: ``region`` gets the active class (or 0 when erasing)."""
        if not erase and self.active_class is None:
            return None
        value = 0 if erase else self.active_class
        protect = self._protected(value) if self.protect_others else ()
        return self._commit(self.doc.paint(region, value, protect))

    def subtract(self, region: Region) -> Patch | None:
        """Polygon subtract: remove the active class inside ``region``, leaving other classes alone."""
        if self.active_class is None:
            return None
        others = [c for c in self.project.classes.ids() if c != self.active_class]
        return self._commit(self.doc.paint(region, 0, others))

    def accept(self, region: Region | None = None, class_id: int | None = None) -> Patch | None:
        """Accept the prediction: everywhere (the image becomes human-verified), for one class, or in
        one region."""
        return self._commit(self.doc.accept_prediction(region, class_id))

    def mark_verified(self, verified: bool = True) -> Patch | None:
        """V, "this image is right" (an undoable, journalled patch; None when nothing changes).

        Verifying accepts every pixel the model decided and the person left as it was: they become
        the person's (provenance HUMAN), exactly as accepting the whole prediction (Ctrl+Enter)
        does, so a fine-tune learns from the whole verified image and a re-prediction never
        changes it. Pixels the model left unlabeled stay undecided.

        Not verified (V again): right after V it takes that V back, accepted pixels included (as
        undo would); later it only changes the state (to in progress or predicted): the pixels the
        person accepted meanwhile stay theirs."""
        if verified:
            if self.doc.state == ImageState.VERIFIED:
                return None
            patch = self.accept()
            if patch is not None:
                self._verified_by[self.rel] = patch
            return patch
        if self.doc.state != ImageState.VERIFIED:
            return None
        verify = self._verified_by.get(self.rel)
        if verify is not None and self.undo_stack.last is verify:
            return self.undo()
        new = self.unverified_state()
        empty_u16, empty_u8 = np.zeros((0, 0), np.uint16), np.zeros((0, 0), np.uint8)
        patch = Patch(0, 0, empty_u16, empty_u16, empty_u8, empty_u8, self.doc.state, new)
        self.doc.apply(patch)
        return self._commit(patch)

    def unverified_state(self) -> ImageState:
        """The state the open image has when nobody has verified it: in progress once a person
        decided a pixel, predicted once a model did, else unlabeled."""
        prov = self.doc.provenance
        if (prov == Provenance.HUMAN).any():
            return ImageState.IN_PROGRESS
        if self.doc.prediction is not None or (prov == Provenance.MODEL).any():
            return ImageState.PREDICTED
        return ImageState.UNLABELED

    def undo(self) -> Patch | None:
        patch = self.undo_stack.undo(self.doc)
        if patch is not None:
            try:
                self._journal(inverse(patch))
            except EditNotSavedError:
                self.undo_stack.redo(self.doc)  # not on disk: taken back, so screen, history and disk agree
                raise
        return patch

    def redo(self) -> Patch | None:
        patch = self.undo_stack.redo(self.doc)
        if patch is not None:
            try:
                self._journal(patch)
            except EditNotSavedError:
                self.undo_stack.undo(self.doc)
                raise
        return patch

    def _protected(self, value: int) -> list[int]:
        """Protect-other-classes: every visible class but the one painted."""
        return [c.id for c in self.project.classes if c.id != value and not c.hidden]

    def _commit(self, patch: Patch | None) -> Patch | None:
        if patch is not None:
            try:
                self._journal(patch)
            except EditNotSavedError:  # e.g. a full disk: the edit never happened, and the caller says so
                self.doc.revert(patch)
                raise
            self.undo_stack.push(patch)
        return patch

    def _journal(self, patch: Patch) -> None:
        """Raises EditNotSavedError when the journal cannot take it (nothing on disk changed)."""
        self.project.record(self.rel, self.doc, patch)  # durable now; the PNGs follow in the background
        self.save()
