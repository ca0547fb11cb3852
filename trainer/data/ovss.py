"""The evaluation sets of the training-free open-vocabulary segmentation table, in their mmseg layouts.

VOC21 / VOC20, PASCAL Context 60 / 59, COCO-Object, COCO-Stuff 164k, Cityscapes and ADE20K, with the
class names SCLIP, ClearCLIP and NACLIP use (``resources/datasets/ovss/``) and their background
rules: VOC21 and COCO-Object score the objects against the 'stuff' background prompts, Context60
against the word "background"; there, pixels won by the background or below the probability
threshold (0.1) are background (label 0). Published mIoU (ViT-B/16) sits beside each set.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import numpy as np

from chimera_trainer.data.datasets import DatasetInfo, DatasetLayoutError, SegmentationDataset, label_table

VOC_LAYOUT = """\
<root>/VOCdevkit/VOC2012/
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png            0 = background, 1..20, 255 = void
  ImageSets/Segmentation/val.txt"""
CONTEXT_LAYOUT = """\
<root>/VOCdevkit/VOC2010/
  JPEGImages/<id>.jpg
  SegmentationClassContext/<id>.png     0 = background, 1..59 (mmseg's pascal_context conversion)
  ImageSets/SegmentationContext/val.txt"""
COCO_OBJECT_LAYOUT = """\
<root>/coco_stuff164k/
  images/val2017/<stem>.jpg
  annotations/val2017/<stem>_instanceTrainIds.png   0 = background, 1..80 objects, 255 = ignore"""
COCO_STUFF_LAYOUT = """\
<root>/coco_stuff164k/
  images/val2017/<stem>.jpg
  annotations/val2017/<stem>_labelTrainIds.png      0..170, 255 = ignore"""
CITYSCAPES_LAYOUT = """\
<root>/cityscapes/
  leftImg8bit/val/<city>/<name>_leftImg8bit.png
  gtFine/val/<city>/<name>_gtFine_labelTrainIds.png  0..18, 255 = ignore"""
ADE_LAYOUT = """\
<root>/ADEChallengeData2016/
  images/validation/<stem>.jpg
  annotations/validation/<stem>.png     0 = other (ignored), 1..150"""

# mIoU of ViT-B/16 methods as published (SCLIP, ClearCLIP, NACLIP papers), per set.
PUBLISHED = {
    "maskclip": {"voc21": 38.8, "context60": 23.6, "coco_object": 20.6, "voc20": 74.9, "context59": 26.4,
                 "coco_stuff": 16.4, "cityscapes": 12.6, "ade20k": 9.8},
    "sclip": {"voc21": 59.1, "context60": 30.4, "coco_object": 30.5, "voc20": 80.4, "context59": 34.2,
              "coco_stuff": 22.4, "cityscapes": 32.2, "ade20k": 16.1},
    "clearclip": {"voc21": 51.8, "context60": 32.6, "coco_object": 33.0, "voc20": 80.9, "context59": 35.9,
                  "coco_stuff": 23.9, "cityscapes": 30.0, "ade20k": 16.7},
    "naclip": {"voc21": 58.9, "context60": 32.2, "coco_object": 33.2, "voc20": 79.7, "context59": 35.2,
               "coco_stuff": 23.3, "cityscapes": 35.5, "ade20k": 17.4},
    "naclip+pamr": {"voc21": 64.1, "context60": 35.0, "coco_object": 36.2, "voc20": 83.0, "context59": 38.4,
                    "coco_stuff": 25.7, "cityscapes": 38.3, "ade20k": 19.1},
}


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    layout: str
    background: str | None = None  # background prompts ("stuff" preset or a word); label 0 when set
    prob_threshold: float = 0.0  # below it a pixel is background (sets with a background only)

    def classes(self) -> list[str]:
        """The object / stuff classes scored against each other (the background not included)."""
        text = (resources.files("chimera_resources") / "datasets" / "ovss" / f"{self.name}.txt").read_text("utf-8")
        return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    def info(self) -> DatasetInfo:
        names = [c.split(";")[0].strip() for c in self.classes()]
        return DatasetInfo(self.name, (["background"] if self.background else []) + names)


BENCHMARKS = {b.name: b for b in (
    Benchmark("voc21", VOC_LAYOUT, background="stuff", prob_threshold=0.1),
    Benchmark("context60", CONTEXT_LAYOUT, background="background", prob_threshold=0.1),
    Benchmark("coco_object", COCO_OBJECT_LAYOUT, background="stuff", prob_threshold=0.1),
    Benchmark("voc20", VOC_LAYOUT),
    Benchmark("context59", CONTEXT_LAYOUT),
    Benchmark("coco_stuff", COCO_STUFF_LAYOUT),
    Benchmark("cityscapes", CITYSCAPES_LAYOUT),
    Benchmark("ade20k", ADE_LAYOUT),
)}


def _need(path: Path, what: str, layout: str) -> Path:
    if not path.exists():
        raise DatasetLayoutError(f"missing {what}", path, layout)
    return path


def _listed_pairs(base: Path, listing: str, images: str, labels: str, layout: str) -> list[tuple[Path, Path]]:
    ids = [ln.strip() for ln in _need(base / listing, "image list", layout).read_text().splitlines() if ln.strip()]
    return [(_need(base / images / f"{i}.jpg", "image", layout), _need(base / labels / f"{i}.png", "label", layout))
            for i in ids]


def _suffix_pairs(image_dir: Path, label_dir: Path, image_suffix: str, label_suffix: str,
                  layout: str) -> list[tuple[Path, Path]]:
    _need(image_dir, "image folder", layout)
    _need(label_dir, "label folder", layout)
    pairs = []
    for image in sorted(image_dir.rglob(f"*{image_suffix}")):
        stem = image.name[:-len(image_suffix)]
        label = label_dir / image.parent.relative_to(image_dir) / f"{stem}{label_suffix}"
        pairs.append((image, _need(label, "label", layout)))
    return pairs


def _root(root: Path, child: str) -> Path:
    """``root`` may be the dataset folder itself or the folder that holds it."""
    return root / child if (root / child).is_dir() else root


def dataset(name: str, root: str | Path) -> SegmentationDataset:
    """The validation set ``name`` of ``BENCHMARKS``: labels are ids into ``BENCHMARKS[name].info()``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    bench, root = BENCHMARKS[name], Path(root)
    info = bench.info()
    if name in ("voc21", "voc20"):
        base = _root(_root(root, "VOCdevkit"), "VOC2012")
        pairs = _listed_pairs(base, "ImageSets/Segmentation/val.txt", "JPEGImages", "SegmentationClass", bench.layout)
    elif name in ("context60", "context59"):
        base = _root(_root(root, "VOCdevkit"), "VOC2010")
        pairs = _listed_pairs(base, "ImageSets/SegmentationContext/val.txt", "JPEGImages",
                              "SegmentationClassContext", bench.layout)
    elif name in ("coco_object", "coco_stuff"):
        base = _root(root, "coco_stuff164k")
        suffix = "_instanceTrainIds.png" if name == "coco_object" else "_labelTrainIds.png"
        pairs = _suffix_pairs(base / "images/val2017", base / "annotations/val2017", ".jpg", suffix, bench.layout)
    elif name == "cityscapes":
        base = _root(root, "cityscapes")
        pairs = _suffix_pairs(base / "leftImg8bit/val", base / "gtFine/val", "_leftImg8bit.png",
                              "_gtFine_labelTrainIds.png", bench.layout)
    else:
        base = _root(root, "ADEChallengeData2016")
        pairs = _suffix_pairs(base / "images/validation", base / "annotations/validation", ".jpg", ".png",
                              bench.layout)
    if not pairs:
        raise DatasetLayoutError("no images found", root, bench.layout)
    # Sets whose label 0 is a background they do not score (VOC20, Context59, ADE20K) shift by one.
    offset = 1 if name in ("voc20", "context59", "ade20k") else 0
    lut = label_table(info.num_classes, offset, info.ignore_index)
    return SegmentationDataset(pairs, info, label_map=lut, layout=bench.layout)


def prediction_ids(labels: np.ndarray, bench: Benchmark) -> np.ndarray:
    """Engine labels (index into ``bench.classes()``, -1 unlabeled) → the set's label ids."""
    if bench.background:
        return (labels.astype(np.int64) + 1).clip(min=0)  # unlabeled (background) → 0
    return labels.astype(np.int64)
