"""Segmentation datasets in their standard (mmseg) layouts: PASCAL VOC 2012 (aug), COCO-Stuff 164k, shapes.

Every dataset yields ``dict(image=HxWx3 uint8 RGB, label=HxW uint8, name=str)``: label values are class
ids 0..C-1 in the order of ``info.classes`` and ``info.ignore_index`` (255) for void. Values a dataset
does not define (e.g. 21..254 in a VOC PNG) become 255 as well, so a stray value can never reach a
loss as an out-of-range class. Class lists live in ``resources/datasets/*.json``.

For zero-shot TRAINING apply :func:`zero_shot_labels` (seen class -> index among the seen classes,
unseen -> ignore). ZegCLIP keeps all labels through the augmentation pipeline (RandomCrop's
cat_max_ratio then sees unseen classes too) and drops unseen classes in the model; to reproduce that,
apply it after the transform (it also accepts the label tensor).

A layout problem (missing folder, list file, image or label; empty dataset) raises
:class:`DatasetLayoutError`, whose message names the path and shows the expected layout.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from PIL import Image

from chimera_engine.errors import ChimeraError, ClassNameError, ImageLoadError
from chimera_engine.limits import ImageTooLargeError, check_image_size
from chimera_engine.images import load_image

PathLike = str | os.PathLike[str]
Transform = Callable[[dict[str, Any]], dict[str, Any]]

VOC_LAYOUT = """\
<root>/                                (or <root> = VOCdevkit/VOC2012 itself)
  VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          val labels (0 = background, 1..20 classes, 255 = void)
    SegmentationClassAug/<id>.png       train labels (mmseg's voc_aug conversion)
    ImageSets/Segmentation/
      aug.txt                           train ids (10,582; train.txt is used if it is missing)
      train.txt
      val.txt                           val ids (1,449)"""

COCO_STUFF_LAYOUT = """\
<root>/                                (coco_stuff164k)
  images/
    train2017/<stem>.jpg
    val2017/<stem>.jpg
  annotations/
    train2017/<stem>_labelTrainIds.png  trainIds 0..170, 255 = ignore
    val2017/<stem>_labelTrainIds.png"""

SHAPES_LAYOUT = """\
<root>/                                (one folder per split, written by the shapes world)
  images/<stem>.png
  masks/<stem>.png                      0 = background, k = classes[k-1]
  split.json                            {"classes": [...], "seen": [...], "unseen": [...],
                                         "background": "background" (optional: mask 0 as a class)}
  twins/<stem>.png                      (optional) the image with one shape redrawn as another class,
  twins/<stem>-1.png, ...               and as further classes, for SGD's twin contrast (twin_weight,
                                        twin_count)"""

_INFO_FILES = {"voc": "voc2012.json", "voc2012": "voc2012.json",
               "coco-stuff": "coco_stuff164k.json", "coco_stuff164k": "coco_stuff164k.json",
               "coco-stuff164k": "coco_stuff164k.json"}
_SPLITS = ("train", "val")


class DatasetLayoutError(ChimeraError):
    """A dataset folder, list file, image or label is missing, or the dataset is empty."""

    def __init__(self, problem: str, path: PathLike, layout: str):
        self.path = Path(path)
        self.layout = layout
        super().__init__(f"{problem}: '{self.path}'\nExpected layout:\n{layout}")


class DatasetNameError(ChimeraError):
    """A dataset name or split that does not exist."""


@dataclass
class DatasetInfo:
    """Class names in label-id order, the unseen subset, and the ignore index."""

    name: str
    classes: list[str]
    unseen: list[str] = field(default_factory=list)
    ignore_index: int = 255
    # The name of label value 0 when the dataset trains and scores it as a (seen) class, as the shapes
    # world does with "background"; "" when value 0 is a plain class id (VOC, COCO-Stuff).
    background: str = ""

    def __post_init__(self) -> None:
        self.classes, self.unseen = list(self.classes), list(self.unseen)
        for kind, names in (("classes", self.classes), ("unseen classes", self.unseen)):
            if any(not str(n).strip() for n in names):
                raise ClassNameError(f"dataset '{self.name}': an empty name in its {kind}")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ClassNameError(f"dataset '{self.name}': {kind} named twice: {dup}")
        if not self.classes:
            raise ClassNameError(f"dataset '{self.name}' has no classes")
        stray = [n for n in self.unseen if n not in self.classes]
        if stray:
            raise ClassNameError(f"dataset '{self.name}': unseen classes not in its class list: {stray}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def seen(self) -> list[str]:
        """The seen classes, in label-id order."""
        unseen = set(self.unseen)
        return [c for c in self.classes if c not in unseen]

    @property
    def seen_ids(self) -> list[int]:
        unseen = set(self.unseen)
        return [i for i, c in enumerate(self.classes) if c not in unseen]

    @property
    def unseen_ids(self) -> list[int]:
        unseen = set(self.unseen)
        return [i for i, c in enumerate(self.classes) if c in unseen]


def load_info(name: str, root: PathLike | None = None) -> DatasetInfo:
    """Class list of "voc" / "coco-stuff" (from chimera_resources), or of "shapes" (from ``root/split.json``)."""
    if name == "shapes":
        if root is None:
            raise ValueError("load_info('shapes') needs the dataset folder (root) holding split.json")
        path = Path(root) / "split.json"
        if not path.is_file():
            raise DatasetLayoutError("missing shapes class file", path, SHAPES_LAYOUT)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            classes, unseen = list(data["classes"]), list(data.get("unseen", []))
            background = data.get("background", "")
            if not all(isinstance(name, str) for name in [*classes, *unseen, background]):
                raise TypeError("class names must be text")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise DatasetLayoutError(f"unreadable shapes class file ({exc!r})", path, SHAPES_LAYOUT) from None
        # Mask value 0 is background: a seen class named ``background`` when split.json names it
        # (trained and scored, as VOC's background), else void.
        info = DatasetInfo("shapes", [background, *classes] if background else classes, unseen, background=background)
        if "seen" in data and sorted(data["seen"]) != sorted(c for c in info.seen if c != background):
            raise DatasetLayoutError("'seen' is not 'classes' minus 'unseen' in", path, SHAPES_LAYOUT)
        return info
    if name not in _INFO_FILES:
        raise DatasetNameError(f"unknown dataset '{name}'; known: voc, coco-stuff, shapes")
    data = json.loads((resources.files("chimera_resources") / "datasets" / _INFO_FILES[name]).read_text("utf-8"))
    return DatasetInfo(data["name"], data["classes"], data["unseen"], int(data.get("ignore_index", 255)))


def label_table(num_classes: int, offset: int, ignore_index: int = 255) -> np.ndarray:
    """uint8 lookup table of 256 entries: v -> v - offset for offset <= v < C + offset, else ignore."""
    lut = np.full(256, ignore_index, dtype=np.uint8)
    lut[offset:offset + num_classes] = np.arange(num_classes, dtype=np.uint8)
    return lut


def read_label(path: PathLike) -> np.ndarray:
    """An indexed (palette) or gray label PNG as an HxW uint8 array of the stored indices."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            check_image_size(*im.size, f"cannot read label '{path}'", error=ImageTooLargeError)  # before decoding
            arr = np.array(im)
    except FileNotFoundError:
        raise ImageLoadError(f"cannot read label '{path}': no such file") from None
    except Image.DecompressionBombError as exc:  # Pillow's own limit may be met first
        raise ImageTooLargeError(f"cannot read label '{path}': image is too large ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read label '{path}': {exc}") from None
    if arr.ndim != 2:
        raise ImageLoadError(f"label '{path}' is not a single-channel index image (mode {mode})")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ImageLoadError(f"label '{path}' has values outside 0..255 (mode {mode})")
        arr = arr.astype(np.uint8)
    return arr


class SegmentationDataset(torch.utils.data.Dataset):
    """(image, label) file pairs + class info; labels remapped through a 256-entry lookup table."""

    def __init__(self, pairs: list[tuple[PathLike, PathLike]], info: DatasetInfo,
                 transform: Transform | None = None, label_map: np.ndarray | None = None,
                 layout: str = ""):
        self.pairs = [(Path(i), Path(l)) for i, l in pairs]
        self.info = info
        self.transform = transform
        self.label_map = label_table(info.num_classes, 0, info.ignore_index) if label_map is None \
            else np.asarray(label_map, dtype=np.uint8)
        self.layout = layout

    def __len__(self) -> int:
        return len(self.pairs)

    def load_label(self, index: int) -> np.ndarray:
        return self.label_map[read_label(self.pairs[index][1])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = load_image(image_path)
        label = self.load_label(index)
        if image.shape[:2] != label.shape:
            image = _stored_orientation(image_path, label.shape)
            if image is None:
                raise DatasetLayoutError(
                    f"image and label sizes differ (label {label.shape[1]}x{label.shape[0]}, "
                    f"image '{image_path}')", label_path, self.layout)
        sample = {"image": image, "label": label, "name": image_path.stem}
        return self.transform(sample) if self.transform is not None else sample


def _stored_orientation(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The image as stored, ignoring its EXIF orientation, when that matches the label (a few COCO
    images carry an orientation tag while their labels follow the stored pixels); else None."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if bgr is None or bgr.shape[:2] != tuple(shape):
        return None
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise DatasetNameError(f"unknown split '{split}'; expected one of {list(_SPLITS)}")


def _need_dir(path: Path, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"missing {what}", path, layout)
    return path


def _listing(folder: Path) -> set[str]:
    return set(os.listdir(folder))


def voc_dataset(root: PathLike, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """PASCAL VOC 2012 (aug): "train" = aug.txt + SegmentationClassAug, "val" = val.txt + SegmentationClass.

    ``root`` is the folder holding ``VOCdevkit``, or ``VOCdevkit``, or ``VOCdevkit/VOC2012`` itself.
    """
    _check_split(split)
    root = _need_dir(Path(root), "dataset folder", VOC_LAYOUT)
    for base in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (base / "JPEGImages").is_dir() or (base / "ImageSets").is_dir():
            break
    else:
        raise DatasetLayoutError("missing VOC folder", root / "VOCdevkit" / "VOC2012", VOC_LAYOUT)
    lists = base / "ImageSets" / "Segmentation"
    if split == "train":
        list_file, label_dir = lists / "aug.txt", base / "SegmentationClassAug"
        if not list_file.is_file():
            if not (base / "SegmentationClassAug").is_dir():
                label_dir = base / "SegmentationClass"
            warnings.warn(f"'{list_file}' not found: training on '{lists / 'train.txt'}' with labels "
                          f"from '{label_dir}' instead of the 10,582-image aug set", stacklevel=2)
            list_file = lists / "train.txt"
    else:
        list_file, label_dir = lists / "val.txt", base / "SegmentationClass"
    if not list_file.is_file():
        raise DatasetLayoutError("missing image list", list_file, VOC_LAYOUT)
    ids = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    image_dir = _need_dir(base / "JPEGImages", "image folder", VOC_LAYOUT)
    _need_dir(label_dir, "label folder", VOC_LAYOUT)
    images, labels = _listing(image_dir), _listing(label_dir)
    pairs = []
    for i in ids:
        if f"{i}.jpg" not in images:
            raise DatasetLayoutError(f"missing image listed in {list_file.name}", image_dir / f"{i}.jpg",
                                     VOC_LAYOUT)
        if f"{i}.png" not in labels:
            raise DatasetLayoutError("missing label of an image", label_dir / f"{i}.png", VOC_LAYOUT)
        pairs.append((image_dir / f"{i}.jpg", label_dir / f"{i}.png"))
    if not pairs:
        raise DatasetLayoutError("empty image list", list_file, VOC_LAYOUT)
    info = load_info("voc")
    return SegmentationDataset(pairs, info, transform, label_table(info.num_classes, 1), VOC_LAYOUT)


def coco_stuff_dataset(root: PathLike, split: str,
                       transform: Transform | None = None) -> SegmentationDataset:
    """COCO-Stuff 164k: ``images/<split>2017/*.jpg`` paired by stem with ``*_labelTrainIds.png``."""
    _check_split(split)
    root = _need_dir(Path(root), "dataset folder", COCO_STUFF_LAYOUT)
    if not (root / "images").is_dir() and (root / "coco_stuff164k").is_dir():
        root = root / "coco_stuff164k"
    sub = f"{split}2017"
    image_dir = _need_dir(root / "images" / sub, "image folder", COCO_STUFF_LAYOUT)
    label_dir = _need_dir(root / "annotations" / sub, "annotation folder", COCO_STUFF_LAYOUT)
    stems = sorted(n[:-4] for n in _listing(image_dir) if n.endswith(".jpg"))
    labels = _listing(label_dir)
    pairs = []
    for stem in stems:
        name = f"{stem}_labelTrainIds.png"
        if name not in labels:
            raise DatasetLayoutError("missing label of an image", label_dir / name, COCO_STUFF_LAYOUT)
        pairs.append((image_dir / f"{stem}.jpg", label_dir / name))
    if not pairs:
        raise DatasetLayoutError("no .jpg images in", image_dir, COCO_STUFF_LAYOUT)
    info = load_info("coco-stuff")
    return SegmentationDataset(pairs, info, transform, label_table(info.num_classes, 0), COCO_STUFF_LAYOUT)


def shapes_dataset(root: PathLike, split: str, transform: Transform | None = None) -> SegmentationDataset:
    """A shapes-world folder (one per split): ``images/*.png`` + ``masks/*.png`` + ``split.json``."""
    _check_split(split)
    root = _need_dir(Path(root), "dataset folder", SHAPES_LAYOUT)
    info = load_info("shapes", root)
    image_dir = _need_dir(root / "images", "image folder", SHAPES_LAYOUT)
    mask_dir = _need_dir(root / "masks", "mask folder", SHAPES_LAYOUT)
    masks = _listing(mask_dir)
    pairs = []
    for name in sorted(n for n in _listing(image_dir) if n.endswith(".png")):
        if name not in masks:
            raise DatasetLayoutError("missing mask of an image", mask_dir / name, SHAPES_LAYOUT)
        pairs.append((image_dir / name, mask_dir / name))
    if not pairs:
        raise DatasetLayoutError("no .png images in", image_dir, SHAPES_LAYOUT)
    offset = 0 if info.background else 1  # mask value k is class k, or k - 1 with void background
    return SegmentationDataset(pairs, info, transform, label_table(info.num_classes, offset), SHAPES_LAYOUT)


def twin_paths(dataset: SegmentationDataset, count: int = 1) -> list[list[Path]]:
    """The ``count`` twin images of each of a shapes dataset's images (``twins/`` beside ``images/``,
    named by ``twin_file_name``)."""
    from chimera_trainer.shapes.world import twin_file_name

    twins = [[image.parent.parent / "twins" / twin_file_name(image.name, which) for which in range(count)]
             for image, _ in dataset.pairs]
    missing = next((t for item in twins for t in item if not t.is_file()), None)
    if missing is not None:
        raise DatasetLayoutError(f"SGD's twin contrast needs {count} twin(s) of every image (shapes data written "
                                 "with as many twins); missing", missing, SHAPES_LAYOUT)
    return twins


_BUILDERS = {"voc": voc_dataset, "coco-stuff": coco_stuff_dataset, "shapes": shapes_dataset}


def build_dataset(name: str, root: PathLike, split: str,
                  transform: Transform | None = None) -> SegmentationDataset:
    """``name`` in "voc", "coco-stuff", "shapes"; ``split`` in "train", "val"."""
    if name not in _BUILDERS:
        raise DatasetNameError(f"unknown dataset '{name}'; known: {', '.join(_BUILDERS)}")
    return _BUILDERS[name](root, split, transform)


def zero_shot_labels(label: np.ndarray | torch.Tensor, info: DatasetInfo):
    """Training labels: seen class c -> its index in ``info.seen`` (0..S-1); unseen, ignore and any
    out-of-range value -> ``info.ignore_index``. Same type, dtype and shape as ``label``."""
    size = max(256, info.num_classes, info.ignore_index + 1)
    lut = np.full(size, info.ignore_index, dtype=np.int64)
    lut[info.seen_ids] = np.arange(len(info.seen_ids))
    if isinstance(label, torch.Tensor):
        table = torch.as_tensor(lut, device=label.device)
        idx = label.long()
        valid = (idx >= 0) & (idx < size)
        out = torch.where(valid, table[idx.clamp(0, size - 1)], info.ignore_index)
        return out.to(label.dtype)
    label = np.asarray(label)
    if label.dtype == np.uint8:
        return lut.astype(np.uint8)[label]
    idx = label.astype(np.int64)
    valid = (idx >= 0) & (idx < size)
    return np.where(valid, lut[np.clip(idx, 0, size - 1)], info.ignore_index).astype(label.dtype)
