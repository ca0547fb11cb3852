"""chimera-label --project: predictions into the project, human work kept, resume, exports, errors."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest

from chimera_app.label_cli import main
from chimera_app.project import ImageState, Project, Provenance, Region
from chimera_engine import load_image, load_segmenter
from chimera_engine.formats.coco import validate_coco

H, W = 48, 64


@pytest.fixture
def root(tmp_path):
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.png", "nested/b.png", "verified.png"):
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        img[: H // 2] = (30, 30, 220)
        cv2.imwrite(str(images / name), img)
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return images


def run(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def test_prelabel_into_a_project_keeps_human_work(root, tiny_checkpoint, tmp_path, one_torch_thread):
    with Project.open(root) as project:
        project.classes.add("red disc")
        doc = project.load_document("verified.png")
        doc.paint(Region(0, 0, np.ones((10, 10), bool)), 1)
        doc.state = ImageState.VERIFIED  # painting alone leaves it in progress: verifying is a decision
        project.save_document("verified.png", doc)
        verified = doc.labels.copy(), doc.provenance.copy()
        doc = project.load_document("a.png")  # partly painted, not verified: its human pixels stay
        doc.paint(Region(5, 5, np.ones((4, 4), bool)), 1)
        doc.state = ImageState.PREDICTED
        project.save_document("a.png", doc)

    code, err = run("--project", root, "--classes", "red disc, green; grass", "--model", tiny_checkpoint,
                    "--device", "cpu", "--quiet", "--min-confidence", "0.4", "--out", tmp_path / "c.json")
    assert code == 0, err
    assert "labelled 2 images, 1 left as they were" in err and "skipped corrupt.jpg" in err

    seg = load_segmenter(tiny_checkpoint, device="cpu")
    with Project.open(root) as project:
        assert [c.prompt for c in project.classes] == ["red disc", "green; grass"] and project.model == tiny_checkpoint
        for rel in ("a.png", "nested/b.png"):
            doc = project.load_document(rel)
            seg.set_image(load_image(root / rel))
            out = seg.segment(["red disc", "green; grass"], min_confidence=0.4)
            expected = np.asarray([0, 1, 2], np.uint16)[out.labels + 1]
            human = doc.provenance == Provenance.HUMAN
            np.testing.assert_array_equal(doc.labels[~human], expected[~human])
            np.testing.assert_array_equal(doc.provenance[~human] == Provenance.MODEL, expected[~human] != 0)
            assert project.state(rel) == ImageState.PREDICTED and project.uncertainty(rel) is not None
        a = project.load_document("a.png")
        assert (a.labels[5:9, 5:9] == 1).all() and (a.provenance[5:9, 5:9] == Provenance.HUMAN).all()
        again = project.load_document("verified.png")
        np.testing.assert_array_equal(again.labels, verified[0])
        np.testing.assert_array_equal(again.provenance, verified[1])
    data = json.loads((tmp_path / "c.json").read_text())
    assert validate_coco(data, expected_classes=["red disc", "green"]) == []
    assert [i["file_name"] for i in data["images"]] == ["a.png", "nested/b.png", "verified.png"]

    code, err = run("--project", root, "--model", tiny_checkpoint, "--device", "cpu", "--quiet", "--skip-predicted")
    # resume: only the corrupt image is left, and it fails again: nothing could be written
    assert code == 1 and "labelled 0 images, 3 left as they were (human-verified, in progress or predicted), 1 failed" in err
    (root / "corrupt.jpg").unlink()
    code, err = run("--project", root, "--model", tiny_checkpoint, "--quiet", "--skip-predicted")
    assert code == 0 and "labelled 0 images, 3 left as they were" in err and "tiny" not in err  # no model loaded


def test_project_errors_are_reported(root, tiny_checkpoint):
    code, err = run("--project", root, "--model", tiny_checkpoint, "--quiet")
    assert code == 1 and "no classes" in err
    with Project.open(root):
        code, err = run("--project", root, "--classes", "x", "--model", tiny_checkpoint, "--quiet")
    assert code == 1 and "already open" in err
    # A background word a class owns is left out (chimera_engine.background); two that clash are refused.
    code, err = run("--project", root, "--classes", "y", "--background", "X, x", "--model", tiny_checkpoint)
    assert code == 2 and "'x'" in err  # a class-list error: exit 2
    with Project.open(root) as project:
        assert len(project.classes) == 0  # a refused class list changed nothing
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        main([str(root), "--project", str(root), "--classes", "x"])


def test_a_version_checkpoint_becomes_the_active_version_not_the_projects_model(root, tiny_checkpoint):
    import shutil

    from chimera_engine.formats.model_versions import add_version, models_dir, read_index

    with Project.open(root) as project:
        project.classes.add("red disc")
        project.model = tiny_checkpoint
        project.save_meta()
        models = models_dir(project.data_dir)

    def write(name, checkpoint, metrics):
        shutil.copyfile(tiny_checkpoint, checkpoint)
        metrics.write_text("{}")
        return {}

    add_version(models, write)
    code, err = run("--project", root, "--model", models / "v1.safetensors", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert read_index(models)["active"] == "v1"
    with Project.open(root) as project:
        assert project.model == tiny_checkpoint  # the base a rollback returns to
    code, err = run("--project", root, "--model", tiny_checkpoint, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert read_index(models)["active"] is None
