"""Pre-label a list of images: decode ahead in threads, encode in batches, score, encode masks.

Qt-free and process-local: under ``torchrun`` every process runs this on its own share of the images
and the results (small RLE records) are merged by the caller. A bad image is recorded and skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine import ChimeraError, Segmentation, Segmenter, load_image
from engine.formats.coco import ClassMask, encode_label_map
from engine.formats.png_masks import write_index_png


@dataclasses.dataclass(frozen=True)
class LabeledImage:
    """One pre-labelled image, small enough to send between processes."""

    file_name: str  # relative to the image root, forward slashes
    width: int
    height: int
    masks: list[ClassMask]
    unlabeled_share: float  # fraction of pixels left unlabeled
    mean_confidence: float


@dataclasses.dataclass(frozen=True)
class Failure:
    file_name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class LabelOptions:
    classes: tuple[str, ...]
    background: tuple[str, ...] = ()
    min_confidence: float | None = None
    png_dir: Path | None = None


def relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def png_path(png_dir: Path, file_name: str) -> Path:
    """Mask path for an image: same relative folder and stem, ``.png``."""
    return (png_dir / file_name).with_suffix(".png")


def check_png_collisions(names: Sequence[str]) -> None:
    """Two images with the same stem in one folder (``a.jpg``, ``a.png``) would share a mask file."""
    seen: dict[str, str] = {}
    for name in names:
        key = str(Path(name).with_suffix("")).casefold()
        if key in seen:
            raise ChimeraError(f"images {seen[key]!r} and {name!r} would both write the mask "
                               f"{Path(name).with_suffix('.png').as_posix()!r}; rename one or drop --png-dir")
        seen[key] = name


def _decoded(paths: Sequence[Path], workers: int, ahead: int) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """Yield (path, image or the error) in order, decoding up to ``ahead`` images in advance."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: list[tuple[Path, Future]] = []
        queue = iter(paths)
        for path in queue:
            pending.append((path, pool.submit(load_image, path)))
            if len(pending) >= ahead:
                break
        while pending:
            path, future = pending.pop(0)
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load_image, nxt)))
            try:
                image = future.result()
            except (ChimeraError, MemoryError) as exc:
                image = exc
            yield path, image


def _encode(segmenter: Segmenter, items: list[tuple[str, np.ndarray]], failures: list[Failure]) -> list:
    """(item, features) pairs; a batch that fails (e.g. out of GPU memory) is retried image by image."""
    try:
        return list(zip(items, segmenter.encode([rgb for _, rgb in items])))
    except (RuntimeError, MemoryError) as exc:
        if len(items) == 1:
            failures.append(Failure(items[0][0], f"the model failed on it: {exc}"))
            return []
        return [pair for item in items for pair in _encode(segmenter, [item], failures)]


def segment_images(segmenter: Segmenter, paths: Sequence[Path], root: Path, options: LabelOptions,
                   failures: list[Failure], on_progress: Callable[[int], None] = lambda n: None,
                   ) -> Iterator[tuple[str, Segmentation]]:
    """Yield ``(relative name, segmentation)`` for every image of ``paths`` that could be labelled,
    in order; the others are appended to ``failures``. ``on_progress(n)`` is called as every n
    images are finished (after the caller has consumed their results)."""
    batch: list[tuple[str, np.ndarray]] = []
    for path, image in _decoded(paths, workers=2, ahead=2 * segmenter.batch_size + 2):
        name = relative_name(path, root)
        if isinstance(image, Exception):
            failures.append(Failure(name, str(image)))
            on_progress(1)
            continue
        batch.append((name, image))
        if len(batch) >= segmenter.batch_size:
            yield from _segment_batch(segmenter, batch, options, failures)
            on_progress(len(batch))
            batch = []
    if batch:
        yield from _segment_batch(segmenter, batch, options, failures)
        on_progress(len(batch))


def _segment_batch(segmenter: Segmenter, batch: list[tuple[str, np.ndarray]], options: LabelOptions,
                   failures: list[Failure]) -> Iterator[tuple[str, Segmentation]]:
    for (name, _rgb), features in _encode(segmenter, batch, failures):
        yield name, segmenter.segment(options.classes, background=options.background,
                                      min_confidence=options.min_confidence, features=features)


def label_images(segmenter: Segmenter, paths: Sequence[Path], root: Path, options: LabelOptions,
                 on_progress: Callable[[int], None] = lambda n: None) -> tuple[list[LabeledImage], list[Failure]]:
    """Pre-label ``paths`` (all under ``root``); returns results and failures.

    ``on_progress(n)`` is called as every n images are finished (labelled or failed).
    """
    results: list[LabeledImage] = []
    failures: list[Failure] = []
    for name, out in segment_images(segmenter, paths, root, options, failures, on_progress):
        try:
            results.append(_finish(name, out, options))
        except (OSError, ValueError) as exc:
            failures.append(Failure(name, f"could not write its mask: {exc}"))
    return results, failures


def _finish(name: str, out: Segmentation, options: LabelOptions) -> LabeledImage:
    dtype = np.uint8 if len(options.classes) <= 255 else np.uint16
    label_map = (out.labels + 1).astype(dtype)  # 0 = unlabeled, k = k-th class
    if options.png_dir is not None:
        write_index_png(png_path(options.png_dir, name), label_map, num_classes=len(options.classes))
    height, width = label_map.shape
    return LabeledImage(name, width, height, encode_label_map(label_map, len(options.classes)),
                        float((label_map == 0).mean()), float(out.confidence.mean()))
