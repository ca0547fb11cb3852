"""The Qt side of the engine seam: ``EngineClient`` runs an ``EngineService`` on an engine thread and
turns its typed results into signals on the GUI thread.

    client = EngineClient()                                   # on the GUI thread
    client.image_ready.connect(...); client.segmented.connect(...); client.failed.connect(...)
    client.load_model("shapes-chimera")                       # -> model_loaded(ModelLoaded) | failed(kind, msg)
    client.show_image(rel, path)                              # -> image_ready(rel, rgb)
    gen = client.segment(rel, prompts, class_ids=ids)         # -> segmented(Segmented)

Everything that decides anything (priorities, latest wins, caches, the pre-label pipeline, error
kinds) is in ``chimera_app.service`` and tested without Qt. This adapter only carries results
across threads: the service's threads emit one private signal per result, queued to the GUI
thread, where it becomes the public signal of its type. Every public signal is therefore emitted
on the GUI thread, and any slot connected to it runs there.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal

from chimera_app.service.caches import Generations
from chimera_app.service.engine_service import EngineService
from chimera_app.service.requests import (
    DownloadCancelled,
    DownloadFinished,
    DownloadProgress,
    Failed,
    ImageFailed,
    ImageReady,
    LoadModel,
    ModelLoaded,
    Prefetch,
    PrelabelProgress,
    PrelabelResult,
    PrelabelSummary,
    Segment,
    Segmented,
    SetOptions,
    ShowImage,
)


class EngineClient(QObject):
    """The GUI-side handle. Methods return at once; results arrive as signals on the GUI thread."""

    model_loaded = Signal(object)  # ModelLoaded: name, device ("CPU fp32"), device_type, precision, reason, ...
    image_ready = Signal(str, object)  # key, H x W x 3 uint8 RGB (read-only)
    image_failed = Signal(str, str)  # key, message (also reported through failed("image", ...))
    segmented = Signal(object)  # Segmented, only for the newest request of its image
    prelabel_progress = Signal(int, int)  # images handled (labelled or failed), total
    prelabel_result = Signal(object)  # PrelabelResult of a labelled image (uint16 class ids, full size)
    prelabel_failed = Signal(str, str)  # key, reason (the batch goes on)
    prelabel_finished = Signal(object)  # PrelabelSummary
    download_progress = Signal("qint64", "qint64")  # bytes done, bytes total (0 = unknown); beyond 32 bits
    download_finished = Signal(str)  # local weights file
    download_cancelled = Signal()
    failed = Signal(str, str)  # kind: image | model | memory | engine; message to show

    _arrived = Signal(object)  # a result, emitted on any thread; delivered on the GUI thread

    def __init__(self, threads: int | None = None, cache_images: int = 8, rgb_cache_bytes: int = 1 << 30,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.service = EngineService(self._arrived.emit, threads, cache_images, rgb_cache_bytes)
        self.threads = self.service.threads
        self._generations = Generations()
        self._routes = {
            ModelLoaded: self.model_loaded.emit,
            ImageReady: lambda r: self.image_ready.emit(r.key, r.rgb),
            ImageFailed: lambda r: self.image_failed.emit(r.key, r.message),
            Segmented: self._on_segmented,
            PrelabelProgress: lambda r: self.prelabel_progress.emit(r.done, r.total),
            PrelabelResult: lambda r: (self.prelabel_result.emit(r) if r.ok
                                       else self.prelabel_failed.emit(r.key, r.error)),
            PrelabelSummary: self.prelabel_finished.emit,
            DownloadProgress: lambda r: self.download_progress.emit(r.done, r.total),
            DownloadFinished: lambda r: self.download_finished.emit(r.path),
            DownloadCancelled: lambda r: self.download_cancelled.emit(),
            Failed: lambda r: self.failed.emit(r.kind, r.message),
        }
        self._arrived.connect(self._deliver, Qt.ConnectionType.QueuedConnection)  # explicit: always later
        self._thread = threading.Thread(target=self.service.run, name="chimera-engine", daemon=True)
        self._thread.start()

    # -- requests -------------------------------------------------------------------------------
    def load_model(self, name: str, device: str = "auto", precision: str = "auto") -> None:
        """Build a model (downloading weights if needed, with download_progress and cancel_download)."""
        self.service.submit(LoadModel(name, device, precision))

    def show_image(self, key: str, path: str | os.PathLike) -> None:
        """Decode (or take from the cache) and emit image_ready, then encode; drops queued work for
        other images."""
        self.service.submit(ShowImage(key, Path(path)))

    def segment(self, key: str, prompts: Sequence[str], class_ids: Sequence[int] | None = None,
                preview: bool = False, display_size: tuple[int, int] | None = None) -> int:
        """Score ``key`` for ``prompts`` (a ``preview``: at ``display_size`` (h, w), quick text);
        returns the generation its ``Segmented`` will carry."""
        generation = self._generations.next(key)
        self.service.submit(Segment(key, tuple(prompts), generation,
                                    None if class_ids is None else tuple(class_ids), preview, display_size))
        return generation

    def latest_generation(self, key: str) -> int | None:
        return self._generations.latest(key)

    def set_min_confidence(self, value: float) -> None:
        """Pixels whose best class is less likely than ``value`` stay unlabeled (0 = every pixel gets
        its best class). Applies to every later segment and pre-label result, and to later models."""
        self.service.submit(SetOptions(float(value)))

    def prefetch(self, keys_paths: Sequence[tuple[str, str | os.PathLike]]) -> None:
        """Decode and encode these images when nothing more urgent waits; replaces the previous list."""
        self.service.submit([Prefetch(str(key), Path(path)) for key, path in keys_paths])

    def prelabel(self, items: Sequence[tuple[str, str | os.PathLike]], prompts: Sequence[str],
                 class_ids: Sequence[int] | None = None) -> bool:
        """Start a folder pre-label over ``items`` (the caller leaves out verified/done ones);
        False (and ``failed``) if refused."""
        return self.service.prelabel(items, prompts, class_ids)

    def prelabel_running(self) -> bool:
        return self.service.prelabel_running()

    def cancel_prelabel(self) -> None:
        self.service.cancel_prelabel()

    def download(self, model: str) -> bool:
        """Fetch the CLIP weights of ``model`` into the Hugging Face cache; False if a download runs."""
        return self.service.download(model)

    def cancel_download(self) -> None:
        """Stops a download (``download`` or inside ``load_model``) at its next progress report."""
        self.service.cancel_download()

    def pending(self) -> list[tuple[str, str]]:
        return self.service.pending()

    def shutdown(self, wait_ms: int = 10_000) -> bool:
        """Stop taking jobs and wait for the current one (app exit only); True if the thread ended."""
        self.service.stop()
        self._thread.join(wait_ms / 1000)
        self.service.close()
        return not self._thread.is_alive()

    # -- results --------------------------------------------------------------------------------
    def _deliver(self, result: object) -> None:
        self._routes[type(result)](result)

    def _on_segmented(self, result: Segmented) -> None:
        if self._generations.is_latest(result.key, result.generation):  # older: another class list
            self.segmented.emit(result)
