"""The service layer without Qt: typed requests, the queue's priorities and latest-wins rules, the
caches, error kinds, and the engine thread answering real requests on a tiny model."""

import threading

import numpy as np
import pytest
import torch

from chimera_app.service.caches import Generations, RgbCache
from chimera_app.service.engine_service import output_size
from chimera_app.service.errors import error_kind
from chimera_app.service.job_queue import JobQueue
from chimera_app.service.prelabel import to_class_ids
from chimera_app.service.requests import (
    BATCH,
    INTERACTIVE,
    PREFETCH,
    EncodeAhead,
    EncodeImage,
    Failed,
    ImageFailed,
    ImageReady,
    LoadModel,
    Prefetch,
    PrelabelStep,
    Segment,
    Segmented,
    SetOptions,
    ShowImage,
)
from chimera_engine import CheckpointError, ImageLoadError, Segmenter, WeightsNotFoundError

from .service_harness import TINY, CountingDecoder, Harness, write_image


@pytest.fixture
def images(tmp_path):
    return {f"img{i}.png": write_image(tmp_path / f"img{i}.png", i) for i in range(4)}


@pytest.fixture
def decoder():
    return CountingDecoder()


@pytest.fixture
def harness(decoder):
    torch.manual_seed(0)
    h = Harness(decode=decoder)
    yield h
    h.close()


# -- records and rules, no threads -------------------------------------------------------------------
def test_requests_say_their_priority_and_what_they_supersede(tmp_path):
    seg_a, seg_b = Segment("a", ("x",), 1), Segment("b", ("x",), 2)
    assert (seg_a.priority, Prefetch("p", tmp_path).priority, PrelabelStep(None).priority) == (
        INTERACTIVE, PREFETCH, BATCH)
    assert Segment("a", ("y",), 3).supersedes(seg_a) and not Segment("a", ("y",), 3).supersedes(seg_b)
    show = ShowImage("a", tmp_path)
    assert show.supersedes(seg_b) and not show.supersedes(seg_a)  # the image on screen keeps its requests
    assert show.supersedes(ShowImage("z", tmp_path)) and show.supersedes(EncodeImage("z"))
    assert Prefetch("p", tmp_path).supersedes(EncodeAhead("q")) and not Prefetch("p", tmp_path).supersedes(seg_a)
    assert LoadModel("m").supersedes(LoadModel("n")) and SetOptions(0.5).supersedes(SetOptions(0.1))


def test_a_preview_is_explicit_and_only_a_preview_has_a_display_size():
    assert Segment("a", ("x",), 1, preview=True, display_size=(10, 10)).preview
    with pytest.raises(ValueError, match="preview"):
        Segment("a", ("x",), 1, display_size=(10, 10))
    with pytest.raises(ValueError, match="2 class ids for 1 prompts"):
        Segment("a", ("x",), 1, class_ids=(1, 2))


def test_job_queue_order_drops_and_follow_ups(tmp_path):
    queue = JobQueue()
    queue.put(Prefetch("p", tmp_path))
    queue.put(Segment("a", ("one",), 1))
    first_show = queue.put(ShowImage("a", tmp_path))
    queue.put(Segment("a", ("two",), 2))  # replaces the queued segment of "a"
    assert [type(r).__name__ for r in queue.pending()] == ["ShowImage", "Segment", "Prefetch"]
    arrival, request = queue.take()
    assert arrival == first_show and isinstance(request, ShowImage)
    queue.put(EncodeImage("a"), after=arrival)  # a follow-up keeps its parent's place
    assert isinstance(queue.take()[1], EncodeImage)
    assert queue.take()[1].prompts == ("two",)
    queue.put([Prefetch("q", tmp_path), Prefetch("r", tmp_path)])  # a new list replaces the old one
    assert [r.key for r in queue.pending()] == ["q", "r"]
    queue.stop()
    assert queue.take() is None and queue.put(Segment("a", ("x",), 3)) == 0


def test_caches_and_generations():
    cache = RgbCache(max_items=2, max_bytes=10_000)
    a, b, c = (np.zeros((10, 10, 3), np.uint8) for _ in range(3))
    cache.put("a", a), cache.put("b", b)
    cache.get("a")  # used: "b" is now the oldest
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    cache.put("big", np.zeros((100, 100, 3), np.uint8))  # over the byte budget alone: still kept
    assert cache.get("big") is not None and cache.get("a") is None
    generations = Generations()
    first, second, other = generations.next("a"), generations.next("a"), generations.next("b")
    assert not generations.is_latest("a", first) and generations.is_latest("a", second)
    assert generations.latest("b") == other and generations.latest("zz") is None


def test_display_size_is_clamped_to_the_image():
    assert output_size(None, (48, 64)) is None
    assert output_size((24, 32), (48, 64)) == (24, 32)
    assert output_size((100, 100), (48, 64)) is None  # never scored above full resolution
    assert output_size((100, 32), (48, 64)) == (48, 32)


def test_class_ids_map_unlabeled_to_zero():
    labels = np.array([[-1, 0, 1], [2, -1, 1]], np.int32)
    ids = to_class_ids(labels, [7, 300, 9])
    assert ids.dtype == np.uint16 and ids.tolist() == [[0, 7, 300], [9, 0, 300]]
    assert to_class_ids(labels, None) is labels


def test_error_kinds():
    assert error_kind(ImageLoadError("bad file")) == ("image", "bad file")
    assert error_kind(WeightsNotFoundError("w"))[0] == "model"
    assert error_kind(CheckpointError("c"))[0] == "model"
    assert error_kind(RuntimeError("MPS backend out of memory"))[0] == "memory"
    assert error_kind(torch.OutOfMemoryError("CUDA out of memory"))[0] == "memory"
    assert error_kind(MemoryError())[1] == "out of memory"
    assert error_kind(KeyError("k")) == ("engine", "KeyError: 'k'")


# -- the engine thread, real requests on a tiny model -------------------------------------------------
def test_show_segment_and_preview_answer_with_typed_results(harness, images):
    loaded = harness.load()
    assert (loaded.name, loaded.device, loaded.reason) == (TINY, "CPU fp32", "as requested")
    harness.service.submit(ShowImage("a", images["img0.png"]))
    (ready,) = harness.wait_for(ImageReady)
    assert ready.key == "a" and ready.rgb.shape == (48, 64, 3) and not ready.rgb.flags.writeable
    harness.service.submit(Segment("a", ("red", "green; lime", "blue"), 1))
    (full,) = harness.wait_for(Segmented)
    assert (full.key, full.generation, full.preview) == ("a", 1, False)
    assert full.labels.shape == full.confidence.shape == (48, 64) and full.labels.dtype == np.int32
    assert 0 <= full.labels.min() and full.labels.max() <= 2
    harness.service.submit(Segment("a", ("red", "green"), 2, class_ids=(7, 9), preview=True, display_size=(24, 32)))
    preview = harness.wait_for(Segmented, 2)[-1]
    assert preview.preview and preview.labels.shape == (24, 32) and preview.labels.dtype == np.uint16
    assert set(np.unique(preview.labels)) <= {7, 9}
    harness.service.submit(Segment("a", ("red", "green"), 3, preview=True, display_size=(480, 640)))
    clamped = harness.wait_for(Segmented, 3)[-1]
    assert clamped.preview and clamped.labels.shape == (48, 64)  # full size, and still a preview


def test_a_superseded_segment_request_is_never_computed(harness, images, monkeypatch):
    harness.load()
    harness.service.submit(ShowImage("a", images["img0.png"]))
    harness.wait_for(ImageReady)
    calls, started, release = [], threading.Event(), threading.Event()
    real = Segmenter.segment

    def gated(self, classes, **kwargs):
        calls.append(list(classes))
        started.set()
        release.wait(10)  # the first request holds the engine while the user "types"
        return real(self, classes, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", gated)
    harness.service.submit(Segment("a", ("c",), 1))
    assert started.wait(20)
    try:
        for generation, text in enumerate((("ca",), ("car",), ("car", "road")), start=2):
            harness.service.submit(Segment("a", text, generation))
        assert harness.service.pending() == [("Segment", "a")]  # one queued request per image
    finally:
        release.set()
    results = harness.wait_for(Segmented, 2)
    assert calls == [["c"], ["car", "road"]] and [r.generation for r in results] == [1, 4]


def test_prefetched_images_need_no_decode_or_encode_later(harness, images, decoder):
    harness.load()
    seg = harness.service.segmenter
    harness.service.submit([Prefetch("b", images["img1.png"]), Prefetch("c", images["img2.png"])])
    harness.wait_until(lambda: seg.images_encoded == 2 and not harness.service.pending())
    assert decoder.calls == ["img1.png", "img2.png"]
    harness.service.submit(ShowImage("b", images["img1.png"]))
    harness.wait_for(ImageReady)
    harness.service.submit(Segment("b", ("x", "y"), 1))
    harness.wait_for(Segmented)
    assert decoder.calls == ["img1.png", "img2.png"] and seg.images_encoded == 2


def test_interactive_requests_jump_the_queue_and_the_latest_image_wins(harness, images, decoder):
    harness.load()
    decoder.slow = 0.3
    harness.service.submit([Prefetch(k, images[k]) for k in ("img1.png", "img2.png", "img3.png")])
    harness.wait_until(lambda: decoder.calls == ["img1.png"])  # the engine is busy with it
    harness.service.submit(ShowImage("x", images["img0.png"]))
    harness.service.submit(ShowImage("y", images["img3.png"]))  # D pressed twice: x is never shown
    harness.wait_for(ImageReady)
    harness.wait_until(lambda: len(decoder.calls) >= 2)
    assert [r.key for r in harness.of(ImageReady)] == ["y"]
    assert decoder.calls[:2] == ["img1.png", "img3.png"]  # before the queued prefetches; x never decoded


def test_errors_become_failed_results_and_the_engine_survives(harness, images, tmp_path, monkeypatch):
    def expect(kind, fragment):
        failure = harness.wait_for(Failed)[-1]
        harness.results.clear()
        assert failure.kind == kind and fragment in failure.message, failure

    harness.service.submit(Segment("a", ("x",), 1))
    expect("model", "no model")
    harness.service.submit(LoadModel("no-such-model"))
    expect("model", "unknown model")
    harness.load()
    harness.results.clear()
    harness.service.submit(ShowImage("gone", tmp_path / "missing.png"))
    harness.wait_for(ImageFailed)
    assert harness.of(ImageFailed)[0].key == "gone"
    expect("image", "missing.png")
    harness.service.submit(ShowImage("a", images["img0.png"]))
    harness.wait_for(ImageReady)

    def broken(self, *args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(Segmenter, "segment", broken)
    harness.service.submit(Segment("a", ("x",), 2))
    expect("engine", "ValueError: boom")
    monkeypatch.undo()
    harness.service.submit(Segment("a", ("x", "y"), 3))
    assert harness.wait_for(Segmented)[-1].generation == 3  # still alive
