"""Read an annotation project's human-verified images for fine-tuning, without opening it for writing.

The app keeps a project open (and OS-locked) while ``chimera-train finetune`` runs in a subprocess,
so this module never takes the project's lock and never writes a byte into it: it reads the plain
files the store documents (``chimera_app/project/store.py``: ``project.json``, ``labels/``,
``provenance/``, ``commit.json`` of a save in flight and the edit ``journal.log``) and replays the
journal over the saved maps, as the store does when it opens a project. Which ``project.json`` is
readable, how journal records are framed and what ``commit.json`` holds are read by the same engine
code the store uses (``chimera_engine.formats.project_files``). The trainer does not
import the app (``chimera_app → engine ← trainer``); the file format is the contract, and the tests
write projects with the app's own store.

What a fine-tune learns from (PAPER.md §1's "ignore" applied to a project):
- only images whose state is ``human-verified`` (newest first: the journal, a committed save's
  entry, project.json);
- inside them only pixels a **person** decided (provenance 2: painted, or a prediction the person
  accepted — accepting turns model pixels into person pixels) that carry one of the project's
  classes; pixels nobody decided (0), model pixels nobody accepted (1), pixels a person erased to
  "unlabeled" (no class to learn) and ids of deleted classes are ``IGNORE`` (255).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np

from chimera_engine.class_names import parse_classes
from chimera_engine.errors import ChimeraError
from chimera_engine.formats.png_masks import read_index_png
from chimera_engine.formats import project_files
from chimera_engine.formats.project_files import (COMMIT_NAME, DATA_DIR_NAME, JOURNAL_NAME, JournalRecord,
                                                  ProjectFileError, read_commit, read_project_json)
from chimera_engine.images import load_image

IGNORE = 255
PERSON = 2  # provenance value of a pixel a person decided (painted or accepted)
VERIFIED = "human-verified"
COMMIT_RETRIES, COMMIT_WAIT_S = 50, 0.1  # how long to wait for an app's save in flight


class ProjectDataError(ChimeraError):
    """The project cannot be read for fine-tuning (missing, damaged, or from a newer Chimera)."""


@dataclasses.dataclass(frozen=True)
class ProjectClass:
    id: int  # the stable id stored in label maps
    phrases: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """What the engine embeds: the phrases joined by "; " (their embeddings are averaged)."""
        return "; ".join(self.phrases)

    @property
    def name(self) -> str:
        return self.phrases[0]


@dataclasses.dataclass
class VerifiedImage:
    """One verified image: the RGB pixels, the training target (class index into the project's class
    list, IGNORE elsewhere) and where a person decided anything (including "unlabeled")."""

    rel: str
    image: np.ndarray  # H x W x 3 uint8
    target: np.ndarray  # H x W uint8 (int32 above 254 classes)
    decided: np.ndarray  # H x W bool: provenance == person
    person_labels: np.ndarray  # H x W: the person's class index, -1 = unlabeled (only meaningful where decided)


@dataclasses.dataclass
class ProjectSnapshot:
    """What a fine-tune needs from ``project.json`` (plus the journal's newer states)."""

    root: Path
    data_dir: Path
    classes: list[ProjectClass]
    model: str | None
    templates: str | list[str] | None  # the project's prompt templates, when it names any
    verified: list[str]  # relative image paths, sorted

    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.classes]

    def class_lut(self) -> np.ndarray:
        """Label-map id → class index (IGNORE for 0, deleted and unknown ids); 65536 entries."""
        lut = np.full(0x10000, IGNORE, np.int32)
        for index, cls in enumerate(self.classes):
            lut[cls.id] = index
        return lut

    def load(self, rel: str, journal: dict[str, list[JournalRecord]] | None = None,
             lut: np.ndarray | None = None) -> VerifiedImage:
        """Image ``rel`` with its saved maps and journal replayed (ProjectDataError when unreadable)."""
        image = load_image(self.root / rel)
        height, width = image.shape[:2]
        labels, provenance = self._saved_maps(rel, height, width)
        records = (journal if journal is not None else read_journal(self.data_dir)).get(rel, [])
        for record in records:
            y0, x0 = record.y0, record.x0
            h, w = record.labels.shape
            if record.image_shape != (height, width) or y0 + h > height or x0 + w > width:
                raise ProjectDataError(f"unsaved edits of '{rel}' were made on an image of another size "
                                       "(was the image replaced?); open the project in Chimera to resolve it")
            labels[y0:y0 + h, x0:x0 + w] = record.labels
            provenance[y0:y0 + h, x0:x0 + w] = record.provenance
        lut = self.class_lut() if lut is None else lut
        decided = provenance == PERSON
        index = lut[labels]
        dtype = np.uint8 if len(self.classes) < IGNORE else np.int32
        target = np.where(decided & (index != IGNORE), index, IGNORE).astype(dtype)
        person = np.where(index == IGNORE, -1, index).astype(np.int32)
        return VerifiedImage(rel, image, target, decided, person)

    def _saved_maps(self, rel: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The saved label and provenance maps of one moment: while the app is renaming a save of
        ``rel`` into place (``commit.json`` lists a rename of its maps whose staged file is still
        there) the two files may be from different saves, so wait for it (milliseconds) and read again."""
        for _ in range(COMMIT_RETRIES):
            maps = self._read_maps(rel, height, width)
            if not self._renaming(rel):
                return maps
            time.sleep(COMMIT_WAIT_S)
        raise ProjectDataError(f"'{rel}' is being saved by another program and its save did not finish; "
                               "run the fine-tune again")

    def _renaming(self, rel: str) -> bool:
        ours = {str(self.data_dir / kind / f"{rel}.png") for kind in ("labels", "provenance")}
        try:
            renames = (read_commit(self.data_dir / COMMIT_NAME) or {"renames": []})["renames"]
        except ProjectFileError:
            return False  # the app reports a damaged commit.json when it opens the project
        return any(str(target) in ours and Path(source).exists() for source, target in renames)

    def _read_maps(self, rel: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        labels_path = self.data_dir / "labels" / f"{rel}.png"
        if not labels_path.exists():  # verified but never saved: every edit is still in the journal
            return np.zeros((height, width), np.uint16), np.zeros((height, width), np.uint8)
        try:
            labels = read_index_png(labels_path).astype(np.uint16)
            data = np.fromfile(self.data_dir / "provenance" / f"{rel}.png", dtype=np.uint8)
            provenance = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        except (OSError, ValueError, ChimeraError) as exc:
            raise ProjectDataError(f"the saved labels of '{rel}' cannot be read ({exc})") from exc
        if provenance is None or provenance.ndim != 2 or provenance.dtype != np.uint8:
            raise ProjectDataError(f"the provenance map of '{rel}' is missing or damaged")
        if labels.shape != (height, width) or provenance.shape != (height, width):
            raise ProjectDataError(f"the saved maps of '{rel}' do not have the image's size {width}x{height} "
                                   "(was the image replaced?)")
        return labels, provenance


def data_dir_of(root: str | Path, project_dir: str | Path | None = None) -> Path:
    return Path(project_dir).resolve() if project_dir is not None else Path(root).resolve() / DATA_DIR_NAME


def read_snapshot(root: str | Path, project_dir: str | Path | None = None) -> ProjectSnapshot:
    """Read ``project.json`` (and the journal's newer image states) of the project of ``root``."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ProjectDataError(f"'{root}' is not a folder of images")
    data_dir = data_dir_of(root, project_dir)
    path = data_dir / "project.json"
    if not path.is_file():
        raise ProjectDataError(f"'{root}' has no Chimera project ({path} is missing): open the folder in "
                               "chimera-app, label and verify some images first")
    try:
        meta = read_project_json(path)
    except ProjectFileError as exc:
        raise ProjectDataError(str(exc)) from exc
    classes = _classes(meta, path)
    states = {str(rel): str(entry.get("state", "unlabeled"))
              for rel, entry in dict(meta.get("images") or {}).items() if isinstance(entry, dict)}
    try:
        commit = read_commit(data_dir / COMMIT_NAME) or {"entries": {}}
    except ProjectFileError:
        commit = {"entries": {}}  # the app reports a damaged commit.json when it opens the project
    for rel, entry in commit["entries"].items():  # saved, not yet in project.json
        states[rel] = str(entry.get("state", "unlabeled"))
    for rel, records in read_journal(data_dir).items():  # edits not yet saved: their state is newer
        states[rel] = records[-1].state
    verified = sorted(rel for rel, state in states.items() if state == VERIFIED and _inside(rel))
    model = meta.get("model")
    templates = meta.get("templates")
    if templates is not None and not isinstance(templates, (str, list)):
        raise ProjectDataError(f"{path}: 'templates' must be a template set name or a list of templates")
    return ProjectSnapshot(root, data_dir, classes, None if model is None else str(model), templates, verified)


def _classes(meta: dict, path: Path) -> list[ProjectClass]:
    try:
        classes = [ProjectClass(int(c["id"]), tuple(str(p) for p in c["phrases"])) for c in meta.get("classes", [])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProjectDataError(f"{path}: the class list is damaged ({exc!r})") from exc
    if any(not 1 <= c.id <= 0xFFFF or not c.phrases for c in classes) or len({c.id for c in classes}) != len(classes):
        raise ProjectDataError(f"{path}: the class list has an invalid or repeated id, or a class without phrases")
    if classes:
        parse_classes([c.prompt for c in classes])  # ClassNameError for a phrase used twice
    return classes


def _inside(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(rel) and not Path(rel).is_absolute() and ".." not in parts and "\\" not in rel


def read_journal(data_dir: Path) -> dict[str, list[JournalRecord]]:
    """Every intact journal record, per image, oldest first; a torn or damaged tail (the app was
    killed mid-append) ends the journal, as in the store."""
    try:
        return project_files.read_journal(data_dir / JOURNAL_NAME)
    except OSError as exc:
        raise ProjectDataError(f"cannot read the edit journal of the project: {exc.strerror or exc}") from exc
