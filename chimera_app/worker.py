"""The app's one boundary to the engine: model work runs on an engine thread, results come back as signals.

    client = EngineClient()                                   # on the GUI thread
    client.image_ready.connect(...); client.segmented.connect(...); client.failed.connect(...)
    client.load_model("shapes-chimera")                       # -> model_loaded(dict) | failed(kind, msg)
    client.show_image(rel, path)                              # -> image_ready(rel, rgb)
    gen = client.segment(rel, prompts, display_size=(h, w))   # -> segmented(rel, gen, labels, confidence)

Why it is built this way:
- The GUI thread only appends to a job queue (a lock held for microseconds, never during inference)
  and receives queued signals. Every public signal is emitted on the GUI thread, so any slot or
  lambda connected to it runs there.
- One engine thread takes the most urgent job first: interactive work (model, the image on screen,
  segment) before prefetch before batch pre-label, first come first served within a level. A batch
  runs one image per job, so what the user asks for waits at most one image.
- Latest wins: a newer ``segment`` for an image replaces its queued one, and only the result of an
  image's newest request is delivered (older ones would label with a stale class list). A new
  ``show_image`` drops queued work for the images the user has left; a new ``prefetch`` replaces
  the old list.
- Decoded images are kept in a small LRU next to the engine's feature LRU (``cache_images``), so a
  prefetched image is shown and segmented without decoding or encoding again.
- Prefetch encodes run on a background thread of their own (at a lower OS priority), so a key press
  or a D press never waits behind a multi-second encode of an image the user has not asked for yet;
  the features join the engine's LRU through a tiny job on the engine thread.
- Downloads run on a thread of their own: they wait on the network, not on the model.
- Errors never end the engine thread; they become ``failed(kind, message)`` (see ``prelabel.error_kind``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from chimera_app.prelabel import PrelabelRun, error_kind, to_class_ids
from engine import ImageFeatures, ModelNameError, Segmenter, clip_loading, load_image
from engine.devices import choose
from engine.models import build_model

log = logging.getLogger(__name__)

INTERACTIVE, PREFETCH, BATCH = 0, 1, 2  # job priorities: lower runs first


def default_threads() -> int:
    """All cores the process may use but one, which the GUI thread keeps."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


class DownloadCancelled(BaseException):
    """Raised from a progress callback to stop a download. A BaseException on purpose: the hub client
    and ``fetch_weights`` catch ``Exception`` to try other file names, which must not swallow a cancel."""


@dataclasses.dataclass
class Job:
    priority: int
    kind: str  # load, options, show, encode, segment, prefetch, prefetch-encode, store-features, prelabel
    key: str = ""
    args: tuple = ()
    seq: int = 0  # arrival order; a follow-up job keeps its parent's place


class JobQueue:
    """Thread-safe priority queue whose producers can drop superseded jobs as they add new ones."""

    def __init__(self):
        self._jobs: list[Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count(1)
        self._stopped = False

    def put(self, jobs: Job | Sequence[Job], drop: Callable[[Job], bool] | None = None,
            keep_seq: bool = False) -> None:
        jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
        with self._cond:
            if self._stopped:
                return
            if drop is not None:
                self._jobs = [j for j in self._jobs if not drop(j)]
            for job in jobs:
                if not keep_seq:
                    job.seq = next(self._seq)
                self._jobs.append(job)
            self._cond.notify()

    def take(self) -> Job | None:
        """The most urgent job; blocks while there is none; None once stopped."""
        with self._cond:
            while not self._jobs and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            job = min(self._jobs, key=lambda j: (j.priority, j.seq))
            self._jobs.remove(job)
            return job

    def pending(self) -> list[tuple[str, str]]:
        with self._cond:
            return [(j.kind, j.key) for j in sorted(self._jobs, key=lambda j: (j.priority, j.seq))]

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify_all()


class RgbCache:
    """LRU of decoded images, bounded by count and bytes (the newest image always stays)."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items, self.max_bytes = max(1, max_items), max_bytes
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: str, rgb: np.ndarray) -> None:
        self._items[key] = rgb
        self._items.move_to_end(key)
        while len(self._items) > 1 and (len(self._items) > self.max_items
                                        or sum(a.nbytes for a in self._items.values()) > self.max_bytes):
            self._items.popitem(last=False)


class Progress:
    """A download progress callback: forwards at most every ``interval`` s (and the last call) and
    raises DownloadCancelled once ``cancel`` is set, which stops the download inside the hub client."""

    def __init__(self, emit: Callable[[int, int], None], cancel: threading.Event, interval: float = 0.05):
        self._emit, self._cancel, self._interval, self._last = emit, cancel, interval, 0.0

    def __call__(self, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise DownloadCancelled()
        now = time.monotonic()
        if now - self._last >= self._interval or (total and done >= total):
            self._last = now
            self._emit(int(done), int(total))


def clip_spec_of(spec: str) -> clip_loading.ClipSpec:
    """``clip:<arch>/<tag>``, ``chimera:<preset>/<arch>/<tag>`` or ``<arch>/<tag>`` → the CLIP to fetch."""
    text = spec.strip()
    if text.startswith("clip:"):
        text = text[len("clip:"):]
    elif text.startswith("chimera:"):
        text = text[len("chimera:"):].partition("/")[2]
    return clip_loading.ClipSpec.parse(text)


def output_size(display: tuple[int, int] | None, full: tuple[int, int]) -> tuple[int, int] | None:
    """The size to score at: ``display`` clamped to the image (never upsampled), None = full size."""
    if display is None:
        return None
    h, w = max(1, min(int(display[0]), full[0])), max(1, min(int(display[1]), full[1]))
    return None if (h, w) == tuple(full) else (h, w)


# Jobs after which freed memory goes back to the OS: they allocate and free hundreds of MB (window
# activations, full-size maps), which glibc otherwise keeps resident (~150-300 MB measured after a
# 12 MP image). Not the keystroke previews: they allocate little and must stay fast.
_TRIM_AFTER = frozenset({"encode", "segment", "prelabel", "store-features"})
TRIM_MIN_FREE = 16 << 20  # below this, trimming would only cost page faults later


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _glibc():
    """(malloc_trim, mallinfo2 or None) of glibc; None elsewhere (other allocators need no help)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    info = getattr(libc, "mallinfo2", None)  # glibc >= 2.33
    if info is not None:
        info.restype = _MallInfo2
    return trim, info


def release_free_memory(min_free: int = TRIM_MIN_FREE) -> bool:
    """Hand memory that is freed but still held by the C heap back to the OS, when at least
    ``min_free`` bytes are (~5 ms). True if it trimmed."""
    libc = _glibc()
    if libc is None:
        return False
    trim, info = libc
    if info is not None and info().fordblks < min_free:
        return False  # too little to matter: the pages would only be faulted in again
    trim(0)
    return True


def _background_thread_setup() -> None:
    """Prefetch thread: a lower OS priority (Linux: per thread), so interactive work comes first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # other platforms: same priority, still off the engine thread
        pass


class EngineWorker(QObject):
    """Runs jobs on the engine thread. Owns the segmenter and the decoded-image LRU; only this thread
    touches them. Its signals reach ``EngineClient`` through queued connections."""

    model_loaded = Signal(dict)
    image_ready = Signal(str, object)
    image_failed = Signal(str, str)
    segmented = Signal(str, int, object, object)
    prelabel_progress = Signal(int, int)
    prelabel_result = Signal(str, object, object)
    prelabel_failed = Signal(str, str)
    prelabel_finished = Signal(dict)
    download_progress = Signal("qint64", "qint64")  # bytes: beyond 32-bit ints for large weights
    download_finished = Signal(str)
    download_cancelled = Signal()
    failed = Signal(str, str)

    def __init__(self, queue: JobQueue, threads: int, cache_images: int, rgb_cache_bytes: int,
                 cancel_download: threading.Event):
        super().__init__()
        self.queue, self.threads, self.cache_images = queue, threads, cache_images
        self.segmenter: Segmenter | None = None
        self._rgbs = RgbCache(cache_images, rgb_cache_bytes)
        self._paths: dict[str, Path] = {}
        self._cancel_download = cancel_download
        self._background = ThreadPoolExecutor(1, thread_name_prefix="chimera-prefetch",
                                              initializer=_background_thread_setup)
        self._encoding: dict[str, Future] = {}  # key -> background encode in flight
        self.min_confidence = 0.0  # the unlabeled rule, kept across model loads

    def run(self) -> None:
        """The engine thread's whole life: take jobs until the queue is stopped."""
        torch.set_num_threads(self.threads)  # per process, but set here: the GUI keeps its core
        while (job := self.queue.take()) is not None:
            self._execute(job)
            # Not after a preview (display_size given): little to free, and typing must stay quick.
            if job.kind in _TRIM_AFTER and not (job.kind == "segment" and job.args[1] is not None):
                release_free_memory()

    def _execute(self, job: Job) -> None:
        try:
            getattr(self, "_do_" + job.kind.replace("-", "_"))(job)
        except DownloadCancelled:
            self.download_cancelled.emit()
        except Exception as exc:  # the engine thread survives everything; the GUI shows what broke
            kind, message = error_kind(exc)
            if kind == "engine":
                log.error("engine job %s failed", job.kind, exc_info=exc)
            if kind == "memory":
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            if job.kind == "show":
                self.image_failed.emit(job.key, message)
            self.failed.emit(kind, message)

    # -- jobs -----------------------------------------------------------------------------------
    def _do_load(self, job: Job) -> None:
        name, device, precision = job.args
        self._cancel_download.clear()
        try:
            choice = choose(device, precision)
        except RuntimeError as exc:  # e.g. "cuda" asked for on a machine without one
            raise ModelNameError(str(exc)) from exc
        progress = Progress(self.download_progress.emit, self._cancel_download)
        # Built before the old one is dropped: if this fails, the old model keeps working.
        # One window per forward pass on a CPU: as fast as batches there, and a batch of ViT-B/16
        # windows holds ~65 MB of attention maps per window at once.
        batch = 1 if choice.device.type == "cpu" else 4
        self.segmenter = Segmenter(build_model(name, progress), choice, batch_size=batch,
                                   cache_images=self.cache_images, min_confidence=self.min_confidence)
        gc.collect()
        release_free_memory()  # the old model's weights, and what building the new one left
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(choice.dtype, "fp32")
        self.model_loaded.emit({"name": name, "device": f"{choice.device.type.upper()} {dtype}",
                                "device_type": choice.device.type, "precision": dtype, "reason": choice.reason,
                                "description": self.segmenter.describe(), "kind": self.segmenter.model.kind})

    def _do_show(self, job: Job) -> None:
        rgb = self._image(job.key, job.args[0])
        self.image_ready.emit(job.key, rgb)
        if self.segmenter is not None and not self.segmenter.is_cached(job.key):
            # A job of its own, so that moving on to another image drops it; it keeps the show's
            # place in the queue, ahead of the segment requests that came in meanwhile.
            self.queue.put(Job(INTERACTIVE, "encode", job.key, seq=job.seq), keep_seq=True)

    def _do_encode(self, job: Job) -> None:
        self._features(job.key)

    def _do_options(self, job: Job) -> None:
        (self.min_confidence,) = job.args
        if self.segmenter is not None:
            self.segmenter.min_confidence = self.min_confidence

    def _do_segment(self, job: Job) -> None:
        prompts, display_size, generation, class_ids = job.args
        features = self._features(job.key)
        out = self.segmenter.segment(prompts, features=features,
                                     output_size=output_size(display_size, features.size),
                                     quick_text=display_size is not None)
        self.segmented.emit(job.key, generation, to_class_ids(out.labels, class_ids), out.confidence)

    def _do_prefetch(self, job: Job) -> None:
        self._image(job.key, job.args[0])
        if self.segmenter is not None and not self.segmenter.is_cached(job.key):
            self.queue.put(Job(PREFETCH, "prefetch-encode", job.key, seq=job.seq), keep_seq=True)

    def _do_prefetch_encode(self, job: Job) -> None:
        if self.segmenter is None or self.segmenter.is_cached(job.key) or job.key in self._encoding:
            return
        segmenter, rgb = self.segmenter, self._image(job.key)
        future = self._background.submit(lambda: segmenter.encode([rgb])[0])
        self._encoding[job.key] = future
        future.add_done_callback(lambda f, key=job.key, seg=segmenter: self.queue.put(
            Job(INTERACTIVE, "store-features", key, (f, seg))))

    def stop_background(self) -> None:
        self._background.shutdown(wait=False, cancel_futures=True)

    def _do_store_features(self, job: Job) -> None:
        future, segmenter = job.args
        if self._encoding.get(job.key) is future:
            del self._encoding[job.key]
        if segmenter is self.segmenter and future.exception() is None and not segmenter.is_cached(job.key):
            segmenter.add_features(job.key, future.result())

    def _do_prelabel(self, job: Job) -> None:
        run: PrelabelRun = job.args[0]
        if not run.finished and self.segmenter is None:
            run.error = "no model is loaded: load one before pre-labelling"
            run.cancel()
            self.failed.emit("model", run.error)
        if run.finished:
            run.close()
            self.prelabel_finished.emit(run.summary())
            return
        if not run.started:
            run.started = True
            self.prelabel_progress.emit(0, run.total)
        result = run.step(self.segmenter)
        if result is not None:
            if result.error is not None:
                self.prelabel_failed.emit(result.key, result.error)
            else:
                self.prelabel_result.emit(result.key, result.labels, result.confidence)
            self.prelabel_progress.emit(run.done + len(run.failed), run.total)
        self.queue.put(job)  # the next image, after whatever the user asked for meanwhile

    # -- helpers --------------------------------------------------------------------------------
    def _image(self, key: str, path: Path | None = None) -> np.ndarray:
        """The decoded image of ``key`` (a key names one file for the session)."""
        if path is not None:
            self._paths[key] = Path(path)
        rgb = self._rgbs.get(key)
        if rgb is None:
            if key not in self._paths:
                raise KeyError(f"no image is known under the key {key!r}: call show_image first")
            rgb = load_image(self._paths[key])
            rgb.flags.writeable = False  # shared with the GUI and the cache: nobody may paint on it
            self._rgbs.put(key, rgb)
        return rgb

    def _features(self, key: str) -> ImageFeatures:
        if self.segmenter is None:
            raise ModelNameError("no model is loaded yet: choose one in the model dialog")
        pending = self._encoding.pop(key, None)
        if pending is not None and not self.segmenter.is_cached(key):
            try:  # already being encoded in the background: wait for it rather than start over
                self.segmenter.add_features(key, pending.result())
            except Exception:  # noqa: BLE001 -- encode it here instead, reporting this one's error
                pass
        if not self.segmenter.is_cached(key):
            self.segmenter.set_image(self._image(key), key=key)
        return self.segmenter.features(key)

    def run_download(self, spec: str) -> None:
        """Runs on the download thread; touches only signals and the cancel flag."""
        try:
            path = clip_loading.fetch_weights(
                clip_spec_of(spec), Progress(self.download_progress.emit, self._cancel_download))
        except DownloadCancelled:
            self.download_cancelled.emit()
        except Exception as exc:  # noqa: BLE001 -- reported by kind; the app goes on
            self.failed.emit(*error_kind(exc))
        else:
            self.download_finished.emit(str(path))


class _EngineThread(QThread):
    def __init__(self, worker: EngineWorker):
        super().__init__()
        self._worker = worker

    def run(self) -> None:
        self._worker.run()


class EngineClient(QObject):
    """The GUI-side handle. Methods return at once; results arrive as signals on the GUI thread.

    Labels in ``segmented``/``prelabel_result`` are int32 indices into the prompts (-1 = unlabeled),
    or uint16 stable class ids (0 = unlabeled) when ``class_ids`` is given.
    """

    model_loaded = Signal(dict)  # name, device ("CPU fp32"), device_type ("cpu"/"cuda"/"mps"), precision,
    #                              reason (why this device), description, kind
    image_ready = Signal(str, object)  # key, H x W x 3 uint8 RGB (read-only)
    image_failed = Signal(str, str)  # key, message (also reported through failed("image", ...))
    segmented = Signal(str, int, object, object)  # key, generation, labels, confidence float32
    prelabel_progress = Signal(int, int)  # images handled (labelled or failed), total
    prelabel_result = Signal(str, object, object)  # key, labels (full size), confidence
    prelabel_failed = Signal(str, str)  # key, reason (the batch goes on)
    prelabel_finished = Signal(dict)  # total, done, skipped, failed [(key, reason)], cancelled, remaining
    download_progress = Signal("qint64", "qint64")  # bytes done, bytes total (0 = unknown)
    download_finished = Signal(str)  # local weights file
    download_cancelled = Signal()
    failed = Signal(str, str)  # kind: image | model | memory | engine; message to show

    _report = Signal(str, str)  # a refusal found on the GUI thread, delivered later like any failure

    def __init__(self, threads: int | None = None, cache_images: int = 8, rgb_cache_bytes: int = 1 << 30,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.threads = threads or default_threads()
        self._queue = JobQueue()
        self._cancel_download = threading.Event()
        self._worker = EngineWorker(self._queue, self.threads, cache_images, rgb_cache_bytes,
                                    self._cancel_download)
        self._thread = _EngineThread(self._worker)
        self._worker.moveToThread(self._thread)
        queued = Qt.ConnectionType.QueuedConnection  # explicit: emitted on the GUI thread, always
        for name in ("model_loaded", "image_ready", "image_failed", "prelabel_progress", "prelabel_result",
                     "prelabel_failed", "download_progress", "download_finished", "download_cancelled",
                     "failed"):
            getattr(self._worker, name).connect(getattr(self, name), queued)
        self._worker.segmented.connect(self._on_segmented, queued)
        self._worker.prelabel_finished.connect(self._on_prelabel_finished, queued)
        self._report.connect(self.failed, queued)
        self._generations = itertools.count(1)
        self._latest: dict[str, int] = {}
        self._prelabel: PrelabelRun | None = None
        self._download: threading.Thread | None = None
        self._thread.start()

    # -- requests -------------------------------------------------------------------------------
    def load_model(self, name: str, device: str = "auto", precision: str = "auto") -> None:
        """Build a model (downloading weights if needed, with download_progress and cancel_download)."""
        self._queue.put(Job(INTERACTIVE, "load", name, (name, device, precision)),
                        drop=lambda j: j.kind == "load")

    def show_image(self, key: str, path: str | os.PathLike) -> None:
        """Decode (or take from the LRU) and emit image_ready, then encode; drops queued work for other images."""
        self._queue.put(Job(INTERACTIVE, "show", key, (Path(path),)),
                        drop=lambda j: j.kind in ("show", "encode") or (j.kind == "segment" and j.key != key))

    def segment(self, key: str, prompts: Sequence[str], display_size: tuple[int, int] | None = None,
                class_ids: Sequence[int] | None = None) -> int:
        """Score ``key`` for ``prompts`` (at ``display_size`` (h, w) if given); returns the generation."""
        generation = next(self._generations)
        self._latest[key] = generation
        args = (list(prompts), display_size, generation, None if class_ids is None else list(class_ids))
        self._queue.put(Job(INTERACTIVE, "segment", key, args),
                        drop=lambda j: j.kind == "segment" and j.key == key)
        return generation

    def set_min_confidence(self, value: float) -> None:
        """Pixels whose best class is less likely than ``value`` stay unlabeled (0 = every pixel gets
        its best class). Applies to every later segment and pre-label result, and to later models."""
        self._queue.put(Job(INTERACTIVE, "options", "", (float(value),)), drop=lambda j: j.kind == "options")

    def latest_generation(self, key: str) -> int | None:
        return self._latest.get(key)

    def prefetch(self, keys_paths: Sequence[tuple[str, str | os.PathLike]]) -> None:
        """Decode and encode these images when nothing more urgent waits; replaces the previous list."""
        jobs = [Job(PREFETCH, "prefetch", str(key), (Path(path),)) for key, path in keys_paths]
        self._queue.put(jobs, drop=lambda j: j.kind in ("prefetch", "prefetch-encode"))

    def prelabel(self, items: Sequence[tuple[str, str | os.PathLike]], prompts: Sequence[str],
                 class_ids: Sequence[int] | None = None) -> bool:
        """Start a batch over ``items`` (the caller leaves out verified/done ones); False if refused."""
        if self._prelabel is not None:
            self._report.emit("engine", "a batch pre-label is already running: cancel it first")
            return False
        try:  # an invalid class list fails here, before any image is read
            run = PrelabelRun(items, prompts, class_ids, decode=load_image)
        except Exception as exc:  # noqa: BLE001 -- any refusal is reported like an engine failure
            self._report.emit(*error_kind(exc))
            return False
        self._prelabel = run
        self._queue.put(Job(BATCH, "prelabel", "", (run,)))
        return True

    def prelabel_running(self) -> bool:
        return self._prelabel is not None

    def cancel_prelabel(self) -> None:
        if self._prelabel is not None:
            self._prelabel.cancel()

    def download(self, spec: str) -> bool:
        """Fetch CLIP weights into the Hugging Face cache on a thread of their own; False if one runs."""
        if self._download is not None and self._download.is_alive():
            self._report.emit("engine", "a download is already running")
            return False
        self._cancel_download.clear()
        self._download = threading.Thread(target=self._worker.run_download, args=(spec,),
                                          name="chimera-download", daemon=True)
        self._download.start()
        return True

    def cancel_download(self) -> None:
        """Stops a download (``download`` or inside ``load_model``) at its next progress report."""
        self._cancel_download.set()

    def pending(self) -> list[tuple[str, str]]:
        """Queued (kind, key) pairs, most urgent first, then ("encoding", key) for background
        encodes in flight (for tests, benchmarks and a status line)."""
        return self._queue.pending() + [("encoding", key) for key in list(self._worker._encoding)]

    def shutdown(self, wait_ms: int = 10_000) -> bool:
        """Stop taking jobs and wait for the current one (app exit only); True if the thread ended."""
        self.cancel_prelabel()
        self._cancel_download.set()
        self._queue.stop()
        ended = self._thread.wait(wait_ms)
        self._worker.stop_background()
        if self._prelabel is not None:
            self._prelabel.close()  # its decode-ahead thread; the engine thread will not step it again
        if not ended:  # a QThread destroyed while running aborts the process: keep it referenced
            _STILL_RUNNING.append(self._thread)
        return ended

    # -- results --------------------------------------------------------------------------------
    @Slot(str, int, object, object)
    def _on_segmented(self, key: str, generation: int, labels, confidence) -> None:
        if generation == self._latest.get(key):  # older requests were answered for another class list
            self.segmented.emit(key, generation, labels, confidence)

    @Slot(dict)
    def _on_prelabel_finished(self, summary: dict) -> None:
        self._prelabel = None
        self.prelabel_finished.emit(summary)


_STILL_RUNNING: list[QThread] = []
