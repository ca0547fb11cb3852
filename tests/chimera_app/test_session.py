"""Session and Saver without Qt: what an edit means, the journal, undo/redo, previews, saving."""

import numpy as np
import pytest

from chimera_app.editing import tools
from chimera_app.project import ImageState, Project, Provenance, Region
from chimera_app.session import UNDO_IMAGES, Saver, Session

from .service_harness import write_image

H, W = 48, 64


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for i in range(UNDO_IMAGES + 2):
        write_image(root / f"img{i}.png", i)
    with Project.open(root) as p:
        p.classes.add("road")
        p.classes.add("car")
        yield p


@pytest.fixture
def session(project):
    s = Session(project)
    s.open_image("img0.png")
    yield s
    s.saver.close()


def box(y0, x0, y1, x1) -> Region:
    return Region(y0, x0, np.ones((y1 - y0, x1 - x0), bool))


def prediction(class_id: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((H, W), np.uint16)
    ids[:, : W // 2] = class_id
    return ids, np.full((H, W), 0.7, np.float32)


def test_paint_needs_a_class_and_erase_does_not(session):
    assert session.paint(box(0, 0, 4, 4)) is None  # no active class: nothing happens
    road, car = session.project.classes.ids()
    session.active_class = road
    patch = session.paint(box(0, 0, 4, 4))
    assert patch is not None and (session.doc.labels[:4, :4] == road).all()
    assert session.doc.state == ImageState.IN_PROGRESS  # a person decided pixels; verifying is a decision
    session.paint(box(0, 0, 2, 2), erase=True)
    assert (session.doc.labels[:2, :2] == 0).all() and (session.doc.labels[2:4, 2:4] == road).all()


def test_protect_others_keeps_other_visible_classes(session):
    road, car = session.project.classes.ids()
    session.active_class = car
    session.paint(box(0, 0, 8, 8))
    session.active_class, session.protect_others = road, True
    session.paint(box(0, 0, 16, 16))
    assert (session.doc.labels[:8, :8] == car).all() and (session.doc.labels[8:16, 8:16] == road).all()
    session.project.classes.set_hidden(car, True)  # a hidden class is not protected
    session.paint(box(0, 0, 16, 16))
    assert (session.doc.labels[:16, :16] == road).all()


def test_subtract_removes_only_the_active_class(session):
    road, car = session.project.classes.ids()
    session.active_class = road
    session.paint(box(0, 0, 8, 8))
    session.active_class = car
    session.paint(box(0, 8, 8, 16))
    session.active_class = road
    session.subtract(box(0, 0, 8, 16))
    assert (session.doc.labels[:8, :8] == 0).all() and (session.doc.labels[:8, 8:16] == car).all()


def test_predictions_never_overwrite_people_and_previews_change_nothing(session):
    road, car = session.project.classes.ids()
    session.active_class = car
    session.paint(box(0, 0, 4, 4))
    ids, confidence = prediction(road)
    shown = session.preview(ids)
    assert (shown[:4, :4] == car).all() and (shown[10:, : W // 2] == road).all()
    assert not (session.doc.labels[10:, : W // 2] == road).any()  # a preview is not stored
    session.set_prediction(ids, confidence)
    assert (session.doc.labels[:4, :4] == car).all() and (session.doc.labels[10:, : W // 2] == road).all()
    assert (session.doc.provenance[10:, : W // 2] == Provenance.MODEL).all()


def test_accept_and_verified_are_undoable_patches(session):
    road, _ = session.project.classes.ids()
    session.set_prediction(*prediction(road))
    assert session.doc.state == ImageState.PREDICTED
    session.accept(class_id=road)
    assert (session.doc.provenance[:, : W // 2] == Provenance.HUMAN).all()
    assert session.doc.state == ImageState.IN_PROGRESS  # one class accepted: not the whole image
    session.mark_verified()
    assert session.doc.state == ImageState.VERIFIED and session.mark_verified() is None
    session.undo()
    assert session.doc.state == ImageState.IN_PROGRESS
    session.undo()
    assert (session.doc.provenance[:, : W // 2] == Provenance.MODEL).all()
    session.redo()
    assert (session.doc.provenance[:, : W // 2] == Provenance.HUMAN).all()


def test_undo_redo_are_bit_exact_and_journalled(session, project):
    road, car = project.classes.ids()
    before = session.doc.labels.copy(), session.doc.provenance.copy()
    session.active_class = road
    session.paint(tools.brush((H, W), [(5.0, 5.0), (40.0, 30.0)], 4.0))
    session.active_class = car
    session.paint(box(20, 20, 30, 30))
    after = session.doc.labels.copy()
    assert session.undo() is not None and session.undo() is not None and session.undo() is None
    np.testing.assert_array_equal(session.doc.labels, before[0])
    np.testing.assert_array_equal(session.doc.provenance, before[1])
    session.redo(), session.redo()
    np.testing.assert_array_equal(session.doc.labels, after)
    session.saver.flush()
    np.testing.assert_array_equal(project.load_document("img0.png").labels, after)  # saved as well


def test_histories_are_kept_for_recent_images_and_dropped_on_class_delete(session, project):
    road, _ = project.classes.ids()
    session.active_class = road
    session.paint(box(0, 0, 4, 4))
    session.open_image("img1.png")
    session.open_image("img0.png")
    assert session.undo() is not None  # still there after a visit elsewhere
    session.redo()
    for i in range(1, UNDO_IMAGES + 1):
        session.open_image(f"img{i}.png")
    session.open_image("img0.png")
    assert session.undo() is None  # its history was the oldest: dropped
    session.paint(box(8, 8, 12, 12))
    session.forget_history()
    assert session.undo() is None


def test_opening_another_image_saves_the_current_one(session, project):
    road, _ = project.classes.ids()
    session.active_class = road
    session.paint(box(0, 0, 4, 4))
    assert session.open_image("img1.png") is session.doc and session.rel == "img1.png"
    session.saver.flush()
    assert project.state("img0.png") == ImageState.IN_PROGRESS
    assert (project.load_document("img0.png").labels[:4, :4] == road).all()


def test_saver_reports_errors_and_keeps_running(project, monkeypatch):
    errors = []
    saver = Saver(project, on_error=lambda rel, error: errors.append((rel, str(error))))
    doc = project.load_document("img0.png")

    def full_disk(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(project, "save_document", full_disk)
    saver.save("img0.png", doc)
    saver.submit(lambda: 1 / 0)
    saver.flush()
    assert errors[0] == ("img0.png", "no space left on device") and errors[1][0] == ""
    monkeypatch.undo()
    saver.save("img0.png", doc)
    saver.close()
    with pytest.raises(RuntimeError, match="closed"):
        saver.save("img0.png", doc)


def test_an_edit_the_journal_refuses_is_taken_back(session, project, monkeypatch):
    from chimera_app.project.store import EditNotSavedError

    road, _ = project.classes.ids()
    session.active_class = road
    session.paint(box(0, 0, 4, 4))
    kept = session.doc.labels.copy(), session.doc.state

    def full_disk(*args, **kwargs):
        raise EditNotSavedError("the edit could not be saved (no space left on device)")

    monkeypatch.setattr(project, "record", full_disk)
    for refused in (lambda: session.paint(box(10, 10, 20, 20)), session.undo, lambda: session.mark_verified(True)):
        with pytest.raises(EditNotSavedError):
            refused()
        np.testing.assert_array_equal(session.doc.labels, kept[0])  # as before the refused edit
        assert session.doc.state == kept[1]
    monkeypatch.undo()
    assert session.undo_stack.can_undo and not session.undo_stack.can_redo  # the history is as it was
    session.undo()
    monkeypatch.setattr(project, "record", full_disk)
    with pytest.raises(EditNotSavedError):
        session.redo()
    assert not session.doc.labels.any() and session.undo_stack.can_redo


def test_verified_is_an_explicit_decision_and_unverify_goes_back_to_in_progress(session):
    road, car = session.project.classes.ids()
    session.set_prediction(*prediction(road))  # left half road (model), right half unlabeled
    session.active_class, session.protect_others = car, True
    assert session.paint(box(0, 0, 8, 8)) is None  # all road, protected: no pixel, no state change
    assert session.doc.state == ImageState.PREDICTED
    session.paint(box(0, W - 8, 8, W))
    assert session.doc.state == ImageState.IN_PROGRESS  # edited: in progress, never verified by a stroke
    session.mark_verified(True)
    assert session.doc.state == ImageState.VERIFIED
    session.paint(box(20, W - 8, 28, W))
    assert session.doc.state == ImageState.VERIFIED  # editing a verified image keeps the decision
    session.mark_verified(False)
    assert session.doc.state == ImageState.IN_PROGRESS  # a person decided pixels: in progress, not predicted
