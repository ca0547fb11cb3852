"""The one pre-label pipeline without Qt: order, class ids, the error policy, cancel and resume,
decode-ahead, and writing results into a project (the app's and chimera-label --project's path)."""

import numpy as np
import pytest

from chimera_app.project import ImageState, Project, Provenance, Region
from chimera_app.service.prelabel import DecodeAhead, Prelabeler, store_prediction
from chimera_app.service.requests import Failed, PrelabelProgress, PrelabelResult, PrelabelSummary
from chimera_engine import ClassNameError, Segmenter, load_image

from .service_harness import CountingDecoder, Harness, write_image


@pytest.fixture
def items(tmp_path):
    paths = [write_image(tmp_path / f"img{i}.png", i) for i in range(4)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return [("img0.png", paths[0]), ("bad.png", bad), ("img1.png", paths[1]), ("img2.png", paths[2])]


def test_results_in_order_with_class_ids_and_a_corrupt_image_skipped(tiny_segmenter, items):
    run = Prelabeler(items, ["red", "green; lime"], class_ids=[3, 5])
    results = list(run.results(tiny_segmenter))
    assert [r.key for r in results] == ["img0.png", "bad.png", "img1.png", "img2.png"]
    bad = results[1]
    assert not bad.ok and bad.kind == "image" and bad.labels is None
    for result in results[::2]:
        assert result.ok and result.labels.shape == result.confidence.shape == (48, 64)
        assert result.labels.dtype == np.uint16 and set(np.unique(result.labels)) <= {3, 5}
    summary = run.summary()
    assert (summary.total, summary.done, summary.skipped, summary.cancelled) == (4, 3, 0, False)
    assert [key for key, _ in summary.failed] == ["bad.png"]


def test_default_ids_are_list_positions_and_the_rule_matches_the_engine(one_torch_thread, tiny_segmenter, items):
    run = Prelabeler(items[:1], ["red", "green"], min_confidence=0.6)
    (result,) = run.results(tiny_segmenter)
    tiny_segmenter.set_image(load_image(items[0][1]))
    expected = tiny_segmenter.segment(["red", "green"], min_confidence=0.6).labels + 1
    np.testing.assert_array_equal(result.labels, expected)  # 0 = unlabeled, k = the k-th class
    assert (result.labels == 0).any()


def test_an_invalid_class_list_fails_before_any_image(tmp_path):
    decoder = CountingDecoder()
    for prompts, background in (([], ()), (["big car", "big  car"], ()), (["cat; cat"], ()), (["sky"], ("Sky",))):
        with pytest.raises(ClassNameError):
            Prelabeler([("a", tmp_path / "a.png")], prompts, background=background, decode=decoder)
    assert decoder.calls == []


def test_several_images_per_step_and_a_group_that_fails_is_retried_one_by_one(tiny_segmenter, items,
                                                                               monkeypatch):
    real, calls = Segmenter.encode, []

    def fails_in_groups(self, images):
        calls.append(len(images))
        if len(images) > 1:
            raise RuntimeError("CUDA out of memory (a group too large)")
        return real(self, images)

    monkeypatch.setattr(Segmenter, "encode", fails_in_groups)
    run = Prelabeler(items, ["a", "b"], images_per_step=3, decode_workers=2, decode_ahead=4)
    first = run.step(tiny_segmenter)
    assert [r.key for r in first] == ["img0.png", "bad.png", "img1.png"]
    assert calls == [2, 1, 1]  # the two good images together, then each alone
    assert [r.ok for r in first] == [True, False, True]
    assert [r.key for r in run.step(tiny_segmenter)] == ["img2.png"] and run.step(tiny_segmenter) == []


def test_cancel_takes_effect_within_one_step_and_remaining_resumes(tiny_segmenter, items):
    run = Prelabeler(items, ["a", "b"])
    assert [r.key for r in run.step(tiny_segmenter)] == ["img0.png"]
    run.cancel()
    assert run.step(tiny_segmenter) == [] and run.finished
    summary = run.summary()
    assert summary.cancelled and summary.done == 1 and summary.remaining == ("bad.png", "img1.png", "img2.png")
    resumed = Prelabeler([item for item in items if item[0] in summary.remaining], ["a", "b"])
    assert [r.key for r in resumed.results(tiny_segmenter)] == list(summary.remaining)


def test_features_already_cached_are_not_decoded_or_encoded_again(tiny_segmenter, items):
    tiny_segmenter.set_image(load_image(items[0][1]), key="img0.png")  # the image on screen
    encoded = tiny_segmenter.images_encoded
    (result,) = Prelabeler(items[:1], ["a", "b"]).results(tiny_segmenter)
    assert result.ok and tiny_segmenter.images_encoded == encoded


def test_decode_ahead_runs_ahead_and_reports_errors_on_take(items):
    decoder = CountingDecoder()
    ahead = DecodeAhead([path for _, path in items], decoder, workers=1, ahead=2)
    assert ahead.take(0).result().shape == (48, 64, 3)
    ahead.take(1).exception(timeout=20)
    assert decoder.calls[:3] == ["img0.png", "bad.png", "img1.png"]  # 0, then 1 and 2 ahead
    ahead.close()


def test_store_prediction_keeps_human_pixels_and_verified_images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a.png", "v.png"):
        write_image(root / name, 1)
    with Project.open(root) as project:
        cls = project.classes.add("thing")
        for rel in ("a.png", "v.png"):
            doc = project.load_document(rel)
            doc.paint(Region(0, 0, np.ones((4, 4), bool)), cls.id)  # painting: in progress ...
            if rel == "v.png":
                doc.state = ImageState.VERIFIED  # ... v.png was then marked verified
            project.save_document(rel, doc)
        ids, confidence = np.zeros((48, 64), np.uint16), np.full((48, 64), 0.5, np.float32)
        ids[10:20, 10:20] = cls.id
        assert store_prediction(project, "a.png", ids, confidence)
        assert not store_prediction(project, "v.png", ids, confidence)
        a, v = project.load_document("a.png"), project.load_document("v.png")
        assert (a.labels[:4, :4] == cls.id).all() and (a.provenance[:4, :4] == Provenance.HUMAN).all()
        assert (a.labels[10:20, 10:20] == cls.id).all() and a.state == ImageState.IN_PROGRESS
        assert v.state == ImageState.VERIFIED and v.prediction is None


def test_the_service_runs_a_folder_pre_label_one_image_per_job(items):
    h = Harness()
    try:
        assert h.service.prelabel(items, ["a"])  # no model yet: the run stops by itself
        summary = h.wait_for(PrelabelSummary)[-1]
        assert summary.error and "no model" in summary.error and h.of(Failed)[0].kind == "model"
        h.results.clear()
        h.load()
        assert h.service.prelabel(items, ["red", "green"], class_ids=[3, 5])
        assert not h.service.prelabel(items, ["x"])  # one at a time
        summary = h.wait_for(PrelabelSummary)[-1]
        assert summary.done == 3 and [key for key, _ in summary.failed] == ["bad.png"]
        assert [(p.done, p.total) for p in h.of(PrelabelProgress)] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
        assert [r.key for r in h.of(PrelabelResult)] == [key for key, _ in items]
        assert "already running" in h.of(Failed)[0].message and not h.service.prelabel_running()
    finally:
        h.close()
