"""Reading a semantic COCO file back as label maps, with every field checked before it is used.

A COCO file comes from anywhere: ``read_coco`` checks its whole structure first — types, ids,
category names, file names, declared image sizes, polygon extents, RLE counts — and refuses it with
a ``CocoFormatError`` (or a ``LimitError`` for a size beyond ``chimera_engine.limits``) that names the
entry. File names are normalised (``./b.png``, ``b.png`` and ``sub//b.png`` name one image), so one
image listed twice is refused instead of silently losing one entry's labels. Label maps are then
decoded one image at a time (``CocoFile.label_map``): memory stays one image, not the whole file.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from chimera_engine import limits
from chimera_engine.formats.coco import CocoFormatError, _is_id, _load_coco, _PolygonBudget, _to_rle

__all__ = ["CocoFile", "read_coco", "read_coco_label_maps", "normalise_file_name"]


def normalise_file_name(name: Any) -> str:
    """A COCO ``file_name`` as the relative POSIX path it names (``.\\a\\./b.png`` -> ``a/b.png``);
    CocoFormatError for a non-string, empty, absolute or escaping (``..``) name."""
    if not isinstance(name, str):
        raise CocoFormatError(f"file_name {name!r} is not text")
    text = name.replace("\\", "/")
    if "\x00" in text or text.startswith("/") or PureWindowsPath(text).drive:
        raise CocoFormatError(f"file_name {name!r} must be a path relative to the image folder")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise CocoFormatError(f"file_name {name!r} must name a file inside the image folder")
    return "/".join(parts)


@dataclass
class CocoFile:
    """A checked semantic COCO file: class names (category 1..N) and its images by normalised name."""

    path: str
    class_names: list[str]
    sizes: dict[str, tuple[int, int]]  # normalised file_name -> (height, width)
    _annotations: dict[str, list[dict]] = field(repr=False, default_factory=dict)
    _budget: _PolygonBudget = field(repr=False, default_factory=_PolygonBudget)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if len(self.class_names) <= 0xFF else np.uint16)

    def label_map(self, file_name: str) -> np.ndarray:
        """HxW label map of one image (0 unlabeled, k = category k); CocoFormatError for a corrupt
        segmentation or overlapping annotations (a semantic label map cannot hold them)."""
        height, width = self.sizes[file_name]
        dtype = self.dtype
        rles = []  # every segmentation checked and encoded before the map is allocated
        for ann in self._annotations.get(file_name, []):
            try:
                rles.append((_to_rle(ann["segmentation"], height, width, self._budget), ann["category_id"]))
            except limits.LimitError as exc:
                raise limits.LimitError(f"{self.path}: annotation {ann['id']} of {file_name!r}: {exc}") from exc
            except (TypeError, ValueError, OverflowError) as exc:
                raise CocoFormatError(f"{self.path}: annotation {ann['id']} of {file_name!r}: {exc}") from exc
        labels = np.zeros((height, width), dtype, order="F")  # decode gives F-order
        total_area = 0
        for rle, category_id in rles:
            # Masks are added (cheaper than boolean scatters); they are disjoint exactly when the
            # labelled pixel count equals the sum of their areas.
            labels += mask_utils.decode(rle).astype(dtype, copy=False) * dtype.type(category_id)
            total_area += int(mask_utils.area(rle))
        if np.count_nonzero(labels) != total_area:
            raise CocoFormatError(f"{self.path}: image {file_name!r}: annotations overlap; a semantic label map "
                                  "cannot hold overlapping masks")
        return np.ascontiguousarray(labels)


def read_coco(path: str | os.PathLike[str]) -> CocoFile:
    """Read and check a semantic COCO file (see the module docstring); decodes no mask yet."""
    where = str(path)
    data = _load_coco(path)
    for key in ("images", "annotations", "categories"):
        items = data.get(key)
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise CocoFormatError(f"{where}: '{key}' must be a list of objects")
    names = _class_names(data["categories"], where)
    by_id, sizes = _images(data["images"], where)
    annotations: dict[str, list[dict]] = defaultdict(list)
    seen_ids: set[int] = set()
    for ann in data["annotations"]:
        ann_id = ann.get("id")
        if not _is_id(ann_id) or ann_id in seen_ids:
            raise CocoFormatError(f"{where}: annotation id {ann_id!r} is not a unique whole number >= 1")
        seen_ids.add(ann_id)
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not _is_id(image_id) or image_id not in by_id:
            raise CocoFormatError(f"{where}: annotation {ann_id}: unknown image id {image_id!r}")
        if not _is_id(category_id) or category_id > len(names):
            raise CocoFormatError(f"{where}: annotation {ann_id}: unknown category id {category_id!r}")
        if "segmentation" not in ann:
            raise CocoFormatError(f"{where}: annotation {ann_id} has no segmentation")
        annotations[by_id[image_id]].append(ann)
    return CocoFile(where, names, sizes, dict(annotations))


def read_coco_label_maps(path: str | os.PathLike[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(class names ordered by id, {normalised file_name: HxW label map}) of a whole file at once.

    Label maps are uint8 (uint16 beyond 255 classes), 0 = unlabeled. Polygons and uncompressed RLE
    are accepted. CocoFormatError (a ValueError) for anything ``read_coco`` refuses, a corrupt
    segmentation or overlapping annotations. Holds every map in memory: importers should decode
    image by image with ``read_coco(path).label_map(name)``.
    """
    coco = read_coco(path)
    return coco.class_names, {name: coco.label_map(name) for name in coco.sizes}


def _class_names(categories: list[dict], where: str) -> list[str]:
    limits.check_class_count(len(categories), f"{where}: categories")
    by_id: dict[int, str] = {}
    for cat in categories:
        cat_id, name = cat.get("id"), cat.get("name")
        if not _is_id(cat_id) or cat_id in by_id:
            raise CocoFormatError(f"{where}: category id {cat_id!r} is not a unique whole number >= 1")
        if not isinstance(name, str) or not name.strip():
            raise CocoFormatError(f"{where}: category {cat_id} has the name {name!r}; names must be non-empty text")
        by_id[cat_id] = name.strip()
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise CocoFormatError(f"{where}: category ids must be exactly 1..{len(by_id)}, got {sorted(by_id)}")
    names = [by_id[k] for k in sorted(by_id)]
    folded = [n.casefold() for n in names]
    twice = sorted({n for n in names if folded.count(n.casefold()) > 1})
    if twice:
        raise CocoFormatError(f"{where}: category names are not unique: {', '.join(map(repr, twice))}")
    return names


def _images(images: list[dict], where: str) -> tuple[dict[int, str], dict[str, tuple[int, int]]]:
    by_id: dict[int, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    given: dict[str, Any] = {}
    for img in images:
        image_id = img.get("id")
        if not _is_id(image_id) or image_id in by_id:
            raise CocoFormatError(f"{where}: image id {image_id!r} is not a unique whole number >= 1")
        try:
            name = normalise_file_name(img.get("file_name"))
        except CocoFormatError as exc:
            raise CocoFormatError(f"{where}: image {image_id}: {exc}") from None
        if name in given:
            raise CocoFormatError(f"{where}: the image {name!r} is listed twice (as {given[name]!r} and "
                                  f"{img['file_name']!r}); one image can have one label map only")
        given[name] = img["file_name"]
        width, height = img.get("width"), img.get("height")
        limits.check_image_size(width, height, f"{where}: image {image_id} ({name})")
        by_id[image_id] = name
        sizes[name] = (height, width)
    return by_id, sizes
