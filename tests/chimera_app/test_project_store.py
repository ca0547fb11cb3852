"""Project store: PNG round trips (8 and 16 bit), journal recovery, locks, damaged files, Qt-free."""

import json
import queue
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from chimera_app.project import (
    ImageState,
    LabelDocument,
    Project,
    ProjectError,
    ProjectLockedError,
    Provenance,
    Region,
)
from chimera_engine.errors import ChimeraError

H, W = 48, 64


@pytest.fixture
def root(tmp_path) -> Path:
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "nested" / "b.jpg"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 48 high, upright 48 wide x 64 high
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images / "rotated.jpg", exif=exif)
    return images


def box(y0, x0, y1, x1) -> Region:
    return Region(y0, x0, np.ones((y1 - y0, x1 - x0), bool))


def prediction(value_left: int, value_right: int):
    ids = np.zeros((H, W), np.uint16)
    ids[:, : W // 2], ids[:, W // 2:] = value_left, value_right
    conf = np.linspace(0.2, 0.9, H * W, dtype=np.float32).reshape(H, W)
    return ids, conf


def test_open_creates_the_project_and_lists_images(root):
    with Project.open(root) as project:
        assert project.data_dir == root.resolve() / ".chimera" and project.data_dir.is_dir()
        assert project.images() == ["a.png", "nested/b.jpg", "rotated.jpg"]
        assert project.state("a.png") == ImageState.UNLABELED and project.uncertainty("a.png") is None
        assert project.load_document("rotated.jpg").shape == (W, H)  # upright size, EXIF applied
    data = json.loads((root / ".chimera" / "project.json").read_text())
    assert data["format"] == "chimera-project" and data["version"] == 1 and data["next_class_id"] == 1


def test_project_dir_elsewhere_leaves_the_image_folder_alone(root, tmp_path):
    inside = root / "labels"  # a visible folder inside the images: its PNGs are not images
    with Project.open(root, project_dir=inside) as project:
        project.classes.add("x")
        doc = project.load_document("a.png")
        doc.paint(box(0, 0, 4, 4), 1)
        project.save_document("a.png", doc)
        project.refresh_images()
        assert project.images() == ["a.png", "nested/b.jpg", "rotated.jpg"]
    assert not (root / ".chimera").exists() and (inside / "labels" / "a.png.png").exists()


def test_save_and_load_round_trip_8bit(root):
    with Project.open(root) as project:
        project.classes.add("car")
        project.classes.add("tree")
        project.classes.set_color(2, (10, 20, 30))
        doc = project.load_document("a.png")
        doc.set_prediction(*prediction(1, 2))
        doc.paint(box(5, 5, 15, 20), 0)
        doc.paint(box(30, 40, 40, 50), 1)
        project.save_document("a.png", doc)
        labels, prov, conf = doc.labels.copy(), doc.provenance.copy(), doc.confidence.copy()
    with Project.open(root) as project:
        again = project.load_document("a.png")
        np.testing.assert_array_equal(again.labels, labels)
        np.testing.assert_array_equal(again.provenance, prov)
        assert again.labels.dtype == np.uint16 and again.provenance.dtype == np.uint8
        assert np.abs(again.confidence - conf).max() <= 0.5 / 255 + 1e-6 and again.prediction is None
        assert again.state == project.state("a.png") == ImageState.IN_PROGRESS  # the new state round-trips
        assert project.uncertainty("a.png") == pytest.approx(1 - conf.mean(), abs=1e-6)
        assert project.classes.by_id(2).color == (10, 20, 30)
    png = Image.open(root / ".chimera" / "labels" / "a.png.png")
    assert png.mode == "P" and png.getpalette()[6:9] == [10, 20, 30]  # the class colour for viewers
    np.testing.assert_array_equal(np.array(png), labels)
    assert cv2.imread(str(root / ".chimera" / "provenance" / "a.png.png"), cv2.IMREAD_UNCHANGED).max() == 2


def test_round_trip_16bit_beyond_255_classes(root):
    with Project.open(root) as project:
        for i in range(300):
            project.classes.add(f"class {i}")
        doc = project.load_document("nested/b.jpg")
        doc.paint(box(0, 0, 10, 10), 300)
        doc.paint(box(10, 10, 20, 20), 256)
        doc.paint(box(20, 20, 30, 30), 7)
        project.save_document("nested/b.jpg", doc)
        saved = cv2.imread(str(project.data_dir / "labels" / "nested" / "b.jpg.png"), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.uint16 and saved.ndim == 2
        np.testing.assert_array_equal(saved, doc.labels)
        labels = doc.labels.copy()
    with Project.open(root) as project:
        again = project.load_document("nested/b.jpg")
        np.testing.assert_array_equal(again.labels, labels)
        again.paint(box(0, 0, 20, 20), 0)  # back to ids <= 255: an 8-bit file again
        project.save_document("nested/b.jpg", again)
        assert Image.open(project.data_dir / "labels" / "nested" / "b.jpg.png").mode == "P"
        np.testing.assert_array_equal(project.load_document("nested/b.jpg").labels, again.labels)


def test_recorded_edits_survive_a_close_without_save(root):
    with Project.open(root) as project:
        project.classes.add("car")
        project.save_meta()
        doc = project.load_document("a.png")
        for i in range(5):
            project.record("a.png", doc, doc.paint(box(i * 5, i * 5, i * 5 + 8, i * 5 + 8), 1))
        assert project.state("a.png") == ImageState.IN_PROGRESS
        expected = doc.labels.copy(), doc.provenance.copy()
    assert (root / ".chimera" / "journal.log").stat().st_size > 0
    with Project.open(root) as project:
        assert project.recovered == ["a.png"] and project.recovery_problems == []
        again = project.load_document("a.png")
        np.testing.assert_array_equal(again.labels, expected[0])
        np.testing.assert_array_equal(again.provenance, expected[1])
        assert again.state == ImageState.IN_PROGRESS
    assert (root / ".chimera" / "journal.log").stat().st_size == 0  # recovered = written to the PNGs


def test_undo_and_redo_are_recorded_too(root):
    with Project.open(root) as project:
        add_classes(project, 4)
        doc = project.load_document("a.png")
        before = doc.labels.copy(), doc.provenance.copy(), doc.state
        patch = doc.paint(box(0, 0, 10, 10), 4)
        project.record("a.png", doc, patch)
        doc.revert(patch)
        project.record("a.png", doc, patch)
    with Project.open(root) as project:
        again = project.load_document("a.png")
        np.testing.assert_array_equal(again.labels, before[0])
        np.testing.assert_array_equal(again.provenance, before[1])
        assert again.state == before[2] == ImageState.UNLABELED


def add_classes(project, n):
    for i in range(n):
        project.classes.add(f"class {i}")


def test_a_torn_last_record_is_ignored(root):
    with Project.open(root) as project:
        add_classes(project, 3)
        doc = project.load_document("a.png")
        project.record("a.png", doc, doc.paint(box(0, 0, 4, 4), 1))
        first = doc.labels.copy()
        project.record("a.png", doc, doc.paint(box(10, 10, 30, 30), 2))
    journal = root / ".chimera" / "journal.log"
    data = journal.read_bytes()
    journal.write_bytes(data[:-7])  # the second record was cut short by a kill
    with Project.open(root) as project:
        np.testing.assert_array_equal(project.load_document("a.png").labels, first)
        assert "incomplete" in project.recovery_problems[0]
    with Project.open(root) as project:  # a flipped byte (bad checksum) reads as the same damage
        doc = project.load_document("a.png")
        project.record("a.png", doc, doc.paint(box(40, 40, 44, 44), 3))
        project.record("a.png", doc, doc.paint(box(0, 40, 4, 44), 3))
    data = bytearray(journal.read_bytes())
    second = struct.unpack_from("<I", data, 4)[0] + 12  # where the second record starts
    data[second + 20] ^= 0xFF
    journal.write_bytes(bytes(data))
    with Project.open(root) as project:
        labels = project.load_document("a.png").labels
        assert (labels[40:44, 40:44] == 3).all() and not (labels[:4, 40:44] == 3).any()


def test_saving_one_image_keeps_the_other_images_journal(root):
    with Project.open(root) as project:
        add_classes(project, 3)
        a, b = project.load_document("a.png"), project.load_document("nested/b.jpg")
        project.record("a.png", a, a.paint(box(0, 0, 5, 5), 1))
        project.record("nested/b.jpg", b, b.paint(box(0, 0, 6, 6), 2))
        project.record("a.png", a, a.paint(box(5, 5, 9, 9), 1))
        project.save_document("a.png", a)
        assert (project.data_dir / "journal.log").stat().st_size > 0
        project.record("nested/b.jpg", b, b.paint(box(20, 20, 26, 26), 3))  # appends after the rewrite
        b_labels = b.labels.copy()
    with Project.open(root) as project:
        assert project.recovered == ["nested/b.jpg"]
        np.testing.assert_array_equal(project.load_document("nested/b.jpg").labels, b_labels)


def test_a_second_open_in_the_same_process_is_refused(root):
    project = Project.open(root)
    with pytest.raises(ProjectLockedError, match=r"pid \d+ on .*lock file") as caught:
        Project.open(root)
    assert isinstance(caught.value, ChimeraError)
    project.close()
    project.close()  # twice is harmless
    Project.open(root).close()  # released


def test_a_corrupt_label_png_is_reported_and_left_alone(root):
    with Project.open(root) as project:
        doc = project.load_document("a.png")
        doc.paint(box(0, 0, 5, 5), 1)
        project.save_document("a.png", doc)
        project.record("a.png", doc, doc.paint(box(10, 10, 15, 15), 1))
    labels = root / ".chimera" / "labels" / "a.png.png"
    labels.write_bytes(labels.read_bytes()[:40])  # truncated
    damaged = labels.read_bytes()
    with Project.open(root) as project:  # opens anyway: the problem is reported, the edit kept
        assert project.recovered == [] and "a.png" in project.recovery_problems[0]
        with pytest.raises(ProjectError, match="labels of 'a.png' cannot be read"):
            project.load_document("a.png")
    assert labels.read_bytes() == damaged
    assert (root / ".chimera" / "journal.log").stat().st_size > 0


def test_a_label_map_of_the_wrong_size_is_refused(root):
    with Project.open(root) as project:
        doc = project.load_document("a.png")
        doc.paint(box(0, 0, 5, 5), 1)
        project.save_document("a.png", doc)
        with pytest.raises(ProjectError, match="64x48 but the image is 48x64"):
            project.save_document("rotated.jpg", doc)
    saved = (root / ".chimera" / "labels" / "a.png.png").read_bytes()
    cv2.imwrite(str(root / "a.png"), np.zeros((32, 32, 3), np.uint8))  # the image was replaced
    with Project.open(root) as project, pytest.raises(ProjectError, match="64x48 but the image is 32x32"):
        project.load_document("a.png")
    assert (root / ".chimera" / "labels" / "a.png.png").read_bytes() == saved


def test_deleted_classes_come_back_unlabeled(root):
    with Project.open(root) as project:
        project.classes.add("a")
        project.classes.add("b")
        doc = project.load_document("a.png")
        doc.paint(box(0, 0, 5, 5), 1)
        doc.paint(box(5, 5, 10, 10), 2)
        project.save_document("a.png", doc)
        project.classes.remove(2)
        again = project.load_document("a.png")
        assert (again.labels[:5, :5] == 1).all() and not (again.labels == 2).any()
        assert (again.provenance[5:10, 5:10] == Provenance.NONE).all()


def test_damaged_or_newer_project_json_is_refused_and_kept(root):
    meta = root / ".chimera" / "project.json"
    Project.open(root).close()
    for text, message in [("{not json", "cannot read"), ('{"format": "other"}', "not a Chimera project"),
                          ('{"format": "chimera-project", "version": 2}', "newer Chimera"),
                          ('{"format": "chimera-project", "version": 1, "images": {"a.png": {"state": "??"}}}',
                           "damaged")]:
        meta.write_text(text)
        with pytest.raises(ProjectError, match=message):
            Project.open(root)
        assert meta.read_text() == text
    meta.unlink()
    Project.open(root).close()  # and the lock was released after each failure


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ProjectError, match="no such folder"):
        Project.open(tmp_path / "nope")


def test_the_project_package_never_imports_qt():
    package = Path(__file__).resolve().parents[2] / "chimera_app" / "project"
    sources = list(package.glob("*.py"))
    assert len(sources) >= 6
    assert not [p.name for p in sources if "PySide6" in p.read_text() or "QtCore" in p.read_text()]


def copy_of(doc) -> LabelDocument:
    copy = LabelDocument(doc.labels.copy(), doc.provenance.copy(), doc.state)
    return copy


def test_a_save_of_an_older_copy_keeps_the_edits_recorded_after_it(root):
    """A saver thread writes a copy made earlier: edits recorded since must stay in the journal."""
    with Project.open(root) as project:
        add_classes(project, 3)
        doc = project.load_document("a.png")
        project.record("a.png", doc, doc.paint(box(0, 0, 4, 4), 1))
        snapshot, mark = copy_of(doc), project.journal_mark("a.png")
        project.record("a.png", doc, doc.paint(box(10, 10, 14, 14), 2))  # after the copy
        project.save_document("a.png", snapshot, journal_mark=mark)
        assert project.state("a.png") == ImageState.IN_PROGRESS
        expected = doc.labels.copy()
    with Project.open(root) as project:
        assert project.recovered == ["a.png"]
        np.testing.assert_array_equal(project.load_document("a.png").labels, expected)


def test_recording_while_another_thread_saves(root):
    with Project.open(root) as project:
        add_classes(project, 3)
        doc = project.load_document("a.png")
        jobs: queue.Queue = queue.Queue()

        def saver():
            while (job := jobs.get()) is not None:
                project.save_document("a.png", *job)

        thread = threading.Thread(target=saver)
        thread.start()
        rng = np.random.default_rng(5)
        for i in range(60):
            y, x = rng.integers(0, H - 6, 2)
            patch = doc.paint(Region(int(y), int(x), rng.random((6, 6)) < 0.5), int(rng.integers(0, 4)))
            if patch is not None:
                project.record("a.png", doc, patch)
            if i % 4 == 0:
                jobs.put((copy_of(doc), project.journal_mark("a.png")))
        jobs.put(None)
        thread.join()
        expected = doc.labels.copy(), doc.provenance.copy()
    with Project.open(root) as project:
        again = project.load_document("a.png")
        np.testing.assert_array_equal(again.labels, expected[0])
        np.testing.assert_array_equal(again.provenance, expected[1])
