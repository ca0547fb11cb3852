"""The Qt adapter of the engine seam: every result arrives as a signal on the GUI thread, only the
newest segment of an image is delivered, the GUI never waits, pre-label and downloads by signal.
(The rules themselves are tested without Qt in test_service.py and test_prelabel.py.)"""

import threading
import time

import numpy as np
import pytest
import torch
from PySide6.QtCore import QTimer

from chimera_app.service.requests import PrelabelSummary
from chimera_app.worker import EngineClient
from chimera_engine import Segmenter, WeightsNotFoundError, clip_loading

from .service_harness import CountingDecoder, write_image as _write

TINY = "clip:chimera-tiny/random"
WAIT = 20_000  # ms; generous: the test machine is shared with training jobs


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
def decodes(loaded):
    """Counts real decodes (in order); ``slow`` seconds of GIL-holding Python work per decode."""
    decoder = CountingDecoder()
    loaded.service.decode = decoder
    return decoder


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
    on_gui, result = results[-1]
    assert on_gui and result.key == "a" and result.generation == gen == loaded.latest_generation("a")
    assert not result.preview and result.labels.shape == result.confidence.shape == (48, 64)
    assert result.labels.dtype == np.int32 and result.confidence.dtype == np.float32
    assert 0 <= result.labels.min() and result.labels.max() <= 2
    assert 0 < result.confidence.min() and result.confidence.max() <= 1
    assert threads_seen == [1]  # the thread budget is set in the engine thread

    with qtbot.waitSignal(loaded.segmented, timeout=WAIT):  # a preview at display size, stable class ids
        loaded.segment("a", ["red", "green"], class_ids=[7, 9], preview=True, display_size=(24, 32))
    _, small = results[-1]
    assert small.preview and small.labels.shape == small.confidence.shape == (24, 32)
    assert small.labels.dtype == np.uint16 and set(np.unique(small.labels)) <= {7, 9}


def test_only_the_newest_segment_of_an_image_is_delivered(loaded, qtbot, images, monkeypatch):
    with qtbot.waitSignal(loaded.image_ready, timeout=WAIT):
        loaded.show_image("a", images["img0.png"])
    started, release = threading.Event(), threading.Event()
    real = Segmenter.segment

    def gated(self, classes, **kwargs):
        started.set()
        release.wait(10)  # the first request is being computed while the user types on
        return real(self, classes, **kwargs)

    monkeypatch.setattr(Segmenter, "segment", gated)
    results = _collect(loaded.segmented)
    loaded.segment("a", ["c"])
    qtbot.waitUntil(started.is_set, timeout=WAIT)
    last = loaded.segment("a", ["car", "road"])
    release.set()
    qtbot.waitUntil(lambda: bool(results), timeout=WAIT)
    qtbot.wait(200)  # the result for "c" arrives too, and must not be delivered
    assert [r[1].generation for r in results] == [last]


def test_the_gui_thread_is_not_blocked_by_engine_work(loaded, qtbot, images, decodes):
    decodes.slow = 0.6
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


def test_prelabel_reports_progress_results_and_skips_a_corrupt_image(loaded, qtbot, images, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    items = [("img0.png", images["img0.png"]), ("bad.png", bad), ("img1.png", images["img1.png"])]
    progress, results, failures = _collect(loaded.prelabel_progress), [], _collect(loaded.prelabel_failed)
    loaded.prelabel_result.connect(results.append)
    with qtbot.waitSignal(loaded.prelabel_finished, timeout=WAIT) as finished:
        assert loaded.prelabel(items, ["red", "green"], class_ids=[3, 5])
    summary = finished.args[0]
    assert isinstance(summary, PrelabelSummary)
    assert summary.done == 2 and summary.skipped == 0 and not summary.cancelled
    assert [key for key, _ in summary.failed] == ["bad.png"] and [f[1] for f in failures] == ["bad.png"]
    assert [p[1:] for p in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)] and all(p[0] for p in progress)
    assert [r.key for r in results] == ["img0.png", "img1.png"]
    assert results[0].labels.shape == results[0].confidence.shape == (48, 64)
    assert results[0].labels.dtype == np.uint16 and set(np.unique(results[0].labels)) <= {3, 5}
    assert not loaded.prelabel_running()


def test_prelabel_cancel_takes_effect_within_one_image_and_resume_finishes(loaded, qtbot, images):
    items = [(k, p) for k, p in images.items()]
    results = []

    def on_result(result):
        results.append(result.key)
        loaded.cancel_prelabel()  # after the first image

    loaded.prelabel_result.connect(on_result)
    with qtbot.waitSignal(loaded.prelabel_finished, timeout=WAIT) as finished:
        loaded.prelabel(items, ["a", "b"])
    summary = finished.args[0]
    assert summary.cancelled and 1 <= summary.done <= 2  # the image in progress may complete
    assert summary.done + summary.skipped == len(items)
    assert list(summary.remaining) == [k for k, _ in items][summary.done:]
    loaded.prelabel_result.disconnect(on_result)
    loaded.prelabel_result.connect(lambda result: results.append(result.key))
    with qtbot.waitSignal(loaded.prelabel_finished, timeout=WAIT) as resumed:
        loaded.prelabel([(k, images[k]) for k in summary.remaining], ["a", "b"])
    assert not resumed.args[0].cancelled and sorted(results) == sorted(images)


def test_errors_are_reported_by_kind_on_the_gui_thread(client, qtbot, images, tmp_path):
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
    assert info.name == TINY and info.device == "CPU fp32" and info.reason == "as requested"
    client.show_image("gone", tmp_path / "missing.png")
    expect("image", "missing.png")
    assert [f[1] for f in image_failures] == ["gone"]
    assert not client.prelabel([("a", images["img0.png"])], [])  # empty class list: refused
    expect("engine", "ClassNameError")


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
        client.download("clip:ViT-B-16/openai")
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
