"""Semantic COCO export, import and validation (Qt-free).

Rules: image ids from 1, relative ``file_name`` with forward slashes; categories 1..N in the
project's class order (not derived from what appears), no background; one annotation per (image,
class) present holding every pixel of it (holes, separate parts) as compressed RLE (``counts`` a
str) with pycocotools' ``area``/``bbox``; ``iscrowd`` 0; unlabeled pixels (0) get no annotation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import PurePath, PureWindowsPath
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from chimera_engine import limits
from chimera_engine.atomic import atomic_write_json
from chimera_engine.errors import ChimeraError

__all__ = ["ClassMask", "encode_label_map", "CocoBuilder", "write_coco", "validate_coco",
           "CocoFormatError", "CocoFile", "read_coco", "read_coco_label_maps"]


@dataclass(frozen=True)
class ClassMask:
    """Every pixel of one class in one image: compressed RLE ``{"size": [h, w], "counts": str}``."""

    category_id: int
    rle: dict
    area: int
    bbox: list[float]


def _class_mask(category_id: int, rle: dict, area: int) -> ClassMask:
    """Wrap a pycocotools compressed RLE (bytes counts) and its pixel count as plain Python values.
    ``area`` is what ``mask.area(rle)`` gives, passed in because the caller already counted it."""
    return ClassMask(category_id=int(category_id),
                     rle={"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                     area=int(area), bbox=mask_utils.toBbox(rle).tolist())


def encode_label_map(label_map: np.ndarray, num_classes: int) -> list[ClassMask]:
    """One ClassMask per class present in an HxW integer label map (0 unlabeled, k = k-th class).

    The map is split once into runs of equal values in column-major (RLE) order and each class's
    counts come from its own runs, instead of a full-image compare and encode per class; speckled
    maps (runs > 1/4 of the pixels) take the per-class path, cheaper there. Both give exactly
    ``mask.encode(np.asfortranarray(label_map == k))``. ValueError: not 2-D integer, or a value
    outside 0..num_classes.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label map must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    height, width = labels.shape
    flat = labels.ravel(order="F")
    if (n := flat.size) == 0:
        return []
    change = np.empty(n + 1, dtype=bool)
    change[0] = change[n] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:n])
    speckled = np.count_nonzero(change) > n // 4 + 1
    edges = None if speckled else np.flatnonzero(change)  # run i covers pixels edges[i]:edges[i+1]
    values = flat if speckled else flat[edges[:-1]]
    if values.min() < 0 or values.max() > num_classes:
        raise ValueError(f"label map values must lie in 0..{num_classes}, got {values.min()}..{values.max()}")
    if values.dtype not in (np.uint8, np.uint16):  # small unsigned types bincount and sort fastest
        values = values.astype(np.uint16 if num_classes <= 0xFFFF else np.int64)
    per_class = np.bincount(values, minlength=num_classes + 1)
    present = [k for k in np.flatnonzero(per_class).tolist() if k != 0]
    if speckled:
        fortran = flat.reshape(width, height).T  # F-order view: a compare gives the mask encode needs
        return [_class_mask(k, mask_utils.encode((fortran == k).view(np.uint8)), per_class[k]) for k in present]
    order = np.argsort(values, kind="stable")  # runs grouped by class, each group in pixel order
    first = np.concatenate(([0], np.cumsum(per_class)))
    masks = []
    for k in present:
        runs = order[first[k]:first[k + 1]]
        bounds = np.empty(2 * runs.size + 2, dtype=np.int64)  # 0, start0, end0, start1, ..., n
        bounds[0], bounds[-1] = 0, n
        bounds[1:-1:2], bounds[2:-1:2] = edges[runs], edges[runs + 1]
        counts = np.diff(bounds)  # zeros first, then alternating ones/zeros like rleEncode
        if counts[-1] == 0:  # the class reaches the last pixel: no trailing zero run
            counts = counts[:-1]
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts.astype(np.uint32)},
                                     height, width)
        masks.append(_class_mask(k, rle, counts[1::2].sum()))
    return masks


def _posix_name(file_name: str | PurePath) -> str:
    """``file_name`` relative with forward slashes, as COCO consumers expect on every OS."""
    name = file_name.as_posix() if isinstance(file_name, PurePath) else str(file_name).replace("\\", "/")
    if not name or name.startswith("/") or PureWindowsPath(name).drive:  # "/x", "C:/x", "//host/x"
        raise ValueError(f"file_name must be a non-empty path relative to the image root: {name!r}")
    return name


class CocoBuilder:
    """Collects images and their class masks into a semantic COCO dict."""

    def __init__(self, class_names: Sequence[str], info: dict | None = None) -> None:
        names = list(class_names)
        if any(not isinstance(n, str) or not n.strip() for n in names) or len(set(names)) != len(names):
            raise ValueError(f"class names must be non-empty and unique: {names!r}")
        self._class_names = names
        self._info = dict(info) if info is not None else {"description": "Chimera semantic segmentation export"}
        self._images: list[dict] = []
        self._annotations: list[dict] = []
        self._file_names: set[str] = set()

    def add_image(self, file_name: str | PurePath, width: int, height: int, label_map: np.ndarray) -> int:
        """Encode an HxW label map (H = height, W = width, after EXIF rotation), add it, return its id."""
        if np.shape(label_map) != (height, width):
            raise ValueError(f"label map shape {np.shape(label_map)} != (height, width) {(height, width)}")
        return self.add_encoded(file_name, width, height, encode_label_map(label_map, len(self._class_names)))

    def add_encoded(self, file_name: str | PurePath, width: int, height: int,
                    masks: Sequence[ClassMask]) -> int:
        """Add an image whose masks were encoded elsewhere (e.g. in a worker process); return its id."""
        name = _posix_name(file_name)
        if name in self._file_names:
            raise ValueError(f"duplicate file_name {name!r}")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"{name}: width and height must be positive, got {width}x{height}")
        category_ids = [m.category_id for m in masks]
        if len(set(category_ids)) != len(masks) or not all(1 <= c <= len(self._class_names) for c in category_ids):
            raise ValueError(f"{name}: category ids {category_ids} are unknown or repeated")
        if any(list(m.rle["size"]) != [int(height), int(width)] for m in masks):
            raise ValueError(f"{name}: a mask's size differs from (height, width) {[height, width]}")
        image_id = len(self._images) + 1
        self._images.append({"id": image_id, "file_name": name, "width": int(width), "height": int(height)})
        self._file_names.add(name)
        for m in sorted(masks, key=lambda m: m.category_id):
            self._annotations.append({
                "id": len(self._annotations) + 1, "image_id": image_id, "category_id": int(m.category_id),
                "segmentation": {"size": list(m.rle["size"]), "counts": m.rle["counts"]},
                "area": int(m.area), "bbox": [float(v) for v in m.bbox], "iscrowd": 0})
        return image_id

    def to_dict(self) -> dict:
        """The COCO dict: info, licenses ([]), images, annotations, categories (ids 1..N)."""
        categories = [{"id": i, "name": n, "supercategory": "object"}
                      for i, n in enumerate(self._class_names, start=1)]
        return {"info": dict(self._info), "licenses": [], "images": list(self._images),
                "annotations": list(self._annotations), "categories": categories}


def write_coco(path: str | os.PathLike[str], coco: dict) -> None:
    """Write a COCO dict as JSON atomically (the old file survives any failure)."""
    atomic_write_json(path, coco)


def _string_counts(counts: str) -> np.ndarray:
    """Run lengths (int64) of a COCO compressed RLE string. Each count is 5-bit chunks (char - 48;
    0x20 = more follow, 0x10 in the last = negative); from the 4th on, a delta to the count 2 back."""
    b = np.frombuffer(counts.encode("ascii", "replace"), dtype=np.uint8).astype(np.int64) - 48
    if not counts.isascii() or b.size == 0 or b.min() < 0 or b.max() > 63 or b[-1] & 0x20:
        raise ValueError("RLE counts string is malformed")
    ends = np.flatnonzero((b & 0x20) == 0)
    starts = np.concatenate(([0], ends[:-1] + 1))
    chunk = np.arange(b.size) - np.repeat(starts, ends - starts + 1)
    if chunk.max() > 5:  # 30 bits are plenty; longer values would overflow pycocotools' int shifts
        raise ValueError("RLE counts string holds an impossibly large count")
    x = np.add.reduceat((b & 0x1F) << (5 * chunk), starts)
    negative = (b[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * (chunk[ends][negative] + 1))
    x[1::2], x[2::2] = np.cumsum(x[1::2]), np.cumsum(x[2::2])
    return x


class CocoFormatError(ChimeraError, ValueError):
    """A COCO file is unreadable or breaks the semantic-COCO rules; the message says where."""


class _PolygonBudget:
    """Outline pixels pycocotools may walk for one file (it rasterises polygons along the outline)."""

    def __init__(self) -> None:
        self.limit = self.left = limits.MAX_COCO_POLYGON_PERIMETER

    def spend(self, pixels: float) -> None:
        self.left -= pixels
        if self.left < 0:
            raise limits.LimitError(f"the file's polygons have more than {self.limit:,} pixels of outline "
                                    "in all (the limit for one file)")


def _check_polygons(polygons: list, height: int, width: int, budget: _PolygonBudget | None) -> None:
    """Finite numbers, at least 3 points, within one image size around the image, and an outline
    short enough to rasterise: checked before pycocotools allocates along the outline."""
    if not polygons:
        raise ValueError("polygons must be lists of at least 3 (x, y) points")
    outline = 0.0
    for polygon in polygons:
        if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                or not all(limits.is_finite_number(v) for v in polygon)):
            raise ValueError("polygons must be lists of at least 3 (x, y) points given as finite numbers")
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if (xy[:, 0].min() < -width or xy[:, 0].max() > 2 * width
                or xy[:, 1].min() < -height or xy[:, 1].max() > 2 * height):
            raise limits.LimitError(f"a polygon has points far outside its {width}x{height} image "
                                    f"(x {xy[:, 0].min():g}..{xy[:, 0].max():g}, y {xy[:, 1].min():g}..{xy[:, 1].max():g})")
        steps = np.abs(np.diff(np.vstack([xy, xy[:1]]), axis=0)).max(axis=1)
        outline += float(steps.sum())
    if outline > limits.MAX_POLYGON_PERIMETER:
        raise limits.LimitError(f"the polygons of one annotation have {outline:,.0f} pixels of outline, more than "
                                f"the limit of {limits.MAX_POLYGON_PERIMETER:,}")
    if budget is not None:
        budget.spend(outline)


def _to_rle(segmentation: Any, height: int, width: int, budget: _PolygonBudget | None = None) -> dict:
    """Compressed RLE of polygons or (un)compressed RLE for an HxW image; ValueError if unusable.
    RLE counts must cover the image exactly: pycocotools' C decoder trusts them and would write
    past its buffer for a corrupt file. Polygons are bounded first (``_check_polygons``)."""
    if isinstance(segmentation, list):
        _check_polygons(segmentation, height, width, budget)
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if not isinstance(segmentation, dict) or not {"size", "counts"} <= segmentation.keys():
        raise ValueError("segmentation is neither polygons nor RLE")
    size = segmentation["size"]
    if not isinstance(size, list) or size != [height, width]:
        raise ValueError(f"RLE size {size!r} != image (height, width) {[height, width]}")
    counts = segmentation["counts"]
    if not isinstance(counts, (list, str, bytes)):
        raise ValueError("RLE counts must be a list or a string")
    if isinstance(counts, list) and not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**40
                                            for c in counts):
        raise ValueError("RLE counts must be whole numbers >= 0")
    runs = np.asarray(counts, dtype=np.int64) if isinstance(counts, list) else _string_counts(
        counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts)
    if runs.ndim != 1 or runs.size == 0 or runs.min() < 0 or runs.sum() != height * width:
        raise ValueError(f"RLE counts do not cover the {height}x{width} image exactly")
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def _load_coco(coco: dict | str | os.PathLike[str]) -> dict:
    """A COCO dict, or a file of one: at most ``limits.MAX_COCO_BYTES``, UTF-8 JSON, an object."""
    if isinstance(coco, dict):
        return coco
    try:
        size = os.stat(coco).st_size
        limits.check_file_size(size, limits.MAX_COCO_BYTES, str(coco), "COCO file")
        with open(coco, "rb") as f:
            raw = f.read()
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CocoFormatError(f"{coco} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise CocoFormatError(f"{coco} is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise CocoFormatError(f"{coco} is nested too deeply to be a COCO file") from exc
    except IsADirectoryError as exc:
        raise CocoFormatError(f"{coco} is a folder, not a COCO JSON file") from exc
    if not isinstance(data, dict):
        raise CocoFormatError(f"{coco} holds JSON, but not a COCO object (images, annotations, categories)")
    return data


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_ids(kind: str, ids: list[Any], problems: list[str]) -> None:
    problems += [f"{kind} id {i!r} is not an integer >= 1" for i in ids if not _is_id(i)]
    counts = Counter(i for i in ids if _is_id(i))
    problems += [f"{kind} id {i} is used more than once" for i, c in sorted(counts.items()) if c > 1]


def _check_categories(cats: list[dict], expected: Sequence[str] | None, problems: list[str]) -> None:
    ids = sorted(c["id"] for c in cats if _is_id(c.get("id")))
    if ids != list(range(1, len(cats) + 1)):
        problems.append(f"category ids must be exactly 1..{len(cats)}, got {ids}")
    names = [c.get("name") for c in sorted(cats, key=lambda c: c["id"] if _is_id(c.get("id")) else 0)]
    if any(not isinstance(n, str) or not n.strip() for n in names):
        problems.append("a category has an empty or missing name")
    if len(set(map(str, names))) != len(names):
        problems.append(f"category names are not unique: {names}")
    if any(not isinstance(c.get("supercategory"), str) for c in cats):
        problems.append("a category has no string supercategory")
    if expected is not None and names != list(expected):
        problems.append(f"categories {names} do not match the project's classes {list(expected)}")


def _check_image(img: dict, anns: list[dict], problems: list[str]) -> None:
    """One image's annotations: one per category, sound RLE, area/bbox agree, pairwise disjoint."""
    h, w = img.get("height"), img.get("width")
    if not (_is_id(h) and _is_id(w)):
        return  # already reported by validate_coco
    try:
        limits.check_image_size(w, h, f"image {img['id']}")
    except limits.LimitError as exc:
        problems.append(str(exc))
        return
    rles, ids, categories = [], [], set()
    for ann in anns:
        where = f"annotation {ann.get('id')} (image {img['id']})"
        if ann["category_id"] in categories:
            problems.append(f"image {img['id']}: more than one annotation of category {ann['category_id']}")
        categories.add(ann["category_id"])
        if ann.get("iscrowd", 0) != 0:
            problems.append(f"{where}: iscrowd must be 0 in a semantic export")
        try:
            rle = _to_rle(ann.get("segmentation"), h, w)
        except Exception as exc:  # a malformed segmentation is a problem to report, not a crash
            problems.append(f"{where}: {exc}")
            continue
        if isinstance(ann["segmentation"], dict):  # polygon area/bbox are polygon-based by convention
            area, bbox = int(mask_utils.area(rle)), mask_utils.toBbox(rle).tolist()
            if ann.get("area") != area:
                problems.append(f"{where}: area {ann.get('area')} != {area} pixels in its mask")
            given = ann.get("bbox")
            if (not isinstance(given, list) or len(given) != 4 or not all(isinstance(v, (int, float)) for v in given)
                    or not np.allclose(given, bbox, atol=1e-3)):
                problems.append(f"{where}: bbox {given} != {bbox} computed from its mask")
        rles.append(rle)
        ids.append(ann.get("id"))
    for i, j in _overlapping_pairs(rles, h, w):
        problems.append(f"image {img['id']} ({img.get('file_name')}): annotations {ids[i]} and {ids[j]} overlap")


def _overlapping_pairs(rles: list[dict], height: int, width: int) -> list[tuple[int, int]]:
    """Index pairs of overlapping masks. Pairwise RLE IoU (> 0 iff they overlap) is cheap for simple
    masks; for detailed ones, decoding once and counting coverage is cheaper, and IoU then only
    runs to name the pairs when something overlaps."""
    if len(rles) < 2:
        return []
    if 8 * sum(len(r["counts"]) for r in rles) > height * width:
        cover = np.zeros((height, width), np.uint16, order="F")  # decode gives F-order masks
        for rle in rles:
            cover += mask_utils.decode(rle)
        if cover.max() <= 1:
            return []
    iou = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles))).reshape(len(rles), len(rles))
    return list(zip(*np.nonzero(np.triu(iou, 1) > 0)))


def validate_coco(coco: dict | str | os.PathLike[str], expected_classes: Sequence[str] | None = None) -> list[str]:
    """Every problem in a semantic COCO dict or file, in plain words; [] means valid."""
    try:
        data = _load_coco(coco)
    except (OSError, ValueError, ChimeraError) as exc:
        return [f"cannot read the COCO file: {exc}"]
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) or
                                          any(not isinstance(x, dict) for x in data[k])
                                          for k in ("images", "annotations", "categories")):
        return ["not a COCO dict: images, annotations and categories must be lists of objects"]
    problems: list[str] = []
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress; keep it quiet
            api = COCO()
            api.dataset = data
            api.createIndex()
    except Exception as exc:
        problems.append(f"pycocotools cannot index the data: {exc!r}")
    images, anns, cats = data["images"], data["annotations"], data["categories"]
    for kind, items in (("image", images), ("annotation", anns), ("category", cats)):
        _check_ids(kind, [item.get("id") for item in items], problems)
    _check_categories(cats, expected_classes, problems)
    imgs = {i["id"]: i for i in images if _is_id(i.get("id"))}
    cat_ids = {c["id"] for c in cats if _is_id(c.get("id"))}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in anns:
        if ann.get("image_id") not in imgs:
            problems.append(f"annotation {ann.get('id')}: unknown image id {ann.get('image_id')!r}")
        elif ann.get("category_id") not in cat_ids:
            problems.append(f"annotation {ann.get('id')}: unknown category id {ann.get('category_id')!r}")
        else:
            by_image[ann["image_id"]].append(ann)
    names = [i.get("file_name") for i in images]
    if len(set(map(str, names))) != len(names):
        problems.append("two images share a file_name")
    problems += [f"image {i.get('id')}: width/height must be positive integers, got {i.get('width')}x"
                 f"{i.get('height')}" for i in images if not (_is_id(i.get("width")) and _is_id(i.get("height")))]
    for image_id, image_anns in by_image.items():
        _check_image(imgs[image_id], image_anns, problems)
    return problems


# The import side (read_coco, read_coco_label_maps) lives in coco_reader; re-exported here.
from chimera_engine.formats.coco_reader import CocoFile, read_coco, read_coco_label_maps  # noqa: E402
