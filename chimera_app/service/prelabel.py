"""The one pre-label pipeline: the app's "Pre-label folder", ``chimera-label`` into COCO and
``chimera-label --project`` all run this. Qt-free.

    run = Prelabeler(items, prompts, class_ids)   # an invalid class list fails here, before any image
    for result in run.results(segmenter): ...     # chimera-label: every image, in order
    results = run.step(segmenter)                 # the app's engine thread: one step per job

What it decides once for every caller:
- **Decode ahead**: helper threads decode the next images while the current ones are encoded.
- **One error policy**: an image that cannot be decoded, encoded or scored is recorded with its
  reason (``chimera_app.service.errors``) and skipped; the batch goes on. When a group of images
  fails to encode together (e.g. out of GPU memory), each is retried alone.
- **One mapping**: prompt index → stable class id (uint16, 0 = unlabeled); without ids given,
  class k of the list gets id k + 1 (the COCO category ids and PNG values of ``chimera-label``).
- **Cancel and resume**: a flag read before every step; ``summary().remaining`` lists what never
  started, and a new run over exactly those resumes. Callers leave out human-verified images.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from chimera_app.project.document import ImageState
from chimera_app.service.errors import recover
from chimera_app.service.requests import PrelabelResult, PrelabelSummary
from chimera_engine.class_names import parse_classes
from chimera_engine.interrupts import interrupted


def to_class_ids(labels: np.ndarray, class_ids: Sequence[int] | None) -> np.ndarray:
    """Engine labels (index into the prompts, -1 = unlabeled) → uint16 stable class ids (0 = unlabeled).

    Without ``class_ids`` the engine's int32 indices are returned unchanged.
    """
    if class_ids is None:
        return labels
    # -1 indexes the last entry: no ``labels + 1`` temporary (48 MB on a 12 MP image).
    lut = np.array([*class_ids, 0], np.uint16)
    return lut[labels]


def store_prediction(project, rel: str, class_ids: np.ndarray, confidence: np.ndarray) -> bool:
    """Write a pre-label result into image ``rel`` of ``project`` and save it: pixels a person
    decided stay, and a human-verified image is left alone (False)."""
    doc = project.load_document(rel)
    if doc.state == ImageState.VERIFIED:
        return False
    doc.set_prediction(class_ids, confidence)
    project.save_document(rel, doc)
    return True


class DecodeAhead:
    """Decodes ``paths[i]`` on ``workers`` helper threads, up to ``ahead`` images past the one taken."""

    def __init__(self, paths: Sequence[Path], decode: Callable[[Path], np.ndarray], workers: int = 1,
                 ahead: int = 1):
        self._paths, self._decode = list(paths), decode
        self._workers, self._ahead = max(1, workers), max(0, ahead)
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[int, Future] = {}

    def take(self, index: int) -> Future:
        """The decode of image ``index`` (started now if it was not yet); starts the ones after it."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="chimera-decode")
        for i in range(index, min(len(self._paths), index + 1 + self._ahead)):
            if i not in self._futures:
                self._futures[i] = self._pool.submit(self._decode, self._paths[i])
        return self._futures.pop(index)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._futures.clear()


class Prelabeler:
    """One pre-label run: ``items`` ``(key, path)`` scored against ``prompts``.

    ``class_ids``: one per prompt (default 1..K). ``background``: phrases that compete with the
    classes but leave their pixels unlabeled. ``min_confidence``: the unlabeled rule (None: the
    segmenter's own). ``images_per_step``: images encoded together (windows of several small images
    share forward passes; the app takes 1 so that the user waits at most one image).
    Raises ClassNameError at once for an invalid class list (nothing would succeed).
    """

    def __init__(self, items: Sequence[tuple[str, str | Path]], prompts: Sequence[str],
                 class_ids: Sequence[int] | None = None, *, background: Sequence[str] | None = None,
                 min_confidence: float | None = None, decode: Callable[[Path], np.ndarray] | None = None,
                 images_per_step: int = 1, decode_workers: int = 1, decode_ahead: int | None = None):
        parse_classes(list(prompts) + list(background or ()))  # one namespace: no phrase in both
        if class_ids is not None and len(class_ids) != len(prompts):
            raise ValueError(f"{len(class_ids)} class ids for {len(prompts)} prompts")
        if decode is None:
            from chimera_engine.images import load_image as decode
        self.items = [(str(key), Path(path)) for key, path in items]
        self.prompts = tuple(str(p) for p in prompts)
        self.background = None if background is None else tuple(str(p) for p in background)
        self.class_ids = tuple(range(1, len(self.prompts) + 1)) if class_ids is None else tuple(map(int, class_ids))
        self.min_confidence = min_confidence
        self.images_per_step = max(1, int(images_per_step))
        self.done = 0
        self.failed: list[tuple[str, str]] = []
        self.error: str | None = None  # why the whole run stopped early (e.g. no model), if it did
        self._index = 0
        self._cancel = threading.Event()
        ahead = self.images_per_step if decode_ahead is None else decode_ahead
        self._decoder = DecodeAhead([path for _, path in self.items], decode, decode_workers, ahead)

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def handled(self) -> int:
        """Images labelled or failed so far."""
        return self.done + len(self.failed)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.cancelled or self._index >= len(self.items)

    def cancel(self, error: str | None = None) -> None:
        """Thread-safe; the images being scored (if any) complete, no further step starts.
        ``error``: the run cannot go on by itself (shown in the summary)."""
        if error is not None:
            self.error = error
        self._cancel.set()

    def step(self, segmenter) -> list[PrelabelResult]:
        """Label the next ``images_per_step`` images; [] when there is nothing left (or cancelled)."""
        if self.finished:
            self.close()
            return []
        start, stop = self._index, min(self._index + self.images_per_step, len(self.items))
        self._index = stop
        results: dict[int, PrelabelResult] = {}
        group: list[tuple[int, np.ndarray | None]] = []  # (index, pixels; None: features cached)
        for index in range(start, stop):
            key = self.items[index][0]
            future = self._decoder.take(index)
            if segmenter.is_cached(key):  # e.g. the image on screen: no second decode or encode
                group.append((index, None))
                continue
            try:
                group.append((index, future.result()))
            except Exception as exc:  # noqa: BLE001 -- a bad file is recorded and skipped
                results[index] = self._failure(index, exc)
        for index, features in self._encode(segmenter, group):
            if isinstance(features, Exception):
                results[index] = self._failure(index, features)
                continue
            try:
                out = segmenter.segment(self.prompts, background=self.background,
                                        min_confidence=self.min_confidence, features=features)
            except Exception as exc:  # noqa: BLE001 -- e.g. out of memory at full size: skipped
                results[index] = self._failure(index, exc)
                continue
            self.done += 1
            results[index] = PrelabelResult(self.items[index][0], to_class_ids(out.labels, self.class_ids),
                                            out.confidence)
        return [results[i] for i in sorted(results)]

    def results(self, segmenter) -> Iterator[PrelabelResult]:
        """Every remaining image's result, in order (the helper threads end with the iteration)."""
        try:
            while not self.finished:
                yield from self.step(segmenter)
        finally:
            self.close()

    def summary(self) -> PrelabelSummary:
        remaining = tuple(key for key, _ in self.items[self._index:])
        return PrelabelSummary(self.total, self.done, tuple(self.failed), self.cancelled, remaining, self.error)

    def close(self) -> None:
        self._decoder.close()

    # -- inside ---------------------------------------------------------------------------------
    def _encode(self, segmenter, group: list[tuple[int, np.ndarray | None]]) -> list[tuple[int, object]]:
        """``(index, features or the exception)`` for every image of ``group``, in order."""
        encoded = {index: segmenter.features(self.items[index][0]) for index, rgb in group if rgb is None}
        fresh = [(index, rgb) for index, rgb in group if rgb is not None]
        if len(fresh) == 1:
            try:
                encoded[fresh[0][0]] = segmenter.encode([fresh[0][1]])[0]
            except Exception as exc:  # noqa: BLE001 -- recorded by the caller
                encoded[fresh[0][0]] = exc
        elif fresh:
            try:
                encoded.update(zip((index for index, _ in fresh), segmenter.encode([rgb for _, rgb in fresh])))
            except Exception as exc:  # noqa: BLE001 -- one bad or too large image: try each alone
                recover(exc, "encoding a group of images")
                for one in fresh:
                    encoded.update(self._encode(segmenter, [one]))
        return sorted(encoded.items())

    def _failure(self, index: int, exc: BaseException) -> PrelabelResult:
        if interrupted():  # Ctrl+C in a command-line run, disguised by the library code it stopped
            raise KeyboardInterrupt from exc
        key = self.items[index][0]
        kind, message = recover(exc, f"pre-labelling {key}")
        self.failed.append((key, message))
        return PrelabelResult(key, error=message, kind=kind)
