"""LabelDocument edits and UndoStack: protect, accept, predictions, deleted classes, bit-exact undo."""

import numpy as np
import pytest

from chimera_app.project.document import (
    ImageState,
    LabelDocument,
    Provenance,
    Region,
    UndoStack,
)

H, W = 48, 64
HUMAN, MODEL, NONE = Provenance.HUMAN, Provenance.MODEL, Provenance.NONE


def box(y0, x0, y1, x1) -> Region:
    return Region(y0, x0, np.ones((y1 - y0, x1 - x0), bool))


def predicted_doc() -> LabelDocument:
    """Left half class 1, right half class 2, bottom rows unlabeled by the model."""
    doc = LabelDocument.blank(H, W)
    ids = np.zeros((H, W), np.uint16)
    ids[:, : W // 2], ids[:, W // 2:] = 1, 2
    ids[40:] = 0
    conf = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    doc.set_prediction(ids, conf)
    return doc


def snapshot(doc):
    return doc.labels.copy(), doc.provenance.copy(), doc.state


def assert_same(doc, snap):
    np.testing.assert_array_equal(doc.labels, snap[0])
    np.testing.assert_array_equal(doc.provenance, snap[1])
    assert doc.state == snap[2]


def test_region_bbox_and_full():
    r = Region(2, 3, np.zeros((4, 5), bool))
    assert r.bbox == (2, 3, 6, 8) and r.is_empty
    full = Region.full(np.eye(3, dtype=np.uint8))
    assert full.bbox == (0, 0, 3, 3) and not full.is_empty and full.mask.dtype == bool


def test_set_prediction_fills_undecided_pixels_and_sets_state():
    doc = predicted_doc()
    assert doc.state == ImageState.PREDICTED
    assert (doc.provenance[:40] == MODEL).all() and (doc.provenance[40:] == NONE).all()
    assert doc.labels.dtype == np.uint16 and doc.confidence.dtype == np.float32
    with pytest.raises(ValueError):
        doc.set_prediction(np.zeros((H, W + 1), np.uint16), np.zeros((H, W + 1), np.float32))


def test_paint_marks_human_verifies_and_returns_a_tight_patch():
    doc = predicted_doc()
    mask = np.zeros((10, 10), bool)
    mask[3:5, 2:7] = True
    patch = doc.paint(Region(20, 20, mask), 3)
    assert patch.bbox == (23, 22, 25, 27)  # only the changed pixels' box is stored
    assert (doc.labels[23:25, 22:27] == 3).all() and (doc.provenance[23:25, 22:27] == HUMAN).all()
    assert doc.state == ImageState.IN_PROGRESS and patch.state_before == ImageState.PREDICTED
    assert doc.paint(Region(20, 20, mask), 3) is None  # nothing changes the second time
    assert not patch.labels_before.flags.writeable  # history cannot be edited afterwards


def test_paint_over_the_same_model_label_is_a_human_decision():
    doc = predicted_doc()
    patch = doc.paint(box(0, 0, 2, 2), 1)
    assert patch is not None and (doc.provenance[:2, :2] == HUMAN).all() and (doc.labels[:2, :2] == 1).all()


def test_erase_is_an_explicit_unlabeled_that_predictions_keep():
    doc = predicted_doc()
    doc.paint(box(0, 0, 8, 8), 0)
    assert (doc.labels[:8, :8] == 0).all() and (doc.provenance[:8, :8] == HUMAN).all()
    doc.paint(box(8, 0, 12, 8), 5)
    before = snapshot(doc)
    doc.set_prediction(np.full((H, W), 7, np.uint16), np.ones((H, W), np.float32))
    human = before[1] == HUMAN
    np.testing.assert_array_equal(doc.labels[human], before[0][human])  # HUMAN pixels untouched
    assert (doc.labels[~human] == 7).all() and (doc.provenance[~human] == MODEL).all()
    assert doc.state == ImageState.IN_PROGRESS  # a new prediction does not undo a person's work


def test_paint_protects_other_classes_but_never_unlabeled():
    doc = predicted_doc()  # columns < 32 are 1, >= 32 are 2, rows >= 40 unlabeled
    doc.paint(box(0, 28, H, 36), 3, protect=[2, 0])
    assert (doc.labels[:40, 28:32] == 3).all()  # class 1 painted over
    assert (doc.labels[:40, 32:36] == 2).all() and (doc.provenance[:40, 32:36] == MODEL).all()  # protected
    assert (doc.labels[40:, 28:36] == 3).all()  # unlabeled is never protected
    doc.paint(box(0, 0, 4, 4), 0, protect=[3, 1])  # erasing a protected class leaves it
    assert (doc.labels[:4, :4] == 1).all()


def test_accept_prediction_by_class_region_and_whole_image():
    doc = predicted_doc()
    patch = doc.accept_prediction(class_id=2)
    assert ((doc.provenance == HUMAN) == ((doc.labels == 2) & (np.arange(H)[:, None] < 40))).all()
    assert doc.state == ImageState.IN_PROGRESS and patch.bbox == (0, 32, 40, 64)  # accepted a part
    doc.accept_prediction(region=box(0, 0, 10, 10))
    assert (doc.provenance[:10, :10] == HUMAN).all() and (doc.provenance[10:40, :32] == MODEL).all()
    assert doc.accept_prediction(region=box(0, 0, 10, 10)) is None
    doc.accept_prediction(region=box(10, 0, 20, 40), class_id=1)
    assert (doc.provenance[10:20, :32] == HUMAN).all() and (doc.provenance[20:40, :32] == MODEL).all()
    doc.accept_prediction()
    assert doc.state == ImageState.VERIFIED and not (doc.provenance == MODEL).any()
    assert (doc.provenance[40:] == NONE).all()  # unlabeled by the model: nobody decided it


def test_whole_accept_of_an_all_unlabeled_prediction_still_verifies_and_undoes():
    doc = LabelDocument.blank(H, W)
    doc.set_prediction(np.zeros((H, W), np.uint16), np.zeros((H, W), np.float32))
    stack = UndoStack()
    patch = doc.accept_prediction()
    assert patch is not None and doc.state == ImageState.VERIFIED
    stack.push(patch)
    stack.undo(doc)
    assert doc.state == ImageState.PREDICTED


def test_drop_classes_unlabels_deleted_ids():
    doc = predicted_doc()
    doc.paint(box(0, 0, 4, 4), 9)
    doc.drop_classes([1, 9])
    assert not (doc.labels == 2).any() and not ((doc.labels == 0) & (doc.provenance == MODEL)).any()
    assert (doc.provenance[:40, 32:] == NONE).all() and (doc.labels[:4, :4] == 9).all()
    assert not (doc.prediction == 2).any()


def test_set_prediction_keeps_the_arrays_read_only_without_copying_them():
    doc = LabelDocument.blank(H, W)
    doc.paint(box(0, 0, 2, 2), 5)
    ids = np.full((H, W), 3, np.uint16)
    ids[10:, :] = 0
    conf = np.full((H, W), 0.25, np.float32)
    doc.set_prediction(ids, conf)
    assert np.shares_memory(doc.prediction, ids) and np.shares_memory(doc.confidence, conf)  # 72 MB at 12 MP
    assert not doc.prediction.flags.writeable and not doc.confidence.flags.writeable
    assert ids.flags.writeable  # the caller's own array object is left as it was
    assert (doc.labels[:2, :2] == 5).all() and (doc.provenance[:2, :2] == HUMAN).all()
    assert (doc.labels[:10, 2:] == 3).all() and (doc.provenance[:10, 2:] == MODEL).all()
    assert (doc.labels[10:] == 0).all() and (doc.provenance[10:] == NONE).all()
    doc.set_prediction(ids.astype(np.int32), conf.astype(np.float64))  # other dtypes are converted
    assert doc.prediction.dtype == np.uint16 and doc.confidence.dtype == np.float32
    shared = doc.prediction
    doc.drop_classes([])  # class 3 deleted: a new map, the shared one is untouched
    assert not (doc.prediction == 3).any() and (shared[:10] == 3).all()


def test_undo_redo_restore_labels_provenance_and_state_bit_for_bit():
    rng = np.random.default_rng(0)
    doc = predicted_doc()
    stack = UndoStack()
    history = [snapshot(doc)]
    for step in range(12):
        y, x = rng.integers(0, H - 8), rng.integers(0, W - 8)
        mask = rng.random((8, 8)) < 0.6
        region = Region(int(y), int(x), mask)
        if step % 3 == 0:
            patch = doc.paint(region, int(rng.integers(0, 5)), protect=[1])
        elif step % 3 == 1:
            patch = doc.accept_prediction(region=region)
        else:
            patch = doc.accept_prediction(class_id=2)
        if patch is not None:
            stack.push(patch)
            history.append(snapshot(doc))
    assert len(history) >= 8
    for snap in reversed(history[:-1]):
        stack.undo(doc)
        assert_same(doc, snap)
    assert stack.undo(doc) is None and not stack.can_undo
    for snap in history[1:]:
        stack.redo(doc)
        assert_same(doc, snap)
    assert stack.redo(doc) is None


def test_push_clears_redo():
    doc = predicted_doc()
    stack = UndoStack()
    stack.push(doc.paint(box(0, 0, 4, 4), 3))
    stack.undo(doc)
    assert stack.can_redo
    stack.push(doc.paint(box(4, 4, 8, 8), 3))
    assert not stack.can_redo and stack.redo(doc) is None


def test_memory_cap_drops_the_oldest_patches():
    doc = LabelDocument.blank(H, W)
    one = doc.paint(box(0, 0, 10, 10), 1)
    stack = UndoStack(cap_bytes=3 * one.nbytes)
    stack.push(one)
    for value in (2, 3, 4, 5):
        stack.push(doc.paint(box(0, 0, 10, 10), value))
    assert stack.nbytes <= 3 * one.nbytes
    undone = 0
    while stack.undo(doc):
        undone += 1
    assert undone == 3 and (doc.labels[:10, :10] == 2).all()  # the two oldest edits are gone
    assert stack.nbytes == 3 * one.nbytes  # they sit on the redo side now
    stack.clear()
    assert stack.nbytes == 0 and not stack.can_redo


def test_a_single_patch_larger_than_the_cap_is_still_undoable():
    doc = LabelDocument.blank(H, W)
    stack = UndoStack(cap_bytes=10)
    stack.push(doc.paint(box(0, 0, H, W), 1))
    assert stack.undo(doc) is not None and not doc.labels.any()


def test_a_stroke_that_changes_no_pixel_changes_no_state():
    doc = predicted_doc()  # columns < 32 are class 1
    assert doc.paint(box(0, 0, 8, 8), 3, protect=[1]) is None
    assert doc.state == ImageState.PREDICTED


def test_only_an_explicit_decision_verifies_and_a_verified_image_stays_verified():
    doc = predicted_doc()
    doc.paint(box(0, 0, 4, 4), 2)
    doc.accept_prediction(class_id=1)
    assert doc.state == ImageState.IN_PROGRESS
    doc.accept_prediction()
    assert doc.state == ImageState.VERIFIED
    doc.paint(box(10, 10, 14, 14), 3)
    assert doc.state == ImageState.VERIFIED
