"""The project store under faults: a full disk, SIGKILL at every step of a save, a lock someone
deletes, damaged files. Nothing committed is lost, label maps and project.json never disagree,
and every refusal is a ProjectError subclass with a message."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chimera_app.project import ImageState, Project, ProjectError, ProjectLockedError, Region
from chimera_app.project import store
from chimera_app.project.exports import ExportError, export_coco, export_png_masks, import_coco
from chimera_app.project.store import EditNotSavedError, SaveError
from tests.hostile.conftest import REPO, enospc, labelled, write_png


def _files(data_dir: Path) -> dict[str, bytes]:
    """Every saved file of a project (not the lock), for "nothing changed" checks."""
    return {p.relative_to(data_dir).as_posix(): p.read_bytes() for p in sorted(data_dir.rglob("*"))
            if p.is_file() and p.name != "lock"}


def _replace_whole_map(doc) -> None:
    """A change that is saved but never journalled (as a prediction is): every pixel 1, 'predicted'."""
    doc.labels[:] = 1
    doc.provenance[:] = 1
    doc.state = ImageState.PREDICTED


def _paint(doc, y0: int, x0: int, h: int, w: int, class_id: int = 1):
    mask = np.ones((h, w), bool)
    return doc.paint(Region(y0, x0, mask), class_id)


@pytest.fixture
def saved(image_folder):
    """A project whose a.png holds saved, verified labels; returns (image folder, those labels)."""
    with Project.open(image_folder) as project:
        labels = labelled(project, "a.png")
    return image_folder, labels


# --------------------------------------------------------------------------------------- full disk
def test_an_edit_the_journal_cannot_take_is_refused_and_leaves_no_trace(saved, monkeypatch):
    root, labels = saved
    project = Project.open(root)
    doc = project.load_document("a.png")
    journal_size = (root / ".chimera" / "journal.log").stat().st_size
    patch = _paint(doc, 6, 10, 2, 5)
    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(EditNotSavedError, match="could not be saved .the disk is full.*undone on screen"):
        project.record("a.png", doc, patch)
    monkeypatch.undo()
    assert (root / ".chimera" / "journal.log").stat().st_size == journal_size
    project.close()
    with Project.open(root) as again:
        assert np.array_equal(again.load_document("a.png").labels, labels)
        assert again.recovery_problems == []


def test_a_save_on_a_full_disk_changes_no_file_and_keeps_the_edit(saved, monkeypatch):
    root, labels = saved
    project = Project.open(root)
    doc = project.load_document("a.png")
    project.record("a.png", doc, _paint(doc, 6, 10, 2, 5))  # journalled before the disk filled up
    before = _files(root / ".chimera")
    monkeypatch.setattr(os, "write", enospc)
    with pytest.raises(SaveError, match="the disk is full.*last save is intact"):
        project.save_document("a.png", doc)
    monkeypatch.undo()
    assert _files(root / ".chimera") == before
    project.close()
    with Project.open(root) as again:  # the journal still had the edit
        assert again.load_document("a.png").labels[6:8, 10:15].tolist() == [[1] * 5] * 2


def test_project_json_refused_after_the_maps_are_in_place_completes_at_the_next_open(saved, monkeypatch):
    root, _ = saved
    project = Project.open(root)
    doc = project.load_document("a.png")
    _replace_whole_map(doc)
    real = store.atomic_write_json

    def refuse_project_json(path, obj):
        if Path(path).name == "project.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(store, "atomic_write_json", refuse_project_json)
    with pytest.raises(SaveError, match="completes when the project is next opened"):
        project.save_document("a.png", doc)
    with pytest.raises(SaveError):
        project.close()  # project.json still refused; the lock is released all the same
    monkeypatch.undo()
    with Project.open(root) as again:
        assert "a.png" in again.recovered
        assert again.state("a.png") == ImageState.PREDICTED
        assert (again.load_document("a.png").labels == 1).all()
        assert not (root / ".chimera" / store.COMMIT_NAME).exists()


def test_two_saves_refused_at_project_json_both_complete_at_the_next_open(saved, monkeypatch):
    root, _ = saved
    project = Project.open(root)
    docs = {rel: project.load_document(rel) for rel in ("a.png", "b.png")}
    real = store.atomic_write_json
    monkeypatch.setattr(store, "atomic_write_json", lambda path, obj: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")) if Path(path).name == "project.json" else real(path, obj))
    for doc in docs.values():
        _replace_whole_map(doc)
    for rel, doc in docs.items():
        with pytest.raises(SaveError, match="completes when the project is next opened"):
            project.save_document(rel, doc)
    project._journal.close()
    project._lock.release()  # as a kill would: project.json was never written
    monkeypatch.undo()
    with Project.open(root) as again:
        assert sorted(again.recovered) == ["a.png", "b.png"]
        for rel in docs:
            assert again.state(rel) == ImageState.PREDICTED and (again.load_document(rel).labels == 1).all()


def test_exports_to_a_full_disk_keep_the_older_export(saved, tmp_path, monkeypatch):
    root, _ = saved
    with Project.open(root) as project:
        export_coco(project, tmp_path / "out.json")
        old = (tmp_path / "out.json").read_bytes()
        monkeypatch.setattr(os, "write", enospc)
        with pytest.raises(ExportError, match="the disk is full.*older file there was left"):
            export_coco(project, tmp_path / "out.json")
        with pytest.raises(ExportError, match="stopped after 0 of 1 masks: the disk is full"):
            export_png_masks(project, tmp_path / "masks")
        monkeypatch.undo()
    assert (tmp_path / "out.json").read_bytes() == old


def test_an_import_interrupted_by_a_full_disk_says_what_was_imported(saved, tmp_path, monkeypatch):
    root, labels = saved
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
                       {"id": 2, "file_name": "b.png", "width": 16, "height": 12}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with Project.open(root) as project:
        monkeypatch.setattr(os, "write", enospc)
        with pytest.raises(ExportError, match="stopped after 0 of 2 images: .*every other image kept its own"):
            import_coco(project, tmp_path / "c.json")
        monkeypatch.undo()
        assert np.array_equal(project.load_document("a.png").labels, labels)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 256 KiB file system (needs root and mount), or skip."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_a_really_full_file_system(tmp_path, tiny_tmpfs):
    root = tmp_path / "images"
    write_png(root / "big.png", 600, 800)
    with Project.open(root, tiny_tmpfs / "project") as project:
        project.classes.add("thing")
        project.save_meta()
        doc = project.load_document("big.png")
        noise = np.random.default_rng(0).integers(0, 2, doc.shape).astype(np.uint16)  # incompressible
        doc.set_prediction(noise, np.random.default_rng(1).random(doc.shape).astype(np.float32))
        before = _files(tiny_tmpfs / "project")
        with pytest.raises(SaveError, match="disk is full"):
            project.save_document("big.png", doc)
        assert _files(tiny_tmpfs / "project") == before
        assert project.state("big.png") == ImageState.UNLABELED


# ------------------------------------------------------------------------------------------ kills
_CHILD = """
import os, signal, sys
import numpy as np
from chimera_app.project import ImageState, Project, Region
from chimera_app.project import store
root, point = sys.argv[1], sys.argv[2]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

project = Project.open(root)
doc = project.load_document("a.png")
if point == "mid_journal":
    real_write = os.write
    def half(fd, data):
        real_write(fd, bytes(data)[: len(data) // 2])
        os.fsync(fd)
        die()
    os.write = half
    project.record("a.png", doc, doc.paint(Region(6, 10, np.ones((2, 5), bool)), 1))
if point.startswith("prediction"):  # saved, never journalled: the whole map and the state change
    doc.labels[:] = 1
    doc.provenance[:] = 1
    doc.state = ImageState.PREDICTED
else:
    project.record("a.png", doc, doc.paint(Region(6, 10, np.ones((2, 5), bool)), 1))
if point.endswith("before_commit"):
    real_json = store.atomic_write_json
    store.atomic_write_json = lambda path, obj: die() if path.name == store.COMMIT_NAME else real_json(path, obj)
elif point.endswith("after_commit"):
    store._apply_renames = lambda renames, deletes: die()
elif point.endswith("mid_rename"):
    def first_only(renames, deletes):
        os.replace(*renames[0])
        die()
    store._apply_renames = first_only
project.save_document("a.png", doc)
"""


@pytest.mark.parametrize("point", ["mid_journal", "edit_before_commit", "edit_after_commit", "edit_mid_rename",
                                   "prediction_before_commit", "prediction_mid_rename"])
def test_sigkill_during_a_save(saved, point):
    root, labels = saved
    child = subprocess.run([sys.executable, "-c", _CHILD, str(root), point], capture_output=True, text=True,
                           timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert child.returncode == -signal.SIGKILL, child.stderr
    with Project.open(root) as again:
        doc = again.load_document("a.png")
        state = again.state("a.png")
        assert not (root / ".chimera" / store.COMMIT_NAME).exists()
        assert not any((root / ".chimera" / store.STAGING_DIR_NAME).glob("*"))
    edited = labels.copy()
    edited[6:8, 10:15] = 1
    if point == "mid_journal":  # the edit was never acknowledged: the saved labels, exactly
        assert np.array_equal(doc.labels, labels) and state == ImageState.VERIFIED
    elif point.startswith("edit"):  # journalled before the kill: never lost, whatever step died
        assert np.array_equal(doc.labels, edited) and state == ImageState.VERIFIED
    elif point == "prediction_before_commit":  # nothing committed: the old save, consistent
        assert np.array_equal(doc.labels, labels) and state == ImageState.VERIFIED
    else:  # past the commit point: rolled forward, maps and state together
        assert (doc.labels == 1).all() and state == ImageState.PREDICTED


# ------------------------------------------------------------------------------------------ locks
def test_deleting_the_lock_file_does_not_let_a_second_writer_in(saved):
    root, _ = saved
    with Project.open(root) as first:
        (root / ".chimera" / "lock").unlink()
        with pytest.raises(ProjectLockedError, match="already open"):
            Project.open(root)
        assert not (root / ".chimera" / "lock").exists()  # the refused opener recreated nothing
        doc = first.load_document("a.png")
        first.save_document("a.png", doc)  # the holder carries on


def test_a_project_folder_replaced_while_open_is_never_written(saved):
    root, _ = saved
    first = Project.open(root)
    doc = first.load_document("a.png")
    (root / ".chimera").rename(root / "moved-away")
    with Project.open(root) as second:  # a fresh, empty project in a new .chimera
        second.classes.add("other")
        second.save_meta()
        before = _files(root / ".chimera")
        with pytest.raises(ProjectLockedError, match="removed or replaced"):
            first.save_document("a.png", doc)
        with pytest.raises(ProjectLockedError):
            first.record("a.png", doc, _paint(doc, 0, 0, 1, 1))
        assert _files(root / ".chimera") == before
    first._journal.close()
    first._lock.release()


def test_a_second_open_in_the_same_process(saved):
    root, _ = saved
    with Project.open(root):
        with pytest.raises(ProjectLockedError, match=rf"pid {os.getpid()}"):
            Project.open(root)


# -------------------------------------------------------------------------------- damaged files
def _open_refused(root: Path, *words: str) -> None:
    with pytest.raises(ProjectError) as caught:
        Project.open(root)
    assert all(w in str(caught.value) for w in words), str(caught.value)


@pytest.mark.parametrize("content,words", [
    (b'{"format": "chimera-project", "version": 1, "classes": [{"phrases": ["caf\xe9"]}]}', ["cannot read"]),
    (b"[" * 100000 + b"]" * 100000, ["cannot read"]),
    (b"", ["cannot read"]),
    (json.dumps({"format": "chimera-project", "version": 1, "next_class_id": 3001,
                 "classes": [{"id": k, "phrases": [f"c{k}"], "color": [1, 2, 3], "hidden": False}
                             for k in range(1, 3001)]}).encode(), ["3000 classes"]),
], ids=["not_utf8", "deeply_nested", "empty", "too_many_classes"])
def test_damaged_project_json_is_reported_and_left_alone(saved, content, words):
    root, _ = saved
    (root / ".chimera" / "project.json").write_bytes(content)
    _open_refused(root, *words)
    assert (root / ".chimera" / "project.json").read_bytes() == content


@pytest.mark.parametrize("content", ["{broken", json.dumps({"entries": {"a.png": {"state": "predicted"}},
                                                             "renames": [["/etc/passwd", "/tmp/x"]], "deletes": []})],
                         ids=["commit_not_json", "commit_outside_project"])
def test_damaged_commit_record(saved, content):
    root, _ = saved
    (root / ".chimera" / store.COMMIT_NAME).write_text(content)
    _open_refused(root, "unfinished save", "damaged")
    assert (root / ".chimera" / store.COMMIT_NAME).read_text() == content


def test_saved_labels_replaced_by_a_header_bomb_are_not_decoded(saved, monkeypatch):
    from tests.hostile.test_hostile_images import _png_declaring

    root, _ = saved
    _png_declaring(root / ".chimera" / "labels" / "a.png.png", 20000, 20000)
    with Project.open(root) as project:
        with pytest.raises(ProjectError, match="20000x20000 but the image is 20x10"):
            project.load_document("a.png")


def test_garbage_appended_to_the_journal_is_reported(saved):
    root, labels = saved
    with open(root / ".chimera" / "journal.log", "ab") as journal:
        journal.write(b"CJR1" + os.urandom(64))
    with Project.open(root) as project:
        assert any("incomplete" in p for p in project.recovery_problems)
        assert np.array_equal(project.load_document("a.png").labels, labels)


def test_a_journal_record_naming_a_path_outside_the_folder(saved):
    from chimera_app.project.journal import Journal, JournalRecord

    root, labels = saved
    journal = Journal(root / ".chimera" / "journal.log")
    journal.append(JournalRecord("../outside.png", 0, 0, np.ones((1, 1), np.uint16), np.full((1, 1), 2, np.uint8),
                                 "human-verified", (10, 20)))
    journal.close()
    with Project.open(root) as project:
        assert any("../outside.png" in p and "not a relative image path" in p for p in project.recovery_problems)
        assert np.array_equal(project.load_document("a.png").labels, labels)
