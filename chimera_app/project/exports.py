"""A project's labels out as semantic COCO JSON or indexed PNG masks, and COCO JSON back in. Qt-free.

Category ids: a class's stable id when the project never deleted a class (then ids are exactly
1..N, and COCO readers, chimera_engine.formats.coco.validate_coco and the trainer need 1..N). After a
deletion the remaining classes are numbered 1..N in the order of their stable ids, so the numbering
never depends on the display order; every export record lists the stable id of each category
("category_class_ids", category k = entry k-1).
"""

from __future__ import annotations

import datetime
import errno
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from chimera_app.project.mask_paths import check_png_collisions, png_path
from chimera_app.project.classes import LabelClass
from chimera_app.project.document import ImageState, LabelDocument, Provenance
from chimera_app.project.errors import ProjectError
from chimera_app.project.store import Project
from chimera_engine.errors import ChimeraError
from chimera_engine.formats.coco import CocoBuilder, validate_coco, write_coco
from chimera_engine.formats.coco_reader import CocoFile, read_coco
from chimera_engine.formats.png_masks import write_class_list, write_index_png
from chimera_engine.images import read_image_size

__all__ = ["ExportError", "export_coco", "export_png_masks", "import_coco"]


class ExportError(ProjectError):
    """An export or import cannot be done as asked; nothing was written or changed."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _categories(project: Project) -> tuple[list[LabelClass], np.ndarray]:
    """(classes in category order, lookup table stable id -> category id, 0 -> 0)."""
    classes = sorted(project.classes, key=lambda c: c.id)
    table = np.zeros(max([c.id for c in classes], default=0) + 1, dtype=np.uint16)
    for category_id, c in enumerate(classes, start=1):
        table[c.id] = category_id
    return classes, table


def _selected(project: Project, states: Iterable[ImageState | str] | None) -> list[str]:
    """The project's images in one of ``states``; None = every image with labels (any state but
    unlabeled): an unlabeled image adds nothing to a dataset."""
    wanted = ({ImageState(s) for s in states} if states is not None
              else {s for s in ImageState if s != ImageState.UNLABELED})
    return [rel for rel in project.images() if project.state(rel) in wanted]


def _record(project: Project, kind: str, path: Path, images: int, annotations: int,
            classes: list[LabelClass]) -> dict:
    entry = {"time": _now(), "kind": kind, "path": str(path), "images": images, "annotations": annotations,
             "category_class_ids": [c.id for c in classes]}
    project.exports.append(entry)
    project.save_meta()
    return dict(entry)


def _category_map(doc: LabelDocument, table: np.ndarray) -> np.ndarray:
    return table[doc.labels]  # load_document already unlabeled the ids of deleted classes


def export_coco(project: Project, path: str | os.PathLike[str],
                states: Iterable[ImageState | str] | None = None) -> dict:
    """Write the images in ``states`` (default: every state but unlabeled) as semantic COCO JSON; return the export
    record (also appended to ``project.exports``). The file is validated before it is written,
    atomically: ExportError lists the problems and the old file, if any, stays."""
    classes, table = _categories(project)
    names = [c.name for c in classes]
    builder = CocoBuilder(names, info={"description": "Chimera semantic segmentation export",
                                       "model": project.model, "date_created": _now()})
    for rel in _selected(project, states):
        doc = project.load_document(rel)
        builder.add_image(rel, doc.shape[1], doc.shape[0], _category_map(doc, table))
    coco = builder.to_dict()
    problems = validate_coco(coco, expected_classes=names)
    if problems:
        raise ExportError("the COCO export failed validation, nothing was written: " + "; ".join(problems[:5]))
    try:
        write_coco(path, coco)
    except OSError as exc:
        raise ExportError(f"cannot write '{path}': {_reason(exc)}; any older file there was left as it was") from exc
    return _record(project, "coco", Path(path), len(coco["images"]), len(coco["annotations"]), classes)


def export_png_masks(project: Project, out_dir: str | os.PathLike[str],
                     states: Iterable[ImageState | str] | None = None) -> dict:
    """One indexed PNG per image in ``states`` (as export_coco) (``out_dir/<rel without suffix>.png``, value = category id as in
    the COCO export, 0 = unlabeled) and ``classes.json``; returns the export record."""
    out_dir = Path(out_dir)
    classes, table = _categories(project)
    selected = _selected(project, states)
    try:
        check_png_collisions(selected)
    except ChimeraError as exc:
        raise ExportError(str(exc)) from exc
    masks, written = 0, 0
    try:
        for rel in selected:
            category_map = _category_map(project.load_document(rel), table)
            write_index_png(png_path(out_dir, rel), category_map, num_classes=len(classes))
            masks += len(np.unique(category_map[category_map != 0]))
            written += 1
        write_class_list(out_dir, [c.name for c in classes])
    except OSError as exc:
        raise ExportError(f"the PNG export to '{out_dir}' stopped after {written} of {len(selected)} masks: "
                          f"{_reason(exc)}; the project itself is unchanged") from exc
    return _record(project, "png", out_dir, len(selected), masks, classes)


def import_coco(project: Project, path: str | os.PathLike[str]) -> dict:
    """Read a semantic COCO file into the project: each listed image's labels are replaced by the
    file's (labelled pixels HUMAN, the rest unlabeled) and it becomes human-verified. Categories
    match classes by name (else by phrase, case-insensitive); missing ones are added.

    Everything is checked before anything changes: a malformed file or one beyond the limits of
    chimera_engine.limits, images missing from the project, sizes that differ, overlapping masks or class
    names that clash raise ExportError and change nothing. Masks are decoded one image at a time.
    A write that fails part-way (a full disk) raises ExportError naming what was imported; each
    image is saved atomically, so every image has either its old labels or the imported ones.
    """
    try:
        coco = read_coco(path)
    except (OSError, ValueError, ChimeraError) as exc:
        raise ExportError(f"cannot import '{path}': {_reason(exc)}; nothing was imported") from exc
    known = set(project.images())
    missing = sorted(set(coco.sizes) - known)
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ExportError(f"{len(missing)} images of '{path}' are not in the project {project.root}: {shown}; "
                          "nothing was imported")
    wrong = []
    for rel, (height, width) in coco.sizes.items():
        try:
            disk_width, disk_height = read_image_size(project.image_path(rel))
        except ChimeraError as exc:
            raise ExportError(f"cannot import '{path}': {exc}; nothing was imported") from exc
        if (height, width) != (disk_height, disk_width):
            wrong.append(f"{rel} ({width}x{height} in the file, {disk_width}x{disk_height} on disk)")
    if wrong:
        raise ExportError(f"sizes differ for {', '.join(wrong[:10])}; nothing was imported")
    trial = project.classes.copy()  # resolve every name on a copy: a clash must change nothing
    added: list[str] = []
    ids = [0]  # category id -> class id
    for name in coco.class_names:
        match = trial.find(name)
        if match is None:
            try:
                match = trial.add(name)
            except ChimeraError as exc:
                raise ExportError(f"cannot add the category {name!r} of '{path}': {exc}; nothing was "
                                  "imported") from exc
            added.append(match.prompt)
        ids.append(match.id)
    table = np.asarray(ids, dtype=np.uint16)
    kept = _decode_all(coco, path)  # every mask checked (and small ones kept) before anything changes
    for text in added:  # the same adds in the same order give the same ids as on the copy
        project.classes.add(text)
    annotations, done = 0, []
    try:
        for rel in sorted(coco.sizes):
            labels = table[kept[rel] if rel in kept else coco.label_map(rel)]
            provenance = np.where(labels != 0, np.uint8(Provenance.HUMAN), np.uint8(Provenance.NONE))
            project.save_document(rel, LabelDocument(labels, provenance, ImageState.VERIFIED))
            annotations += len(np.unique(labels[labels != 0]))
            done.append(rel)
        project.save_meta()
    except (OSError, ChimeraError) as exc:
        raise ExportError(f"importing '{path}' stopped after {len(done)} of {len(coco.sizes)} images: "
                          f"{_reason(exc)}; those have the imported labels, every other image kept its own"
                          ) from exc
    return {"path": str(path), "images": len(coco.sizes), "annotations": annotations, "classes_added": added}


_KEEP_DECODED_PIXELS = 64_000_000  # decoded maps kept between the check and the save; beyond: decode again


def _decode_all(coco: CocoFile, path) -> dict[str, np.ndarray]:
    """Decode every image's map once (overlaps and corrupt masks are found before anything is
    written); the maps that fit the budget are returned so they need not be decoded again."""
    kept, budget = {}, _KEEP_DECODED_PIXELS
    for rel in sorted(coco.sizes):
        try:
            labels = coco.label_map(rel)
        except (ValueError, ChimeraError, MemoryError) as exc:
            raise ExportError(f"cannot import '{path}': {_reason(exc)}; nothing was imported") from exc
        if labels.size <= budget:
            kept[rel], budget = labels, budget - labels.size
    return kept


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "not enough memory"
    if isinstance(exc, OSError):
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return f"{reason}{f' ({exc.filename})' if exc.filename else ''}"
    return str(exc)
