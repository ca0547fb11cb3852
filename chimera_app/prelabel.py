"""Batch pre-labelling for the app's engine thread, one image per step; error kinds. Qt-free.

The engine thread runs ``PrelabelRun.step`` as a low-priority job and queues the next step after
every image, so the user's own requests (the image on screen, a class being typed) run between two
images of a batch instead of waiting for the whole folder. Cancelling is a flag read before every
image: it takes effect within one image. A bad image is recorded and skipped, never fatal. Resuming
is the caller's business: it passes only the items still to do (and leaves out human-verified ones).

``error_kind`` maps an exception to the kind the GUI shows (``image``, ``memory``, ``model``,
``engine``); both the batch and the worker use it so that a failure reads the same everywhere.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from engine import (
    CheckpointError,
    ImageLoadError,
    ModelNameError,
    Segmenter,
    WeightsNotFoundError,
    load_image,
)
from engine.text import parse_classes

# torch >= 2.5 has torch.OutOfMemoryError; older releases only the CUDA one (a RuntimeError subclass).
OUT_OF_MEMORY: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError, MemoryError})


def error_kind(exc: BaseException) -> tuple[str, str]:
    """``(kind, message)`` for the GUI. Kinds: ``image``, ``memory``, ``model``, ``engine``.

    User-caused errors keep their message as it is (it is written to be shown); anything else is
    an ``engine`` error whose message names the exception type, so a bug report says what broke.
    """
    if isinstance(exc, ImageLoadError):
        return "image", str(exc)
    # MPS (and some CUDA paths) report exhaustion as a plain RuntimeError.
    if isinstance(exc, OUT_OF_MEMORY) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()):
        return "memory", f"out of memory: {exc}".strip() if str(exc) else "out of memory"
    if isinstance(exc, (WeightsNotFoundError, ModelNameError, CheckpointError)):
        return "model", str(exc)
    return "engine", f"{type(exc).__name__}: {exc}"


def to_class_ids(labels: np.ndarray, class_ids: Sequence[int] | None) -> np.ndarray:
    """Engine labels (index into the prompts, -1 = unlabeled) → uint16 stable class ids (0 = unlabeled).

    Without ``class_ids`` the engine's int32 indices are returned unchanged.
    """
    if class_ids is None:
        return labels
    # -1 indexes the last entry: no ``labels + 1`` temporary (48 MB on a 12 MP image).
    lut = np.array([*class_ids, 0], np.uint16)
    return lut[labels]


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one step produced: a labelled image, or the reason it failed."""

    key: str
    labels: np.ndarray | None = None  # H x W: int32 prompt index (-1 unlabeled) or uint16 class id
    confidence: np.ndarray | None = None  # H x W float32 in [0, 1]
    error: str | None = None


class PrelabelRun:
    """One batch: ``items`` ``(key, path)`` scored against ``prompts``.

    ``class_ids`` (one per prompt) makes results uint16 class-id maps instead of prompt indices.
    The next image is decoded in a helper thread while the current one is encoded.
    Raises ClassNameError at once for an invalid prompt list (nothing would succeed).
    """

    def __init__(self, items: Sequence[tuple[str, str | Path]], prompts: Sequence[str],
                 class_ids: Sequence[int] | None = None,
                 decode: Callable[[Path], np.ndarray] = load_image):
        parse_classes(list(prompts))
        if class_ids is not None and len(class_ids) != len(prompts):
            raise ValueError(f"{len(class_ids)} class ids for {len(prompts)} prompts")
        self.items = [(str(key), Path(path)) for key, path in items]
        self.prompts = [str(p) for p in prompts]
        self.class_ids = None if class_ids is None else [int(i) for i in class_ids]
        self.done = 0
        self.failed: list[tuple[str, str]] = []
        self.started = False  # the engine thread reports (0, total) before the first image
        self.error: str | None = None  # why the whole run stopped early (e.g. no model), if it did
        self._index = 0
        self._decode = decode
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future] = {}

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.cancelled or self._index >= len(self.items)

    def cancel(self) -> None:
        """Thread-safe; the image being scored (if any) completes, no further image starts."""
        self._cancel.set()

    def step(self, segmenter: Segmenter) -> StepResult | None:
        """Label the next image; None when there is nothing left (or the run was cancelled)."""
        if self.finished:
            self.close()
            return None
        index = self._index
        self._index += 1
        key = self.items[index][0]
        future = self._decode_ahead(index)
        if index + 1 < len(self.items):
            self._decode_ahead(index + 1)  # overlaps the next decode with this encode
        try:
            cached = segmenter.is_cached(key)  # the image on screen: no second encode
            rgb = None if cached else future.result()
            features = segmenter.features(key) if cached else segmenter.encode([rgb])[0]
            out = segmenter.segment(self.prompts, features=features)
        except Exception as exc:  # noqa: BLE001 -- a corrupt or too large image must not stop the batch
            kind, message = error_kind(exc)
            self.failed.append((key, message))
            self._drop_memory(kind)
            return StepResult(key, error=message)
        self.done += 1
        return StepResult(key, to_class_ids(out.labels, self.class_ids), out.confidence)

    def summary(self) -> dict:
        """``done``: labelled; ``failed``: ``[(key, reason)]``; ``skipped``: never started (cancelled),
        listed in ``remaining`` so the caller can resume with exactly those; ``error``: why the run
        stopped by itself, or None."""
        remaining = [key for key, _ in self.items[self._index:]]
        return {"total": self.total, "done": self.done, "skipped": len(remaining),
                "failed": list(self.failed), "cancelled": self.cancelled, "remaining": remaining, "error": self.error}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ahead.clear()

    def _decode_ahead(self, index: int) -> Future:
        if index not in self._ahead:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="prelabel-decode")
            self._ahead[index] = self._pool.submit(self._decode, self.items[index][1])
        return self._ahead.pop(index) if index == self._index - 1 else self._ahead[index]

    @staticmethod
    def _drop_memory(kind: str) -> None:
        if kind == "memory" and torch.cuda.is_available():
            torch.cuda.empty_cache()
