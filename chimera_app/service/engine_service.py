"""The app's engine, Qt-free: one engine thread runs typed requests; results go to a callback.

    service = EngineService(emit=results.append)         # emit is called on the service's threads
    threading.Thread(target=service.run).start()         # the engine thread
    service.submit(LoadModel("shapes-chimera"))          # -> ModelLoaded | Failed
    service.submit(ShowImage("a.png", path))             # -> ImageReady | ImageFailed + Failed
    service.submit(Segment("a.png", ("cat",), generation=1))   # -> Segmented
    service.prelabel(items, prompts, class_ids)          # -> PrelabelProgress, PrelabelResult..., PrelabelSummary

Why it is built this way:
- Callers only append to a job queue (a lock held for microseconds, never during inference).
- One engine thread takes the most urgent job first: interactive work (the model, the image on
  screen, segment) before prefetch before a folder pre-label, first come first served within a
  level; a pre-label runs one image per job, so what the user asks for waits at most one image.
  Requests that a newer one makes pointless are dropped as it arrives (``Request.supersedes``).
- Prefetch encodes run on a background thread of their own (at a lower OS priority), so a key
  press never waits behind a multi-second encode of an image the user has not asked for yet; the
  features join the engine's LRU through a tiny job on the engine thread.
- Downloads run on a thread of their own: they wait on the network, not on the model.
- Errors never end the engine thread; they become ``Failed(kind, message)`` (``service.errors``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from chimera_app.service.caches import RgbCache
from chimera_app.service.downloads import Progress, StopDownload, fetch_clip_weights
from chimera_app.service.errors import error_kind, recover
from chimera_app.service.job_queue import JobQueue
from chimera_app.service.memory import release_free_memory
from chimera_app.service.prelabel import Prelabeler, to_class_ids
from chimera_app.service.requests import (
    DownloadCancelled,
    DownloadFinished,
    DownloadProgress,
    EncodeAhead,
    EncodeImage,
    Failed,
    ImageFailed,
    ImageReady,
    LoadModel,
    ModelLoaded,
    Prefetch,
    PrelabelProgress,
    PrelabelStep,
    Request,
    Segment,
    Segmented,
    SetOptions,
    ShowImage,
    StoreFeatures,
)
from chimera_engine.errors import ModelNameError

Emit = Callable[[object], None]


def default_threads() -> int:
    """All cores the process may use but one, which the GUI thread keeps."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def output_size(display: tuple[int, int] | None, full: tuple[int, int]) -> tuple[int, int] | None:
    """The size to score at: ``display`` clamped to the image (never upsampled), None = full size."""
    if display is None:
        return None
    h, w = max(1, min(int(display[0]), full[0])), max(1, min(int(display[1]), full[1]))
    return None if (h, w) == tuple(full) else (h, w)


def _background_thread_setup() -> None:
    """Prefetch thread: a lower OS priority (Linux: per thread), so interactive work comes first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # other platforms: same priority, still off the engine thread
        pass


def _load_image(path: Path) -> np.ndarray:
    from chimera_engine.images import load_image

    return load_image(path)


class EngineService:
    """Owns the segmenter, the decoded-image LRU and the background encoder; only the engine
    thread (``run``) touches them. Public methods may be called from any thread."""

    def __init__(self, emit: Emit, threads: int | None = None, cache_images: int = 8,
                 rgb_cache_bytes: int = 1 << 30, decode: Callable[[Path], np.ndarray] = _load_image):
        self.emit = emit
        self.threads = threads or default_threads()
        self.cache_images = cache_images
        self.decode = decode
        self.segmenter = None  # chimera_engine.Segmenter, once a model is loaded
        self.min_confidence = 0.0  # the unlabeled rule, kept across model loads
        self.queue = JobQueue()
        self._rgbs = RgbCache(cache_images, rgb_cache_bytes)
        self._paths: dict[str, Path] = {}
        self._background = ThreadPoolExecutor(1, thread_name_prefix="chimera-prefetch",
                                              initializer=_background_thread_setup)
        self._encoding: dict[str, Future] = {}  # key -> background encode in flight
        self._lock = threading.Lock()  # guards _encoding, _prelabel and _download for other threads
        self._prelabel: Prelabeler | None = None
        self._download: threading.Thread | None = None
        self._cancel_download = threading.Event()

    # -- requests (any thread) ------------------------------------------------------------------
    def submit(self, requests: Request | Sequence[Request]) -> None:
        self.queue.put(requests)

    def prelabel(self, items: Sequence[tuple[str, str | os.PathLike]], prompts: Sequence[str],
                 class_ids: Sequence[int] | None = None) -> bool:
        """Start a folder pre-label (the caller leaves out verified/done images); False (and a
        ``Failed``) if one runs already or the class list is invalid."""
        refusal = None
        with self._lock:
            if self._prelabel is not None:
                refusal = Failed("engine", "a batch pre-label is already running: cancel it first")
            else:
                try:  # an invalid class list fails here, before any image is read
                    self._prelabel = run = Prelabeler(items, prompts, class_ids, decode=self.decode)
                except Exception as exc:  # noqa: BLE001 -- any refusal is reported like an engine failure
                    refusal = Failed(*error_kind(exc))
        if refusal is not None:
            self.emit(refusal)
            return False
        self.emit(PrelabelProgress(0, run.total))
        self.queue.put(PrelabelStep(run))
        return True

    def prelabel_running(self) -> bool:
        return self._prelabel is not None

    def cancel_prelabel(self) -> None:
        run = self._prelabel
        if run is not None:
            run.cancel()

    def download(self, spec: str) -> bool:
        """Fetch CLIP weights into the Hugging Face cache on a thread of their own; False if one runs."""
        with self._lock:
            busy = self._download is not None and self._download.is_alive()
            if not busy:
                self._cancel_download.clear()
                self._download = threading.Thread(target=self._run_download, args=(spec,),
                                                  name="chimera-download", daemon=True)
                self._download.start()
        if busy:
            self.emit(Failed("engine", "a download is already running"))
        return not busy

    def cancel_download(self) -> None:
        """Stops a download (``download`` or inside ``LoadModel``) at its next progress report."""
        self._cancel_download.set()

    def pending(self) -> list[tuple[str, str]]:
        """(request type, key) of queued jobs, most urgent first, then ("encoding", key) for
        background encodes in flight (for tests, benchmarks and a status line)."""
        with self._lock:
            encoding = list(self._encoding)
        return [(type(r).__name__, getattr(r, "key", "")) for r in self.queue.pending()] + \
            [("encoding", key) for key in encoding]

    def stop(self) -> None:
        """Stop taking jobs (the current one completes) and cancel what runs in the background."""
        self.cancel_prelabel()
        self._cancel_download.set()
        self.queue.stop()

    def close(self) -> None:
        """After the engine thread ended: release the helper threads."""
        self._background.shutdown(wait=False, cancel_futures=True)
        if self._prelabel is not None:
            self._prelabel.close()

    # -- the engine thread ----------------------------------------------------------------------
    def run(self) -> None:
        """The engine thread's whole life: take jobs until the queue is stopped."""
        import torch

        torch.set_num_threads(self.threads)  # per process, but set here: the GUI keeps its core
        handlers = {LoadModel: self._load, SetOptions: self._set_options, ShowImage: self._show,
                    EncodeImage: self._encode, Segment: self._segment, Prefetch: self._prefetch,
                    EncodeAhead: self._encode_ahead, StoreFeatures: self._store_features,
                    PrelabelStep: self._prelabel_step}
        while (job := self.queue.take()) is not None:
            arrival, request = job
            try:
                handlers[type(request)](request, arrival)
            except StopDownload:
                self.emit(DownloadCancelled())
            except Exception as exc:  # the engine thread survives everything; the GUI shows what broke
                kind, message = recover(exc, type(request).__name__)
                if isinstance(request, ShowImage):
                    self.emit(ImageFailed(request.key, message))
                self.emit(Failed(kind, message))
            # After big jobs, freed memory goes back to the OS; not after a preview: it allocates
            # little, and typing must stay quick.
            if isinstance(request, (EncodeImage, StoreFeatures, PrelabelStep, LoadModel)) or (
                    isinstance(request, Segment) and not request.preview):
                release_free_memory()

    def _load(self, request: LoadModel, arrival: int) -> None:
        import gc

        import torch

        from chimera_engine.devices import choose
        from chimera_engine.models import build_model
        from chimera_engine.segmenter import Segmenter

        self._cancel_download.clear()
        try:
            choice = choose(request.device, request.precision)
        except RuntimeError as exc:  # e.g. "cuda" asked for on a machine without one
            raise ModelNameError(str(exc)) from exc
        progress = Progress(lambda done, total: self.emit(DownloadProgress(done, total)), self._cancel_download)
        # Built before the old one is dropped: if this fails, the old model keeps working.
        # One window per forward pass on a CPU: as fast as batches there, and the smallest peak memory.
        batch = 1 if choice.device.type == "cpu" else 4
        self.segmenter = Segmenter(build_model(request.name, progress), choice, batch_size=batch,
                                   cache_images=self.cache_images, min_confidence=self.min_confidence,
                                   weight_storage="auto")  # the service owns this model: fp16 storage on CPUs
        gc.collect()  # the old model's weights
        settled = self.segmenter.device  # precision "auto" is settled on the model itself
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(settled.dtype, "fp32")
        self.emit(ModelLoaded(request.name, f"{settled.device.type.upper()} {dtype}", settled.device.type, dtype,
                              settled.reason, self.segmenter.describe(), self.segmenter.model.kind))

    def _set_options(self, request: SetOptions, arrival: int) -> None:
        self.min_confidence = request.min_confidence
        if self.segmenter is not None:
            self.segmenter.min_confidence = request.min_confidence

    def _show(self, request: ShowImage, arrival: int) -> None:
        rgb = self._image(request.key, request.path)
        self.emit(ImageReady(request.key, rgb))
        if self.segmenter is not None and not self.segmenter.is_cached(request.key):
            # Keeps the show's place in the queue, ahead of the segments that came in meanwhile.
            self.queue.put(EncodeImage(request.key), after=arrival)

    def _encode(self, request: EncodeImage, arrival: int) -> None:
        self._features(request.key)

    def _segment(self, request: Segment, arrival: int) -> None:
        features = self._features(request.key)
        out = self.segmenter.segment(request.prompts, features=features, quick_text=request.preview,
                                     output_size=output_size(request.display_size, features.size))
        self.emit(Segmented(request.key, request.generation, to_class_ids(out.labels, request.class_ids),
                            out.confidence, request.preview))

    def _prefetch(self, request: Prefetch, arrival: int) -> None:
        self._image(request.key, request.path)
        if self.segmenter is not None and not self.segmenter.is_cached(request.key):
            self.queue.put(EncodeAhead(request.key), after=arrival)

    def _encode_ahead(self, request: EncodeAhead, arrival: int) -> None:
        key, segmenter = request.key, self.segmenter
        if segmenter is None or segmenter.is_cached(key) or key in self._encoding:  # only this thread adds
            return
        rgb = self._image(key)
        future = self._background.submit(lambda: segmenter.encode([rgb])[0])
        with self._lock:
            self._encoding[key] = future
        future.add_done_callback(lambda f: self.queue.put(StoreFeatures(key, f, segmenter)))

    def _store_features(self, request: StoreFeatures, arrival: int) -> None:
        with self._lock:
            if self._encoding.get(request.key) is request.future:
                del self._encoding[request.key]
        segmenter, future = request.segmenter, request.future
        if segmenter is self.segmenter and future.exception() is None and not segmenter.is_cached(request.key):
            segmenter.add_features(request.key, future.result())

    def _prelabel_step(self, request: PrelabelStep, arrival: int) -> None:
        run: Prelabeler = request.run
        if not run.finished and self.segmenter is None:
            run.cancel(error="no model is loaded: load one before pre-labelling")
            self.emit(Failed("model", run.error))
        if run.finished:
            run.close()
            with self._lock:
                self._prelabel = None  # before the summary: whoever receives it may start another
            self.emit(run.summary())
            return
        for result in run.step(self.segmenter):
            self.emit(result)
            self.emit(PrelabelProgress(run.handled, run.total))
        self.queue.put(request)  # the next image, after whatever the user asked for meanwhile

    # -- helpers --------------------------------------------------------------------------------
    def _image(self, key: str, path: Path | None = None) -> np.ndarray:
        """The decoded image of ``key`` (a key names one file for the session)."""
        if path is not None:
            self._paths[key] = Path(path)
        rgb = self._rgbs.get(key)
        if rgb is None:
            if key not in self._paths:
                raise KeyError(f"no image is known under the key {key!r}: show it first")
            rgb = self.decode(self._paths[key])
            rgb.flags.writeable = False  # shared with the GUI and the cache: nobody may paint on it
            self._rgbs.put(key, rgb)
        return rgb

    def _features(self, key: str):
        if self.segmenter is None:
            raise ModelNameError("no model is loaded yet: choose one in the model dialog")
        with self._lock:
            pending = self._encoding.pop(key, None)
        if pending is not None and not self.segmenter.is_cached(key):
            try:  # already being encoded in the background: wait for it rather than start over
                self.segmenter.add_features(key, pending.result())
            except Exception:  # noqa: BLE001 -- encode it here instead, reporting this one's error
                pass
        if not self.segmenter.is_cached(key):
            self.segmenter.set_image(self._image(key), key=key)
        return self.segmenter.features(key)

    def _run_download(self, spec: str) -> None:
        """The download thread: touches only ``emit`` and the cancel flag."""
        try:
            path = fetch_clip_weights(spec, Progress(lambda d, t: self.emit(DownloadProgress(d, t)),
                                                     self._cancel_download))
        except StopDownload:
            self.emit(DownloadCancelled())
        except Exception as exc:  # noqa: BLE001 -- reported by kind; the app goes on
            self.emit(Failed(*error_kind(exc)))
        else:
            self.emit(DownloadFinished(str(path)))
