"""The engine boundary: signals on the GUI thread, latest-wins segments, priorities, batch, errors."""

import threading
import time

import cv2
import numpy as np
import pytest
import torch
from PySide6.QtCore import QTimer

from chimera_app import worker as worker_module
from chimera_app.prelabel import error_kind, to_class_ids
from chimera_app.worker import (
    INTERACTIVE,
    PREFETCH,
    EngineClient,
    Job,
    JobQueue,
    output_size,
)
from engine import (
    CheckpointError,
    ImageLoadError,
    Segmenter,
    WeightsNotFoundError,
    clip_loading,
)

TINY = "clip:chimera-tiny/random"
WAIT = 20_000  # ms; generous: the test machine is shared with training jobs


def _write(path, seed, size=(48, 64)):
    rgb = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    return path


@pytest.fixture
def images(tmp_path):
    return {f"img{i}.png": _write(tmp_path / f"img{i}.png", i) for i in range(6)}


@pytest.fixture
def client(qtbot):
    c = EngineClient(threads=1)
    yield c
    assert c.shutdown(WAIT)


@pytest.fixture
def loaded(client, qtbot):
    torch.manual_seed(0)
    with qtbot.waitSignal(client.model_loaded, timeout=WAIT):
        client.load_model(TINY, device="cpu", precision="fp32")
    return client


@pytest.fixture
def decodes(monkeypatch):
    """Counts real decodes (in order); ``slow`` seconds of GIL-holding Python work per decode."""
    calls, real = [], worker_module.load_image
    state = {"slow": 0.0}

    def counting(path):
        calls.append(path.name)
        end = time.perf_counter() + state["slow"]
        while time.perf_counter() < end:  # busy Python: the worst case for the GUI thread (GIL)
            sum(range(1000))
        return real(path)

    monkeypatch.setattr(worker_module, "load_image", counting)
    counting.calls, counting.state = calls, state
    return counting


def _collect(signal):
    got = []
    signal.connect(lambda *args: got.append((threading.current_thread() is threading.main_thread(), *args)))
    return got


def test_results_arrive_as_signals_on_the_gui_thread(loaded, qtbot, images, monkeypatch):
    threads_seen = []
    real = Segmenter.segment

    def recording(self, *args, **kwargs):
        threads_seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", recording)
    ready = _collect(loaded.image_ready)
    with qtbot.waitSignal(loaded.image_ready, timeout=WAIT):
        loaded.show_image("a", images["img0.png"])
    on_gui, key, rgb = ready[0]
    assert on_gui and key == "a" and rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert not rgb.flags.writeable  # shared with the engine's cache

    results = _collect(loaded.segmented)
    with qtbot.waitSignal(loaded.segmented, timeout=WAIT):
        gen = loaded.segment("a", ["red", "green; lime", "blue"])
    on_gui, key, generation, labels, conf = results[-1]
    assert on_gui and key == "a" and generation == gen == loaded.latest_generation("a")
    assert labels.shape == conf.shape == (48, 64) and labels.dtype == np.int32 and conf.dtype == np.float32
    assert 0 <= labels.min() and labels.max() <= 2 and 0 < conf.min() and conf.max() <= 1
    assert threads_seen == [1]  # the thread budget is set in the engine thread

    with qtbot.waitSignal(loaded.segmented, timeout=WAIT):  # display resolution + stable class ids
        loaded.segment("a", ["red", "green"], display_size=(24, 32), class_ids=[7, 9])
    _, _, _, small, small_conf = results[-1]
    assert small.shape == small_conf.shape == (24, 32) and small.dtype == np.uint16
    assert set(np.unique(small)) <= {7, 9}


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


def test_a_superseded_segment_request_is_never_computed(loaded, qtbot, images, monkeypatch):
    with qtbot.waitSignal(loaded.image_ready, timeout=WAIT):
        loaded.show_image("a", images["img0.png"])
    calls, started, release = [], threading.Event(), threading.Event()
    real = Segmenter.segment

    def gated(self, classes, **kwargs):
        calls.append(list(classes))
        started.set()
        release.wait(10)  # the first request holds the engine while the user "types"
        return real(self, classes, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", gated)
    results = _collect(loaded.segmented)
    loaded.segment("a", ["c"])
    qtbot.waitUntil(started.is_set, timeout=WAIT)
    try:
        for text in (["ca"], ["car"], ["car", "road"]):
            last = loaded.segment("a", text)
        assert loaded.pending() == [("segment", "a")]  # one queued request per image
    finally:
        release.set()
    qtbot.waitUntil(lambda: len(calls) == 2 and bool(results), timeout=WAIT)
    qtbot.wait(100)  # nothing else may arrive
    assert calls == [["c"], ["car", "road"]]
    assert [r[2] for r in results] == [last]  # the result for "c" was stale: not delivered


def test_the_gui_thread_is_not_blocked_by_engine_work(loaded, qtbot, images, decodes):
    decodes.state["slow"] = 0.6
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    with qtbot.waitSignal(loaded.image_ready, timeout=WAIT):
        loaded.show_image("a", images["img0.png"])
    timer.stop()
    gaps = np.diff(ticks)
    print(f"GUI timer during a 0.6 s engine job: {len(ticks)} ticks, max gap {gaps.max() * 1000:.0f} ms")
    assert len(ticks) >= 20 and gaps.max() < 0.2  # a blocked GUI thread would show one 600 ms gap


def test_prefetched_images_need_no_decode_or_encode_later(loaded, qtbot, images, decodes):
    seg = loaded._worker.segmenter
    loaded.prefetch([("b", images["img1.png"]), ("c", images["img2.png"])])
    qtbot.waitUntil(lambda: seg.images_encoded == 2 and not loaded.pending(), timeout=WAIT)
    assert decodes.calls == ["img1.png", "img2.png"]
    start = time.perf_counter()
    with qtbot.waitSignal(loaded.image_ready, timeout=WAIT):
        loaded.show_image("b", images["img1.png"])
    print(f"image_ready of a prefetched image after {(time.perf_counter() - start) * 1000:.1f} ms")
    with qtbot.waitSignal(loaded.segmented, timeout=WAIT):
        loaded.segment("b", ["x", "y"])
    assert decodes.calls == ["img1.png", "img2.png"] and seg.images_encoded == 2


def test_interactive_requests_jump_the_queue_and_the_latest_image_wins(loaded, qtbot, images, decodes):
    decodes.state["slow"] = 0.3
    ready = _collect(loaded.image_ready)
    loaded.prefetch([(k, images[k]) for k in ("img1.png", "img2.png", "img3.png")])
    qtbot.waitUntil(lambda: decodes.calls == ["img1.png"], timeout=WAIT)  # the engine is busy with it
    loaded.show_image("x", images["img0.png"])
    loaded.show_image("y", images["img4.png"])  # the user pressed D twice: x is never shown
    qtbot.waitUntil(lambda: len(ready) == 1, timeout=WAIT)
    assert [r[1] for r in ready] == ["y"]
    assert decodes.calls == ["img1.png", "img4.png"]  # before the queued prefetches; x never decoded


def test_job_queue_order_and_drops():
    queue = JobQueue()
    queue.put(Job(PREFETCH, "prefetch", "p"))
    queue.put(Job(INTERACTIVE, "segment", "a", (1,)))
    queue.put(Job(INTERACTIVE, "segment", "a", (2,)), drop=lambda j: j.kind == "segment" and j.key == "a")
    queue.put(Job(INTERACTIVE, "show", "b"))
    assert queue.pending() == [("segment", "a"), ("show", "b"), ("prefetch", "p")]
    assert queue.take().args == (2,)
    queue.stop()
    assert queue.take() is None


def test_prelabel_reports_progress_results_and_skips_a_corrupt_image(loaded, qtbot, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    items = [("img0.png", images["img0.png"]), ("bad.png", bad), ("img1.png", images["img1.png"])]
    progress, results, failures = _collect(loaded.prelabel_progress), [], _collect(loaded.prelabel_failed)
    loaded.prelabel_result.connect(lambda *args: results.append(args))
    with qtbot.waitSignal(loaded.prelabel_finished, timeout=WAIT) as finished:
        assert loaded.prelabel(items, ["red", "green"], class_ids=[3, 5])
    summary = finished.args[0]
    assert summary["done"] == 2 and summary["skipped"] == 0 and not summary["cancelled"]
    assert [key for key, _ in summary["failed"]] == ["bad.png"] and [f[1] for f in failures] == ["bad.png"]
    assert [p[1:] for p in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)] and all(p[0] for p in progress)
    assert [r[0] for r in results] == ["img0.png", "img1.png"]
    labels, conf = results[0][1], results[0][2]
    assert labels.shape == conf.shape == (48, 64) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {3, 5}
    assert not loaded.prelabel_running()


def test_prelabel_cancel_takes_effect_within_one_image_and_resume_finishes(loaded, qtbot, images):
    items = [(k, p) for k, p in images.items()]
    results = []

    def on_result(key, labels, conf):
        results.append(key)
        loaded.cancel_prelabel()  # after the first image

    loaded.prelabel_result.connect(on_result)
    with qtbot.waitSignal(loaded.prelabel_finished, timeout=WAIT) as finished:
        loaded.prelabel(items, ["a", "b"])
    summary = finished.args[0]
    assert summary["cancelled"] and 1 <= summary["done"] <= 2  # the image in progress may complete
    assert summary["done"] + summary["skipped"] == len(items)
    assert summary["remaining"] == [k for k, _ in items][summary["done"]:]
    loaded.prelabel_result.disconnect(on_result)
    loaded.prelabel_result.connect(lambda key, *_: results.append(key))
    with qtbot.waitSignal(loaded.prelabel_finished, timeout=WAIT) as resumed:
        loaded.prelabel([(k, images[k]) for k in summary["remaining"]], ["a", "b"])
    assert not resumed.args[0]["cancelled"] and sorted(results) == sorted(images)


def test_errors_are_reported_by_kind_and_the_engine_survives(client, qtbot, images, tmp_path, monkeypatch):
    failures = _collect(client.failed)
    image_failures = _collect(client.image_failed)

    def expect(kind, fragment=""):
        qtbot.waitUntil(lambda: bool(failures), timeout=WAIT)
        on_gui, got_kind, message = failures.pop(0)
        assert on_gui and got_kind == kind and fragment in message, (got_kind, message)

    client.segment("a", ["x"])  # no model yet
    expect("model", "no model")
    client.load_model("no-such-model")
    expect("model", "unknown model")
    with qtbot.waitSignal(client.model_loaded, timeout=WAIT) as model:
        client.load_model(TINY, device="cpu", precision="fp32")
    info = model.args[0]
    assert info["name"] == TINY and info["device"] == "CPU fp32" and info["reason"] == "as requested"
    client.show_image("gone", tmp_path / "missing.png")
    expect("image", "missing.png")
    assert [f[1] for f in image_failures] == ["gone"]
    with qtbot.waitSignal(client.image_ready, timeout=WAIT):
        client.show_image("a", images["img0.png"])
    real = Segmenter.segment
    for error, kind, fragment in ((torch.OutOfMemoryError("CUDA out of memory"), "memory", "out of memory"),
                                  (MemoryError(), "memory", "out of memory"),
                                  (ValueError("boom"), "engine", "ValueError: boom")):
        def broken(self, *args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(Segmenter, "segment", broken)
        client.segment("a", ["x"])
        expect(kind, fragment)
    monkeypatch.setattr(Segmenter, "segment", real)
    with qtbot.waitSignal(client.segmented, timeout=WAIT):  # still alive
        client.segment("a", ["x", "y"])
    assert not client.prelabel([("a", images["img0.png"])], [])  # empty class list: refused
    expect("engine", "ClassNameError")


def test_error_kinds():
    assert error_kind(ImageLoadError("bad file"))[0] == "image"
    assert error_kind(WeightsNotFoundError("w"))[0] == "model"
    assert error_kind(CheckpointError("c"))[0] == "model"
    assert error_kind(RuntimeError("MPS backend out of memory"))[0] == "memory"
    assert error_kind(KeyError("k")) == ("engine", "KeyError: 'k'")


def _fake_fetch(monkeypatch, chunks=200, delay=0.005, result="/cache/w.safetensors", error=None):
    calls = []

    def fake(spec, progress=None, offline=None):
        calls.append(str(spec))
        if error is not None:
            raise error
        for i in range(1, chunks + 1):
            time.sleep(delay)
            progress(i * 1000, chunks * 1000)
        return result

    monkeypatch.setattr(clip_loading, "fetch_weights", fake)
    return calls


def test_download_reports_progress_and_the_file(client, qtbot, monkeypatch):
    calls = _fake_fetch(monkeypatch, chunks=40)
    progress = _collect(client.download_progress)
    with qtbot.waitSignal(client.download_finished, timeout=WAIT) as done:
        assert client.download("clip:ViT-B-16/openai")
    assert done.args == ["/cache/w.safetensors"] and calls == ["ViT-B-16/openai"]
    assert progress[-1][1:] == (40_000, 40_000) and all(p[0] for p in progress)
    assert [p[1] for p in progress] == sorted(p[1] for p in progress)
    assert len(progress) < 40  # throttled: the GUI is not flooded with one event per chunk


def test_download_cancel_stops_the_fetch(client, qtbot, monkeypatch):
    _fake_fetch(monkeypatch, chunks=2000)
    finished = _collect(client.download_finished)
    client.download_progress.connect(lambda done, total: client.cancel_download())
    start = time.perf_counter()
    with qtbot.waitSignal(client.download_cancelled, timeout=WAIT):
        client.download("ViT-B-16/openai")
    assert time.perf_counter() - start < 5 and not finished  # 2000 chunks would take > 10 s


def test_download_failure_and_cancel_inside_load_model(loaded, qtbot, images, monkeypatch):
    failures = _collect(loaded.failed)
    _fake_fetch(monkeypatch, error=WeightsNotFoundError("offline: no weights"))
    loaded.download("clip:ViT-B-16/openai")
    qtbot.waitUntil(lambda: bool(failures), timeout=WAIT)
    assert failures[0][1:] == ("model", "offline: no weights")
    _fake_fetch(monkeypatch, chunks=2000)
    loaded.download_progress.connect(lambda done, total: loaded.cancel_download())
    with qtbot.waitSignal(loaded.download_cancelled, timeout=WAIT):
        loaded.load_model("clip:chimera-tiny/openai", device="cpu", precision="fp32")
    with qtbot.waitSignal(loaded.image_ready, timeout=WAIT):  # the old model still works
        loaded.show_image("a", images["img0.png"])
    with qtbot.waitSignal(loaded.segmented, timeout=WAIT):
        loaded.segment("a", ["x", "y"])
