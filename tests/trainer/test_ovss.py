"""The training-free table's evaluation sets: synthetic data in each real layout, random weights."""

import json

import cv2
import numpy as np
import pytest

from chimera_trainer.data import ovss
from chimera_trainer.metrics import ConfusionMatrix

SIZE = (40, 56)  # h, w


def _write_pair(image_path, label_path, label: np.ndarray, seed: int) -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (*SIZE, 3), dtype=np.uint8)
    cv2.imwrite(str(image_path), rgb)
    cv2.imwrite(str(label_path), label)


def _label(values: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array(values, dtype=np.uint8), size=SIZE)


def make_all_layouts(root):
    """Two images per set, labels covering background, classes and void as each layout stores them."""
    voc = root / "VOCdevkit" / "VOC2012"
    ctx = root / "VOCdevkit" / "VOC2010"
    for i in range(2):
        _write_pair(voc / "JPEGImages" / f"v{i}.jpg", voc / "SegmentationClass" / f"v{i}.png", _label([0, 1, 15, 20, 255], i), i)
        _write_pair(ctx / "JPEGImages" / f"c{i}.jpg", ctx / "SegmentationClassContext" / f"c{i}.png", _label([0, 1, 30, 59], i), i)
        coco = root / "coco_stuff164k"
        _write_pair(coco / "images/val2017" / f"{i:012d}.jpg", coco / "annotations/val2017" / f"{i:012d}_labelTrainIds.png",
                    _label([0, 80, 170, 255], i), i)
        cv2.imwrite(str(coco / "annotations/val2017" / f"{i:012d}_instanceTrainIds.png"), _label([0, 1, 80, 255], i + 7))
        city = root / "cityscapes"
        _write_pair(city / "leftImg8bit/val/aachen" / f"a_{i}_leftImg8bit.png",
                    city / "gtFine/val/aachen" / f"a_{i}_gtFine_labelTrainIds.png", _label([0, 10, 18, 255], i), i)
        ade = root / "ADEChallengeData2016"
        _write_pair(ade / "images/validation" / f"ADE_val_{i}.jpg", ade / "annotations/validation" / f"ADE_val_{i}.png",
                    _label([0, 1, 150], i), i)
    for base, listing in ((voc, "ImageSets/Segmentation/val.txt"), (ctx, "ImageSets/SegmentationContext/val.txt")):
        (base / listing).parent.mkdir(parents=True, exist_ok=True)
        prefix = "v" if base == voc else "c"
        (base / listing).write_text(f"{prefix}0\n{prefix}1\n")
    return root


def test_class_lists_have_the_papers_sizes():
    sizes = {name: bench.info().num_classes for name, bench in ovss.BENCHMARKS.items()}
    assert sizes == {"voc21": 21, "context60": 60, "coco_object": 81, "voc20": 20, "context59": 59,
                     "coco_stuff": 171, "cityscapes": 19, "ade20k": 150}


@pytest.mark.parametrize("name,stored,expected", [
    ("voc21", [0, 1, 20, 255], [0, 1, 20, 255]), ("voc20", [0, 1, 20, 255], [255, 0, 19, 255]),
    ("context60", [0, 59], [0, 59]), ("context59", [0, 1, 59], [255, 0, 58]),
    ("coco_object", [0, 80, 255], [0, 80, 255]), ("coco_stuff", [0, 170, 255], [0, 170, 255]),
    ("cityscapes", [0, 18, 255], [0, 18, 255]), ("ade20k", [0, 1, 150], [255, 0, 149]),
])
def test_labels_map_onto_each_sets_class_ids(tmp_path, name, stored, expected):
    root = make_all_layouts(tmp_path)
    data = ovss.dataset(name, root)
    assert len(data) == 2
    lut = data.label_map
    assert [int(lut[v]) for v in stored] == expected


def test_a_perfect_prediction_scores_100(tmp_path):
    root = make_all_layouts(tmp_path)
    for name, bench in ovss.BENCHMARKS.items():
        data = ovss.dataset(name, root)
        matrix = ConfusionMatrix(data.info.num_classes)
        for i in range(len(data)):
            label = np.asarray(data[i]["label"]).astype(np.int64)
            engine_labels = np.where(label == 255, 0, label - 1 if bench.background else label)  # background → -1
            matrix.update(ovss.prediction_ids(engine_labels, bench), label)
        assert matrix.summary(list(data.info.classes), [])["mIoU"] == pytest.approx(1.0), name


def test_missing_set_names_its_layout(tmp_path):
    from chimera_trainer.data.datasets import DatasetLayoutError

    with pytest.raises(DatasetLayoutError, match="ADEChallengeData2016|annotations/validation"):
        ovss.dataset("ade20k", tmp_path)


def test_table_runs_every_set_with_random_weights(tmp_path, capsys):
    from benchmarks import ovss_table

    root = make_all_layouts(tmp_path)
    md = tmp_path / "table.md"
    assert ovss_table.main(["--data-root", str(root), "--clip", "chimera-tiny/random", "--methods", "naclip",
                            "--pamr", "--device", "cpu", "--precision", "fp32", "--markdown", str(md)]) == 0
    report = json.loads(capsys.readouterr().out)
    for label in ("naclip", "naclip+pamr"):
        assert set(report["results"][label]) == set(ovss.BENCHMARKS)
        for result in report["results"][label].values():
            assert result["images"] == 2 and 0 <= result["miou"] <= 100
    table = md.read_text()
    assert "naclip (published)" in table and "64.1" in table  # NACLIP + PAMR's published VOC21
