"""Datasets on tiny synthetic copies of the real layouts (VOC aug, COCO-Stuff 164k, shapes)."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chimera_trainer.data import (
    COCO_STUFF_LAYOUT,
    SHAPES_LAYOUT,
    VOC_LAYOUT,
    DatasetInfo,
    DatasetLayoutError,
    DatasetNameError,
    build_dataset,
    coco_stuff_dataset,
    load_info,
    shapes_dataset,
    voc_dataset,
    zero_shot_labels,
)

H, W = 12, 16


def _voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_jpeg(path: Path, seed: int, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def write_label(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:
        im = im.convert("P")
        im.putpalette(_voc_palette())
        im.putdata(label.astype(np.uint8).ravel().tolist())  # keep the indices exactly
    im.save(path)


def voc_label(values) -> np.ndarray:
    """An HxW label whose first row is ``values`` (rest = the first value)."""
    lab = np.full((H, W), values[0], dtype=np.uint8)
    lab[0, : len(values)] = values
    return lab


VOC_IDS = {"aug": ["2007_000032", "2007_000039", "2007_000063"],
           "train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2007_000042"]}


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    base = tmp_path / "VOCdevkit" / "VOC2012"
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, ids in VOC_IDS.items():
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    for k, i in enumerate(VOC_IDS["aug"]):
        write_jpeg(base / "JPEGImages" / f"{i}.jpg", k)
        write_label(base / "SegmentationClassAug" / f"{i}.png", voc_label([0, 1, 20, 255, 5 + k]))
    for k, i in enumerate(VOC_IDS["val"]):
        write_jpeg(base / "JPEGImages" / f"{i}.jpg", 10 + k)
        write_label(base / "SegmentationClass" / f"{i}.png", voc_label([0, 1, 20, 255, 16]), palette=True)
    return tmp_path


def test_voc_lengths_pairing_and_remap(voc_root: Path):
    train = voc_dataset(voc_root, "train")
    val = voc_dataset(voc_root, "val")
    assert len(train) == 3 and len(val) == 2
    for (img, lab), i in zip(train.pairs, VOC_IDS["aug"]):
        assert img.name == f"{i}.jpg" and img.parent.name == "JPEGImages"
        assert lab.name == f"{i}.png" and lab.parent.name == "SegmentationClassAug"
    assert all(lab.parent.name == "SegmentationClass" for _, lab in val.pairs)
    sample = train[1]
    assert sample["name"] == VOC_IDS["aug"][1]
    assert sample["image"].shape == (H, W, 3) and sample["image"].dtype == np.uint8
    assert sample["label"].shape == (H, W)
    assert sample["label"][0, :5].tolist() == [255, 0, 19, 255, 5]  # 0->255, 1->0, 20->19, 255, 6->5
    assert (sample["label"][1:] == 255).all()
    val_label = val[0]["label"]  # palette PNG: the stored indices, not the colours
    assert val_label[0, :5].tolist() == [255, 0, 19, 255, 15]
    assert train.info.classes[0] == "aeroplane" and len(train.info.classes) == 20


def test_voc_accepts_both_root_forms(voc_root: Path):
    a = voc_dataset(voc_root, "val")
    b = voc_dataset(voc_root / "VOCdevkit" / "VOC2012", "val")
    c = build_dataset("voc", voc_root / "VOCdevkit", "val")
    assert a.pairs == b.pairs == c.pairs


def test_voc_without_aug_list_falls_back_to_train_and_warns(voc_root: Path):
    (voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt").unlink()
    with pytest.warns(UserWarning, match="aug.txt"):
        ds = voc_dataset(voc_root, "train")
    assert [p[0].stem for p in ds.pairs] == VOC_IDS["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        voc_dataset(voc_root, "val")  # val never warns


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize("split, missing", [
    ("val", "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"),
    ("val", "VOCdevkit/VOC2012/JPEGImages/2007_000042.jpg"),
    ("val", "VOCdevkit/VOC2012/SegmentationClass/2007_000033.png"),
    ("val", "VOCdevkit/VOC2012/SegmentationClass"),
    ("train", "VOCdevkit/VOC2012/SegmentationClassAug/2007_000063.png"),
    ("train", "VOCdevkit/VOC2012/JPEGImages"),
    ("train", "VOCdevkit"),
])
def test_voc_missing_files_raise_layout_error(voc_root: Path, split: str, missing: str):
    _remove(voc_root / missing)
    with pytest.raises(DatasetLayoutError) as err:
        voc_dataset(voc_root, split)
    path = voc_root / missing
    assert str(path) in str(err.value) or (missing == "VOCdevkit" and str(path / "VOC2012") in str(err.value))
    assert VOC_LAYOUT in str(err.value)


def test_missing_root_and_empty_list(tmp_path: Path, voc_root: Path):
    for name, layout in (("voc", VOC_LAYOUT), ("coco-stuff", COCO_STUFF_LAYOUT), ("shapes", SHAPES_LAYOUT)):
        with pytest.raises(DatasetLayoutError) as err:
            build_dataset(name, tmp_path / "nowhere", "train")
        assert str(tmp_path / "nowhere") in str(err.value) and layout in str(err.value)
    val_txt = voc_root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"
    val_txt.write_text("\n")
    with pytest.raises(DatasetLayoutError, match="empty") as err:
        voc_dataset(voc_root, "val")
    assert str(val_txt) in str(err.value)


def test_unknown_names_raise():
    with pytest.raises(DatasetNameError):
        build_dataset("cityscapes", ".", "train")
    with pytest.raises(DatasetNameError):
        load_info("ade20k")
    with pytest.raises(DatasetNameError):
        voc_dataset(".", "test")


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco_stuff164k"
    for split, stems in (("train2017", ["000000000009", "000000000025", "000000000030"]),
                         ("val2017", ["000000000139"])):
        for k, stem in enumerate(stems):
            write_jpeg(root / "images" / split / f"{stem}.jpg", k)
            lab = voc_label([k, 170, 255, 0, 19])
            write_label(root / "annotations" / split / f"{stem}_labelTrainIds.png", lab)
            write_label(root / "annotations" / split / f"{stem}.png", lab + 1)  # raw map: not a label
    return root


def test_coco_stuff_pairing_and_labels(coco_root: Path):
    train = coco_stuff_dataset(coco_root, "train")
    val = build_dataset("coco-stuff", coco_root.parent, "val")  # the parent folder works too
    assert len(train) == 3 and len(val) == 1
    for img, lab in train.pairs:
        assert lab.name == f"{img.stem}_labelTrainIds.png" and lab.parent.parent.name == "annotations"
    sample = train[2]
    assert sample["name"] == "000000000030"
    assert sample["label"][0, :5].tolist() == [2, 170, 255, 0, 19]
    assert len(train.info.classes) == 171


@pytest.mark.parametrize("missing, named", [
    ("annotations", "annotations/val2017"),
    ("annotations/val2017/000000000139_labelTrainIds.png", None),
    ("images/val2017", None),
])
def test_coco_stuff_missing_files(coco_root: Path, missing: str, named: str | None):
    _remove(coco_root / missing)
    with pytest.raises(DatasetLayoutError) as err:
        coco_stuff_dataset(coco_root, "val")
    assert str(coco_root / (named or missing)) in str(err.value)
    assert COCO_STUFF_LAYOUT in str(err.value)


def test_coco_stuff_empty_split(coco_root: Path):
    for p in (coco_root / "images" / "val2017").iterdir():
        p.unlink()
    with pytest.raises(DatasetLayoutError, match="no .jpg") as err:
        coco_stuff_dataset(coco_root, "val")
    assert str(coco_root / "images" / "val2017") in str(err.value)


SHAPE_CLASSES = ["circle", "square", "triangle", "star"]


@pytest.fixture
def shapes_root(tmp_path: Path) -> Path:
    root = tmp_path / "shapes_train"
    for k in range(3):
        img = np.random.default_rng(k).integers(0, 256, (H, W, 3), dtype=np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{k:05d}.png")
        write_label(root / "masks" / f"{k:05d}.png", voc_label([0, 1, 4, 2]))
    (root / "split.json").write_text(json.dumps(
        {"classes": SHAPE_CLASSES, "seen": ["circle", "triangle"], "unseen": ["square", "star"]}))
    return root


def test_shapes_dataset(shapes_root: Path):
    for split in ("train", "val"):
        ds = shapes_dataset(shapes_root, split)
        assert len(ds) == 3
    sample = ds[0]
    assert sample["label"][0, :4].tolist() == [255, 0, 3, 1]
    assert np.array_equal(sample["image"], np.array(Image.open(shapes_root / "images" / "00000.png")))
    assert ds.info.classes == SHAPE_CLASSES and ds.info.seen == ["circle", "triangle"]
    assert ds.info.seen_ids == [0, 2] and ds.info.unseen_ids == [1, 3]


@pytest.mark.parametrize("missing", ["split.json", "masks/00001.png", "masks"])
def test_shapes_missing_files(shapes_root: Path, missing: str):
    _remove(shapes_root / missing)
    with pytest.raises(DatasetLayoutError) as err:
        shapes_dataset(shapes_root, "train")
    assert str(shapes_root / missing) in str(err.value) and SHAPES_LAYOUT in str(err.value)


def test_shapes_inconsistent_split_json(shapes_root: Path):
    (shapes_root / "split.json").write_text(json.dumps(
        {"classes": SHAPE_CLASSES, "seen": ["circle"], "unseen": ["square", "star"]}))
    with pytest.raises(DatasetLayoutError):
        load_info("shapes", shapes_root)


def test_image_label_size_mismatch(shapes_root: Path):
    write_label(shapes_root / "masks" / "00002.png", np.zeros((H + 1, W), np.uint8))
    ds = shapes_dataset(shapes_root, "train")
    with pytest.raises(DatasetLayoutError, match="sizes differ"):
        ds[2]


def test_transform_is_applied(shapes_root: Path):
    ds = build_dataset("shapes", shapes_root, "train", transform=lambda s: {**s, "seen": True})
    assert ds[0]["seen"] is True


def test_class_lists():
    voc, coco = load_info("voc"), load_info("coco-stuff")
    assert voc.name == "voc" and coco.name == "coco-stuff"
    assert len(voc.classes) == 20 and len(coco.classes) == 171
    assert voc.unseen == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert len(coco.unseen) == 15
    for info in (voc, coco):
        assert len(set(info.classes)) == len(info.classes)
        assert set(info.unseen) <= set(info.classes)
        assert info.ignore_index == 255
        assert len(info.seen) + len(info.unseen) == len(info.classes)
    assert voc.classes[:3] == ["aeroplane", "bicycle", "bird"] and voc.classes[-1] == "tvmonitor"
    assert coco.classes[0] == "person" and coco.classes[79] == "toothbrush"
    assert coco.classes[80] == "banner" and coco.classes[170] == "wood"
    assert coco.classes.index("cow") == 19 and coco.classes.index("wall-concrete") == 160
    raw = json.loads((Path(__file__).parents[2] / "resources/datasets/voc2012.json").read_text())
    assert raw["layout"] and raw["ignore_index"] == 255


def test_dataset_info_validation():
    with pytest.raises(Exception, match="twice"):
        DatasetInfo("x", ["a", "a"])
    with pytest.raises(Exception, match="not in"):
        DatasetInfo("x", ["a", "b"], ["c"])


def test_zero_shot_labels():
    voc = load_info("voc")  # unseen ids 15..19
    label = np.array([[0, 14, 15, 16], [19, 255, 9, 10]], dtype=np.uint8)
    out = zero_shot_labels(label, voc)
    assert out.dtype == np.uint8 and out.shape == label.shape
    assert out.tolist() == [[0, 14, 255, 255], [255, 255, 9, 10]]
    out64 = zero_shot_labels(label.astype(np.int64), voc)
    assert out64.dtype == np.int64 and out64.tolist() == out.tolist()
    tensor = zero_shot_labels(torch.from_numpy(label.astype(np.int64)), voc)
    assert tensor.dtype == torch.int64 and tensor.tolist() == out.tolist()
    coco = load_info("coco-stuff")
    ids = np.array([17, 19, 20, 23, 24, 170, 255], dtype=np.uint8)  # horse, cow, elephant, giraffe, ...
    assert zero_shot_labels(ids, coco).tolist() == [17, 255, 19, 255, 22, 155, 255]
    assert coco.seen[19] == "elephant" and coco.seen[155] == "wood"
