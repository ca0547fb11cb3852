"""A project: one folder of images, its class list and every image's labels, kept safe on disk.

On-disk format (plain files; readable without Chimera)
======================================================
Everything lives in ``IMAGES/.chimera/`` (or in a folder given as ``project_dir``, for image sets
that must stay read-only). Image paths ``rel`` are relative to the image folder, with "/".

``project.json`` (UTF-8 JSON)::

    {"format": "chimera-project", "version": 1,
     "classes": [{"id": 1, "phrases": ["car", "automobile"], "color": [128, 0, 0], "hidden": false}, ...],
     "next_class_id": 4,            # ids are never reused: the next class gets this one
     "model": "shapes-chimera",     # or null: the model the user last chose
     "images": {"a/b.jpg": {"state": "predicted", "uncertainty": 0.31}, ...},
     "exports": [{"time": "2025-01-01T12:00:00+00:00", "kind": "coco", "path": "...", "images": 12,
                  "annotations": 40, "category_class_ids": [1, 2, 4]}, ...]}   # category k = class id [k-1]

``state`` is "unlabeled", "predicted", "in-progress" (a person edited it but has not verified it)
or "human-verified" (an image missing from "images" is unlabeled); ``uncertainty`` is the mean of 1 - confidence of the image's last prediction, or null.
A class's display name is its first phrase; the order of "classes" is the display order.

``labels/<rel>.png``: the label map, one value per pixel, 0 = unlabeled, k = the class with id k.
An 8-bit palette PNG (colours = the class colours) while every value is <= 255, else a 16-bit
grayscale PNG. Read the values, not the colours (e.g. ``numpy.array(PIL.Image.open(path))``).
``provenance/<rel>.png``: 8-bit grayscale, who decided each pixel: 0 nobody, 1 the model, 2 a person.
``confidence/<rel>.png``: 8-bit grayscale, the last prediction's confidence times 255 (may be absent).
The file name is the image's own name plus ".png" ("photo.jpg" -> "labels/photo.jpg.png"), and
every map has the upright (EXIF-rotated) size of its image.

``journal.log``: edits committed since the image's PNGs were last written, appended and fsynced one
by one; replayed over the PNGs when the project is opened after a crash, and emptied for an image
once its PNGs are written. A sequence of records (integers little-endian)::

    b"CJR1" | payload length N (uint32) | CRC-32 of the payload (zlib.crc32, uint32) | payload
    payload = header length M (uint32) | M bytes of UTF-8 JSON {"image": rel, "y0", "x0", "height",
              "width", "image_height", "image_width", "state"} | labels of the box (height x width
              uint16, row-major) | provenance of the box (height x width uint8)

A record holds the values of the box after the edit: writing each image's records in order over its
PNGs (and taking the state of its last one) gives the labels as they were. A record cut short or
failing its CRC ends the journal (the process died while writing it) and is ignored.
``lock``: held with an OS lock while a Chimera has the project open; its text names that process.

Every file is written atomically (temporary file + rename), so a crash leaves the old or the new
file, never a mix. One image's save (its maps and its project.json entry) is one change: the maps are
staged in ``staging/`` and fsynced, ``commit.json`` then lists their renames and the project.json
entries not yet written (the commit point), the renames and project.json follow and ``commit.json``
is removed. A kill or a full disk before the
commit point leaves every old file; after it, the next open finishes the save. Maps and project.json
never disagree. A damaged file is reported (ProjectError) and left alone, never overwritten; a write
the disk refuses is a SaveError (EditNotSavedError for a journal append), with nothing half-done.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cv2
import numpy as np

from chimera_app.project.classes import ClassList
from chimera_app.project.document import ImageState, LabelDocument
from chimera_app.project.errors import ProjectError, ProjectLockedError
from chimera_app.project.journal import Journal, JournalRecord
from chimera_app.project.lock import ProjectLock
from chimera_engine.atomic import atomic_write_json, fsync_directory, stage_bytes
from chimera_engine.errors import ChimeraError
from chimera_engine.formats.palette import palette
from chimera_engine.formats.project_files import (COMMIT_NAME, DATA_DIR_NAME, JOURNAL_NAME, PROJECT_FORMAT,
                                                  PROJECT_VERSION, ProjectFileError, read_commit, read_project_json)
from chimera_engine.formats.png_masks import encode_index_png, read_index_png
from chimera_engine.images import find_images, read_image_size
from chimera_engine.limits import check_class_count

if TYPE_CHECKING:  # typing.Self is Python 3.11+
    from typing_extensions import Self

__all__ = ["DATA_DIR_NAME", "Project", "ProjectError", "ProjectLockedError", "SaveError",
           "EditNotSavedError"]

STAGING_DIR_NAME = "staging"  # maps of a save in progress, renamed into place at its commit


class SaveError(ProjectError):
    """Labels or the project file could not be written (a full disk, a permission); the message
    says what is intact. The document in memory is unchanged and its edits stay in the journal."""


class EditNotSavedError(SaveError):
    """A committed edit could not be journalled (a full disk): nothing on disk changed, and the
    caller must undo the edit on screen so that screen, undo stack and disk agree."""


class Project:
    """An open project. Create with ``Project.open``; ``close()`` (or ``with``) releases it."""

    def __init__(self, root: Path, data_dir: Path, lock: ProjectLock, meta: dict, journal: Journal) -> None:
        self.root, self.data_dir = root, data_dir
        self.classes: ClassList = meta["classes"]
        self.model: str | None = meta["model"]
        self.exports: list[dict] = meta["exports"]
        self._images_meta: dict[str, dict] = meta["images"]
        self._lock, self._journal = lock, journal
        # record() runs on the GUI thread and saves on a saver thread: project.json and the journal
        # index are shared, and an image's load must not interleave with a save of that image.
        self._meta_lock = threading.RLock()
        self._image_locks: dict[str, threading.Lock] = {}
        self._images: list[str] | None = None
        self.skipped_images: list[str] = []  # filled by refresh_images
        # Saves past their commit point whose entries project.json does not hold yet (a full disk).
        self._pending: dict = _no_pending()
        self.recovered: list[str] = []  # images whose unsaved edits were replayed at open
        self.recovery_problems: list[str] = []  # what could not be replayed (kept in the journal)

    @classmethod
    def open(cls, image_root: str | os.PathLike[str], project_dir: str | os.PathLike[str] | None = None) -> Project:
        """Open (creating if new) the project of a folder of images, recovering a crashed session.

        Raises ProjectLockedError when it is open elsewhere, ProjectError for a missing folder, a
        damaged project.json or a data folder that cannot be created. Images whose unsaved edits
        cannot be replayed do not stop it: they are listed in ``recovery_problems``.
        """
        root = Path(image_root).resolve()
        if not root.is_dir():
            raise ProjectError(f"cannot open '{root}' as a project: {'not a folder' if root.exists() else 'no such folder'}")
        data_dir = Path(project_dir).resolve() if project_dir is not None else root / DATA_DIR_NAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create the project folder '{data_dir}': {exc.strerror or exc}; for a "
                               "read-only image folder, keep the project somewhere else") from exc
        try:
            lock = ProjectLock(data_dir / "lock")
        except OSError as exc:
            raise ProjectError(f"cannot lock the project folder '{data_dir}': {exc.strerror or exc}") from exc
        project = None
        try:
            try:
                journal = Journal(data_dir / JOURNAL_NAME)
            except OSError as exc:
                raise ProjectError(f"cannot open the edit journal in '{data_dir}': {exc.strerror or exc}") from exc
            project = cls(root, data_dir, lock, _read_meta(data_dir / "project.json"), journal)
            project._finish_commit()
            project._recover()
        except BaseException:
            if project is not None:
                project._journal.close()
            lock.release()
            raise
        return project

    # -- images ---------------------------------------------------------------------------------
    def images(self) -> list[str]:
        """Every image under the folder (recursive, sorted), as relative POSIX paths. Listed once
        per open; ``refresh_images()`` lists again after files were added or removed."""
        if self._images is None:
            self.refresh_images()
        return list(self._images or [])

    def refresh_images(self) -> None:
        """List the images again; ``skipped_images`` then names what the walk passed over (a broken
        or looping link, an unreadable folder), for the app to show."""
        listing = find_images(self.root)
        self.skipped_images = list(listing.skipped)
        found = [p for p in listing if not p.is_relative_to(self.data_dir)]
        self._images = [p.relative_to(self.root).as_posix() for p in found]

    def state(self, rel: str) -> ImageState:
        return ImageState(self._images_meta.get(rel, {}).get("state", ImageState.UNLABELED.value))

    def uncertainty(self, rel: str) -> float | None:
        return self._images_meta.get(rel, {}).get("uncertainty")

    def image_path(self, rel: str) -> Path:
        return self.root / _check_rel(rel)

    # -- documents ------------------------------------------------------------------------------
    def load_document(self, rel: str) -> LabelDocument:
        """The image's saved maps with its journal replayed; blank when never saved. Ids of deleted
        classes come back unlabeled. ProjectError for damaged files or a size that does not fit."""
        self._check_open()
        height, width = self._image_shape(rel)
        with self._image_lock(rel):  # saved maps and journal records of one moment
            doc = self._read_saved(rel, height, width)
            records = self._journal.records(rel)
        for record in records:
            y0, x0 = record.y0, record.x0
            h, w = record.labels.shape
            if record.image_shape != (height, width) or y0 + h > height or x0 + w > width:
                raise ProjectError(f"unsaved edits of '{rel}' were made on a {record.image_shape[1]}x"
                                   f"{record.image_shape[0]} image, but it is now {width}x{height} (was the "
                                   "image replaced?); they were kept in the journal")
            doc.labels[y0:y0 + h, x0:x0 + w] = record.labels
            doc.provenance[y0:y0 + h, x0:x0 + w] = record.provenance
            doc.state = ImageState(record.state)
        doc.drop_classes(self.classes.ids())
        return doc

    def record(self, rel: str, doc: LabelDocument, patch) -> None:
        """Make a committed edit durable: the document's values in the patch's box (and its state)
        are appended to the journal and fsynced. Call it after an edit, an undo and a redo alike."""
        self._check_open()
        y0, x0, y1, x1 = patch.bbox
        record = JournalRecord(_check_rel(rel), y0, x0, doc.labels[y0:y1, x0:x1], doc.provenance[y0:y1, x0:x1],
                               doc.state.value, doc.shape)
        with self._meta_lock:
            self._lock.check()
            try:
                self._journal.append(record)
            except OSError as exc:
                raise EditNotSavedError(f"the edit to '{rel}' could not be saved ({_os_reason(exc)}); it must be "
                                        "undone on screen, and nothing on disk changed") from exc
            self._images_meta.setdefault(rel, {"uncertainty": None})["state"] = doc.state.value

    def journal_mark(self, rel: str) -> int:
        """Where ``rel``'s journal stands now. Take it when copying a document to save it on another
        thread and pass it to ``save_document``: edits recorded after the copy then stay journaled."""
        return self._journal.mark(rel)

    def save_document(self, rel: str, doc: LabelDocument, journal_mark: int | None = None) -> None:
        """Write the image's PNGs atomically and project.json, then forget its journal records
        (those before ``journal_mark`` when given, else all: ``doc`` holds every recorded edit)."""
        self._check_open()
        if journal_mark is None:
            journal_mark = self._journal.mark(rel)
        height, width = self._image_shape(rel)
        if doc.shape != (height, width):
            raise ProjectError(f"labels of '{rel}' are {doc.shape[1]}x{doc.shape[0]} but the image is "
                               f"{width}x{height}; nothing was written")
        with self._image_lock(rel):
            files, uncertainty = self._encode_maps(rel, doc)
            staged = self._stage(rel, files)  # outside the meta lock: record() never waits for PNG writes
            with self._meta_lock:
                # Edits recorded after the copy was made are newer than what was just written.
                state = self._journal.last_state(rel, since=journal_mark) or doc.state.value
                self._commit(rel, staged, {"state": state, "uncertainty": uncertainty})
                try:
                    self._journal.drop(rel, journal_mark)  # after project.json: a crash only replays again
                except OSError:
                    pass  # not compacted (full disk): the records stay and the next save drops them

    def _encode_maps(self, rel: str, doc: LabelDocument) -> tuple[dict[str, bytes | None], float | None]:
        """{map kind: PNG bytes, or None to remove that map} and the image's uncertainty; no disk."""
        top = int(doc.labels.max()) if doc.labels.size else 0
        if top <= 255:  # 8-bit palette PNG, coloured like the app shows it
            labels = encode_index_png(doc.labels, colors=self._palette(top))
        else:
            labels = _png(doc.labels)
        files: dict[str, bytes | None] = {"labels": labels, "provenance": _png(doc.provenance), "confidence": None}
        uncertainty = None
        if doc.confidence is not None:
            quantized, total = _quantize_confidence(doc.confidence)
            files["confidence"] = _png(quantized)
            uncertainty = round(1.0 - total / doc.confidence.size, 6) if doc.confidence.size else None
        return files, uncertainty

    def _stage(self, rel: str, files: dict[str, bytes | None]) -> tuple[list[list[str]], list[str]]:
        """Write the maps durably under ``staging/`` (not yet in place): ([staged, target] renames,
        targets to delete). SaveError, with nothing left behind, when the disk refuses."""
        self._lock.check()
        renames, deletes = [], []
        try:
            for kind, data in files.items():
                target = self._map_path(kind, rel)
                if data is None:
                    if target.exists():
                        deletes.append(str(target))  # from an older prediction this document no longer has
                    continue
                renames.append([str(stage_bytes(self.data_dir / STAGING_DIR_NAME, data, kind)), str(target)])
        except OSError as exc:
            for source, _ in renames:
                Path(source).unlink(missing_ok=True)
            raise SaveError(f"the labels of '{rel}' could not be saved ({_os_reason(exc)}); the last save is "
                            "intact and unsaved edits stay in the journal") from exc
        return renames, deletes

    def _commit(self, rel: str, staged: tuple[list[list[str]], list[str]], entry: dict) -> None:
        """Put one image's staged maps and its project.json entry in place as one change (the caller
        holds the meta lock). ``commit.json`` — the renames and every entry not yet in project.json —
        is the commit point: a kill before it leaves every old file, one after it is rolled forward
        at the next open (``_finish_commit``). SaveError when the disk refuses; nothing changed
        unless the message says the save completes at the next open."""
        renames, deletes = staged
        pending_renames = [pair for pair in self._pending["renames"] if os.path.exists(pair[0])] + renames
        pending = {"entries": {**self._pending["entries"], rel: dict(entry)}, "renames": pending_renames,
                   "deletes": self._pending["deletes"] + deletes}
        try:
            self._lock.check()
            atomic_write_json(self.data_dir / COMMIT_NAME, pending)
        except (OSError, ProjectLockedError) as exc:
            for source, _ in renames:
                Path(source).unlink(missing_ok=True)
            if isinstance(exc, ProjectLockedError):
                raise
            raise SaveError(f"the labels of '{rel}' could not be saved ({_os_reason(exc)}); the last save is "
                            "intact and unsaved edits stay in the journal") from exc
        self._pending = pending
        try:
            _apply_renames(pending["renames"], pending["deletes"])
            self._images_meta.update(pending["entries"])
            self.save_meta()  # clears the pending entries once project.json holds them
        except (OSError, SaveError) as exc:
            raise SaveError(f"the labels of '{rel}' were written but the project file could not be updated "
                            f"({_os_reason(exc)}); the save completes when the project is next opened") from exc

    def _finish_commit(self) -> None:
        """Roll forward a save that reached its commit point but not project.json (a kill, a full
        disk); drop staged files of saves that did not reach it."""
        commit_path = self.data_dir / COMMIT_NAME
        try:
            commit = read_commit(commit_path)
        except ProjectFileError as exc:
            raise ProjectError(f"{exc}; it was left as it is") from exc
        if commit is not None:
            try:
                entries = {_check_rel(rel): {"state": ImageState(e["state"]).value,
                                             "uncertainty": None if e.get("uncertainty") is None
                                             else float(e["uncertainty"])}
                           for rel, e in commit["entries"].items()}
                renames, deletes = commit["renames"], commit["deletes"]
                inside = [Path(p) for pair in renames for p in pair] + [Path(d) for d in deletes]
                if not all(p.resolve().is_relative_to(self.data_dir) for p in inside):
                    raise ValueError("it names files outside the project folder")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ProjectError(f"{commit_path} (an unfinished save) is damaged ({exc}); it was left as it is"
                                   ) from exc
            _apply_renames([pair for pair in renames if os.path.exists(pair[0])], deletes)
            self._images_meta.update(entries)
            self.recovered.extend(entries)
            try:
                self.save_meta()  # also removes commit.json
            except SaveError as exc:
                self._pending = {"entries": entries, "renames": [], "deletes": []}
                self.recovery_problems.append(str(exc))
        staging = self.data_dir / STAGING_DIR_NAME
        if staging.is_dir() and not commit_path.exists():
            for leftover in staging.iterdir():
                leftover.unlink(missing_ok=True)

    # -- project --------------------------------------------------------------------------------
    def save_meta(self) -> None:
        """Write project.json atomically; SaveError (the old file intact) when the disk refuses."""
        self._check_open()
        with self._meta_lock:
            self._lock.check()
            try:
                atomic_write_json(self.data_dir / "project.json", {
                    "format": PROJECT_FORMAT, "version": PROJECT_VERSION, **self.classes.to_json(), "model": self.model,
                    "images": {rel: dict(self._images_meta[rel]) for rel in sorted(self._images_meta)},
                    "exports": self.exports})
            except OSError as exc:
                raise SaveError(f"the project file could not be saved ({_os_reason(exc)}); the last saved "
                                "version is intact") from exc
            # Everything an unfinished save listed is now in project.json.
            if self._pending["entries"] or (self.data_dir / COMMIT_NAME).exists():
                (self.data_dir / COMMIT_NAME).unlink(missing_ok=True)
                self._pending = _no_pending()

    def close(self) -> None:
        """Save project.json and release the lock. Unsaved documents stay in the journal."""
        if not self._lock.held:
            return
        try:
            self.save_meta()  # SaveError propagates, but the lock and the journal are released
        finally:
            self._journal.close()
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._lock.held:
            raise RuntimeError("the project was closed")

    def _recover(self) -> None:
        """Write the PNGs of images whose edits only reached the journal (a killed session)."""
        if self._journal.dropped_bytes:
            self.recovery_problems.append(f"an edit that was being written when Chimera stopped was incomplete "
                                          f"and was ignored ({self._journal.dropped_bytes} bytes)")
        for rel in self._journal.images():
            try:
                self.save_document(rel, self.load_document(rel))
            except (ChimeraError, OSError, ValueError) as exc:  # ValueError: a path outside the folder
                self.recovery_problems.append(f"{rel}: {exc}")
            else:
                self.recovered.append(rel)

    def _image_lock(self, rel: str) -> threading.Lock:
        with self._meta_lock:
            return self._image_locks.setdefault(rel, threading.Lock())

    def _image_shape(self, rel: str) -> tuple[int, int]:
        width, height = read_image_size(self.image_path(rel))
        return height, width

    def _map_path(self, kind: str, rel: str) -> Path:
        return self.data_dir / kind / f"{_check_rel(rel)}.png"

    def _palette(self, top: int) -> np.ndarray:
        colors = palette(top)
        for c in self.classes:
            if c.id <= top:
                colors[c.id] = c.color
        return colors

    def _read_saved(self, rel: str, height: int, width: int) -> LabelDocument:
        labels_path = self._map_path("labels", rel)
        if not labels_path.exists():
            return LabelDocument.blank(height, width)
        labels = _read_map(labels_path, rel, "labels", height, width, read_index_png)
        prov = _read_map(self._map_path("provenance", rel), rel, "provenance", height, width, _read_gray)
        if prov.max(initial=0) > 2:
            raise ProjectError(f"the provenance file of '{rel}' holds values other than 0, 1, 2: it is damaged")
        confidence = None
        conf_path = self._map_path("confidence", rel)
        if conf_path.exists():
            confidence = _read_map(conf_path, rel, "confidence", height, width, _read_gray).astype(np.float32) / 255
        return LabelDocument(labels.astype(np.uint16), prov, self.state(rel), confidence=confidence)


def _no_pending() -> dict:
    return {"entries": {}, "renames": [], "deletes": []}


def _apply_renames(renames: list, deletes: list) -> None:
    for source, target in renames:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    for path in deletes:
        Path(path).unlink(missing_ok=True)
    for directory in {Path(target).parent for _, target in renames} | {Path(d).parent for d in deletes}:
        fsync_directory(directory)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk is full"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _quantize_confidence(conf: np.ndarray, rows: int = 256) -> tuple[np.ndarray, float]:
    """``rint(clip(conf, 0, 1) * 255)`` as uint8 and the sum of ``clip(conf, 0, 1)``, a band of rows at
    a time: the whole-map version held four float32 copies (~190 MB on a 12 MP image) at once."""
    out = np.empty(conf.shape, np.uint8)
    total = 0.0
    for top in range(0, conf.shape[0], rows):
        band = np.clip(np.nan_to_num(conf[top:top + rows]), 0.0, 1.0)
        total += float(band.sum(dtype=np.float64))
        np.rint(band * 255.0, out=band)
        out[top:top + rows] = band
    return out, total


def _check_rel(rel: str) -> str:
    """``rel`` if it is a relative path inside the image folder (no "..", not absolute)."""
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel or ":" in path.parts[0]:
        raise ValueError(f"not a relative image path: {rel!r}")
    return path.as_posix()


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array (grayscale, lossless)."""
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError("OpenCV could not encode a PNG")
    return data.tobytes()


def _read_gray(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("not an 8-bit grayscale PNG")
    return image


def _read_map(path: Path, rel: str, kind: str, height: int, width: int, reader) -> np.ndarray:
    """A saved map of ``rel``; ProjectError when missing, undecodable or of the wrong size."""
    if not path.exists():
        raise ProjectError(f"the {kind} file of '{rel}' is missing ({path}); its labels cannot be trusted")
    try:
        declared = read_image_size(path)  # from the header: a wrong size is refused before decoding
    except ChimeraError as exc:
        raise ProjectError(f"the saved {kind} of '{rel}' cannot be read ({exc}); it was left as it is") from exc
    if declared != (width, height):
        raise ProjectError(f"the saved {kind} of '{rel}' are {declared[0]}x{declared[1]} but the image is "
                           f"{width}x{height} (was the image replaced?); they were left as they are ({path})")
    try:
        array = reader(path)
    except Exception as exc:  # Pillow and OpenCV raise many types for bad files
        raise ProjectError(f"the saved {kind} of '{rel}' cannot be read ({path}: {exc}); it was left as it is") from exc
    if array.shape != (height, width):
        raise ProjectError(f"the saved {kind} of '{rel}' are {array.shape[1]}x{array.shape[0]} but the image is "
                           f"{width}x{height} (was the image replaced?); they were left as they are ({path})")
    return array


def _read_meta(path: Path) -> dict:
    """project.json as {"classes", "model", "images", "exports"}; defaults for a new project."""
    if not path.exists():
        return {"classes": ClassList(), "model": None, "images": {}, "exports": []}
    try:
        data = read_project_json(path)
    except ProjectFileError as exc:
        raise ProjectError(f"{exc}; it was left as it is") from exc
    try:
        if isinstance(data.get("classes"), list):  # counted first: building a huge list is slow
            check_class_count(len(data["classes"]), str(path))
        classes = ClassList.from_json(data)
        images = {}
        for rel, entry in dict(data.get("images", {})).items():
            uncertainty = entry.get("uncertainty")
            images[str(rel)] = {"state": ImageState(entry.get("state", "unlabeled")).value,
                                "uncertainty": None if uncertainty is None else float(uncertainty)}
        exports = [dict(e) for e in data.get("exports", [])]
        model = data.get("model")
    except (ChimeraError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProjectError(f"{path} is damaged ({exc}); it was left as it is") from exc
    return {"classes": classes, "model": None if model is None else str(model), "images": images,
            "exports": exports}
