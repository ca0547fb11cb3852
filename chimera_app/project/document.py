"""One image's labels as a document: label map, provenance, state, and undoable patches. Qt-free.

The label map is HxW uint16 (0 = unlabeled, else a class's stable id); the provenance map says for
every pixel who decided it (NONE, MODEL or HUMAN), so a new prediction never overwrites a human
decision. Every edit is a ``Patch``: the bounding box of the pixels it changed with the label and
provenance values before and after, and the image state before and after. Undo and redo copy those
arrays back, so they restore the document bit for bit, and memory grows with the edited area, not
with the image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum, IntEnum

import numpy as np

__all__ = ["ImageState", "edited_state", "LabelDocument", "Patch", "Provenance", "Region", "UndoStack"]


class Provenance(IntEnum):
    NONE = 0  # unlabeled and untouched
    MODEL = 1  # written by a prediction
    HUMAN = 2  # painted, erased or accepted by a person


class ImageState(str, Enum):
    """Where an image stands. Only a person's explicit decision (Verified, or accept-all) makes it
    VERIFIED; an edit makes it IN_PROGRESS, so pre-label and "verified only" exports never take a
    half-reviewed image for a finished one."""

    UNLABELED = "unlabeled"
    PREDICTED = "predicted"
    IN_PROGRESS = "in-progress"
    VERIFIED = "human-verified"


def edited_state(state: ImageState) -> ImageState:
    """The state after a person edits pixels: a verified image stays verified (the decision was
    made), any other becomes in progress."""
    return state if state == ImageState.VERIFIED else ImageState.IN_PROGRESS


@dataclass(frozen=True)
class Region:
    """A boolean mask limited to its bounding box: pixel (y0 + i, x0 + j) is in when mask[i, j]."""

    y0: int
    x0: int
    mask: np.ndarray  # bool h x w, already clipped to the image

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1), end exclusive."""
        return self.y0, self.x0, self.y0 + self.mask.shape[0], self.x0 + self.mask.shape[1]

    @property
    def is_empty(self) -> bool:
        return not self.mask.any()

    @staticmethod
    def full(mask: np.ndarray) -> Region:
        """A region from a whole-image HxW mask."""
        return Region(0, 0, np.asarray(mask, dtype=bool))


def _frozen(array: np.ndarray) -> np.ndarray:
    copy = np.array(array, copy=True)
    copy.flags.writeable = False  # a patch is history: nothing may change it after the fact
    return copy


@dataclass(frozen=True)
class Patch:
    """One undoable edit: a bbox and the label/provenance values and states before and after."""

    y0: int
    x0: int
    labels_before: np.ndarray
    labels_after: np.ndarray
    prov_before: np.ndarray
    prov_after: np.ndarray
    state_before: ImageState
    state_after: ImageState

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        h, w = self.labels_after.shape
        return self.y0, self.x0, self.y0 + h, self.x0 + w

    @property
    def nbytes(self) -> int:
        arrays = (self.labels_before, self.labels_after, self.prov_before, self.prov_after)
        return sum(a.nbytes for a in arrays) + 128  # + the object itself, roughly


class LabelDocument:
    """Labels, provenance and state of one image, plus the latest prediction (not undoable)."""

    def __init__(self, labels: np.ndarray, provenance: np.ndarray, state: ImageState = ImageState.UNLABELED,
                 confidence: np.ndarray | None = None) -> None:
        if labels.ndim != 2 or labels.dtype != np.uint16:
            raise ValueError(f"labels must be an HxW uint16 array, got {labels.dtype} {labels.shape}")
        if provenance.shape != labels.shape or provenance.dtype != np.uint8:
            raise ValueError(f"provenance must be uint8 of shape {labels.shape}, got {provenance.dtype} "
                             f"{provenance.shape}")
        self.labels = labels
        self.provenance = provenance
        self.state = ImageState(state)
        # The latest model output, read-only (shared with the saver's snapshots, never copied):
        self.prediction: np.ndarray | None = None  # uint16 class ids
        self.confidence: np.ndarray | None = None  # float32 in [0, 1]
        if confidence is not None:
            self.confidence = self._check_map(confidence, np.float32, "confidence")

    @classmethod
    def blank(cls, height: int, width: int) -> LabelDocument:
        return cls(np.zeros((height, width), np.uint16), np.zeros((height, width), np.uint8))

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]

    # -- edits (each returns the Patch to push on the undo stack, or None) -----------------------
    def paint(self, region: Region, value: int, protect: Collection[int] = ()) -> Patch | None:
        """Set ``value`` (0 = erase) on the region's pixels, except where the current label is in
        ``protect`` (0 never is). Every pixel set becomes HUMAN, erased ones too: an explicit
        "unlabeled" that a later prediction keeps. The image becomes IN_PROGRESS (a verified one
        stays verified). None if nothing changed: a stroke that changes no pixel changes no state."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"label value must be in 0..65535, got {value}")
        y0, x0, y1, x1 = self._window(region)
        labels, prov = self.labels[y0:y1, x0:x1], self.provenance[y0:y1, x0:x1]
        selected = region.mask[y0 - region.y0:y1 - region.y0, x0 - region.x0:x1 - region.x0].copy()
        guarded = [c for c in protect if c != 0 and c != value]
        if guarded:
            selected &= ~np.isin(labels, np.asarray(guarded, dtype=np.uint16))
        selected &= (labels != value) | (prov != Provenance.HUMAN)
        state = edited_state(self.state) if selected.any() else self.state
        return self._change(y0, x0, selected, np.uint16(value), None, state)

    def accept_prediction(self, region: Region | None = None, class_id: int | None = None) -> Patch | None:
        """Mark MODEL pixels (inside ``region`` and/or of ``class_id``; all when both are None) as
        HUMAN. Only the whole-image accept verifies the image; accepting a class or a region makes
        it IN_PROGRESS. None when nothing changed."""
        if region is None:
            y0, x0, y1, x1 = 0, 0, *self.shape
            selected = self.provenance == Provenance.MODEL
        else:
            y0, x0, y1, x1 = self._window(region)
            selected = (self.provenance[y0:y1, x0:x1] == Provenance.MODEL) & \
                region.mask[y0 - region.y0:y1 - region.y0, x0 - region.x0:x1 - region.x0]
        if class_id is not None:
            selected &= self.labels[y0:y1, x0:x1] == class_id
        if region is None and class_id is None:
            state = ImageState.VERIFIED
        else:
            state = edited_state(self.state) if selected.any() else self.state
        return self._change(y0, x0, selected, None, Provenance.HUMAN, state)

    def apply(self, patch: Patch) -> None:
        """Redo: put the patch's after-values back."""
        y0, x0, y1, x1 = patch.bbox
        self.labels[y0:y1, x0:x1] = patch.labels_after
        self.provenance[y0:y1, x0:x1] = patch.prov_after
        self.state = patch.state_after

    def revert(self, patch: Patch) -> None:
        """Undo: put the patch's before-values back."""
        y0, x0, y1, x1 = patch.bbox
        self.labels[y0:y1, x0:x1] = patch.labels_before
        self.provenance[y0:y1, x0:x1] = patch.prov_before
        self.state = patch.state_before

    # -- not undoable ---------------------------------------------------------------------------
    def set_prediction(self, class_ids: np.ndarray, confidence: np.ndarray) -> None:
        """Take a model output (uint16 class ids, 0 = unlabeled; float32 confidence in [0, 1]) and
        write it into every pixel a person has not decided. UNLABELED becomes PREDICTED.

        Arrays of those dtypes are kept, not copied (72 MB on a 12 MP image), behind read-only
        views: the caller hands them over and must not write to them afterwards."""
        ids = self._check_map(class_ids, np.uint16, "class_ids")
        self.confidence = self._check_map(confidence, np.float32, "confidence")
        self.prediction = ids
        free = self.provenance != Provenance.HUMAN
        np.copyto(self.labels, ids, where=free)
        # MODEL where the model gave a class, NONE (0) where it left the pixel unlabeled.
        decided = (ids != 0).view(np.uint8)  # 0 / 1
        decided *= np.uint8(Provenance.MODEL)
        np.copyto(self.provenance, decided, where=free)
        if self.state == ImageState.UNLABELED:
            self.state = ImageState.PREDICTED

    def drop_classes(self, valid_ids: Collection[int]) -> None:
        """Unlabel (0 / NONE) every pixel whose id is not in ``valid_ids`` (its class was deleted)."""
        valid = np.asarray([0, *valid_ids], dtype=np.uint16)
        gone = ~np.isin(self.labels, valid)
        if gone.any():
            self.labels[gone] = 0
            self.provenance[gone] = Provenance.NONE
        if self.prediction is not None:
            stale = ~np.isin(self.prediction, valid)
            if stale.any():  # a new (read-only) array: the saver or a caller may share the old one
                self.prediction = self._frozen_view(np.where(stale, np.uint16(0), self.prediction))

    # -- inside ---------------------------------------------------------------------------------
    def _window(self, region: Region) -> tuple[int, int, int, int]:
        """The region's bbox clipped to the image (a tool may hand a region reaching outside)."""
        y0, x0, y1, x1 = region.bbox
        h, w = self.shape
        y0, x0 = min(max(y0, 0), h), min(max(x0, 0), w)
        return y0, x0, max(y0, min(y1, h)), max(x0, min(x1, w))

    def _check_map(self, array: np.ndarray, dtype, name: str) -> np.ndarray:
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"{name} has shape {array.shape}, the image is {self.shape}")
        if name == "class_ids" and array.size and (array.min() < 0 or array.max() > 0xFFFF):
            raise ValueError("class ids must lie in 0..65535")
        return self._frozen_view(np.asarray(array, dtype=dtype))  # copies only to convert

    @staticmethod
    def _frozen_view(array: np.ndarray) -> np.ndarray:
        """A read-only view of ``array`` (the caller's own array object keeps its flags)."""
        view = array.view()
        view.flags.writeable = False
        return view

    def _change(self, y0: int, x0: int, selected: np.ndarray, value, provenance, state: ImageState) -> Patch | None:
        """Set ``value`` (labels) and/or ``provenance`` where ``selected`` (a window at y0, x0) and
        the state; return the patch over the tight bbox of the changed pixels."""
        rows, cols = np.flatnonzero(selected.any(axis=1)), np.flatnonzero(selected.any(axis=0))
        if rows.size == 0 and state == self.state:
            return None
        if rows.size:
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        else:
            r0 = r1 = c0 = c1 = 0  # a state-only change (accepting a prediction that is all NONE)
        sel = selected[r0:r1, c0:c1]
        y0, x0, y1, x1 = y0 + int(r0), x0 + int(c0), y0 + int(r1), x0 + int(c1)
        labels, prov = self.labels[y0:y1, x0:x1], self.provenance[y0:y1, x0:x1]
        labels_before, prov_before, state_before = _frozen(labels), _frozen(prov), self.state
        if value is not None:
            labels[sel] = value
            prov[sel] = Provenance.HUMAN
        if provenance is not None:
            prov[sel] = provenance
        self.state = state
        return Patch(y0, x0, labels_before, _frozen(labels), prov_before, _frozen(prov), state_before, state)


class UndoStack:
    """Undo and redo of patches within a memory cap: past it the oldest patches are forgotten
    (the newest one always stays). ``push`` clears the redo side, as in every editor."""

    def __init__(self, cap_bytes: int = 256 * 2**20) -> None:
        self.cap_bytes = cap_bytes
        self._undo: deque[Patch] = deque()
        self._redo: list[Patch] = []
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def last(self) -> Patch | None:
        """The patch the next undo reverts, or None."""
        return self._undo[-1] if self._undo else None

    def push(self, patch: Patch) -> None:
        self._nbytes -= sum(p.nbytes for p in self._redo)
        self._redo.clear()
        self._undo.append(patch)
        self._nbytes += patch.nbytes
        while self._nbytes > self.cap_bytes and len(self._undo) > 1:
            self._nbytes -= self._undo.popleft().nbytes

    def undo(self, doc: LabelDocument) -> Patch | None:
        """Revert the newest patch on ``doc``; it moves to the redo side. None when there is none."""
        if not self._undo:
            return None
        patch = self._undo.pop()
        doc.revert(patch)
        self._redo.append(patch)
        return patch

    def redo(self, doc: LabelDocument) -> Patch | None:
        """Apply the newest undone patch again. None when there is none."""
        if not self._redo:
            return None
        patch = self._redo.pop()
        doc.apply(patch)
        self._undo.append(patch)
        return patch

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._nbytes = 0
