"""Semantic COCO export: pycocotools reads it back bit for bit, COCOeval scores it, faults are found."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import pickle

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from chimera_engine.formats.coco import (ClassMask, CocoBuilder, encode_label_map, read_coco_label_maps,
                                     validate_coco, write_coco)

# pycocotools' decode trips a NumPy 2 deprecation inside its own C extension; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

CLASSES = ["road", "car", "tree", "sky", "unused"]  # "unused" appears in no image


def _scene() -> np.ndarray:
    """60x80 uint8 map: a ring with a hole (1), a class in two parts (2), a class inside the hole
    (3), and a class on the first and last pixels (4), which stresses RLE run boundaries."""
    m = np.zeros((60, 80), np.uint8)
    m[10:40, 10:40] = 1
    m[18:32, 18:32] = 0  # the hole
    m[22:28, 22:28] = 3  # an island inside the hole
    m[45:55, 5:15] = 2
    m[2:8, 60:78] = 2  # second, disconnected part
    m[0, 0] = 4
    m[55:, 70:] = 4
    return m


def _noise() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 5, size=(33, 47)).astype(np.int32)  # no class 5


LABEL_MAPS = {"scene.png": _scene(), "sub/empty.jpg": np.zeros((40, 50), np.uint16), "sub/noise.png": _noise()}


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


@pytest.fixture()
def coco_dict() -> dict:
    builder = CocoBuilder(CLASSES)
    for name, lm in LABEL_MAPS.items():
        builder.add_image(name, lm.shape[1], lm.shape[0], lm)
    return builder.to_dict()


@pytest.fixture()
def coco_path(tmp_path, coco_dict):
    path = tmp_path / "export" / "annotations.json"
    write_coco(path, coco_dict)
    return path


def _blocks(block: int) -> np.ndarray:
    """Random 5-class blocks: block 5 takes the run-sorting path, block 1 the per-class one."""
    cells = np.random.default_rng(block).integers(0, 6, size=(120 // block, 150 // block))
    return np.kron(cells, np.ones((block, block), np.int64)).astype(np.uint16)


@pytest.mark.parametrize("lm", [*LABEL_MAPS.values(), np.full((5, 7), 2, np.uint8), np.eye(6, dtype=np.int32),
                                _blocks(5), _blocks(1)])
def test_encode_matches_pycocotools_encode(lm):
    masks = encode_label_map(lm, len(CLASSES))
    assert [m.category_id for m in masks] == [k for k in range(1, 6) if (lm == k).any()]
    assert not any(m.category_id == 0 for m in masks)  # unlabeled pixels get no mask
    for m in masks:
        rle = mask_utils.encode(np.asfortranarray((lm == m.category_id).astype(np.uint8)))
        assert m.rle == {"size": list(lm.shape), "counts": rle["counts"].decode("ascii")}
        assert m.area == int(mask_utils.area(rle)) == int((lm == m.category_id).sum())
        assert m.bbox == mask_utils.toBbox(rle).tolist()


@pytest.mark.parametrize("bad", [np.array([[0, 6]]), np.array([[-1, 0]]), np.zeros((2, 2), np.float32),
                                 np.zeros((2, 2, 2), np.uint8)])
def test_encode_rejects_bad_maps(bad):
    with pytest.raises(ValueError):
        encode_label_map(bad, 5)


def test_class_mask_pickles():
    masks = encode_label_map(_scene(), 5)
    assert pickle.loads(pickle.dumps(masks)) == masks


def test_file_loads_and_every_mask_round_trips(coco_path, capsys):
    api = COCO(str(coco_path))
    assert len(api.imgs) == 3
    for img in api.dataset["images"]:
        lm = LABEL_MAPS[img["file_name"]]
        assert (img["height"], img["width"]) == lm.shape
        for k in range(1, len(CLASSES) + 1):
            anns = api.loadAnns(api.getAnnIds(imgIds=[img["id"]], catIds=[k]))
            assert len(anns) == int((lm == k).any())  # one per present class, none for absent ones
            for ann in anns:
                assert np.array_equal(api.annToMask(ann), (lm == k).astype(np.uint8))
                assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
    assert not api.getAnnIds(imgIds=[2])  # the image with no labels has no annotation


def test_ids_categories_and_disjointness(coco_dict):
    for key in ("images", "annotations"):
        ids = [x["id"] for x in coco_dict[key]]
        assert ids == list(range(1, len(ids) + 1))
    assert coco_dict["categories"] == [{"id": i, "name": n, "supercategory": "object"}
                                       for i, n in enumerate(CLASSES, 1)]
    other = CocoBuilder(CLASSES)
    other.add_image("only_road.png", 4, 3, np.ones((3, 4), np.uint8))
    assert other.to_dict()["categories"] == coco_dict["categories"]  # stable, not from what appears
    assert [i["file_name"] for i in coco_dict["images"]] == list(LABEL_MAPS)
    for img in coco_dict["images"]:
        anns = [a for a in coco_dict["annotations"] if a["image_id"] == img["id"]]
        total = sum(mask_utils.decode(a["segmentation"]).astype(int) for a in anns) if anns else 0
        assert np.max(total) <= 1


def _ap(gt_path, results) -> float:
    gt = _quiet(COCO, str(gt_path))
    dt = _quiet(gt.loadRes, copy.deepcopy(results))  # loadRes writes bbox/area into the dicts
    ev = COCOeval(gt, dt, iouType="segm")
    _quiet(ev.evaluate), _quiet(ev.accumulate), _quiet(ev.summarize)
    return float(ev.stats[0])


def test_cocoeval_self_ap_is_one_and_a_broken_result_is_not(coco_path, coco_dict):
    results = [{"image_id": a["image_id"], "category_id": a["category_id"],
                "segmentation": a["segmentation"], "score": 1.0} for a in coco_dict["annotations"]]
    assert _ap(coco_path, results) == 1.0
    broken = copy.deepcopy(results)
    ring = next(r for r in broken if r["image_id"] == 1 and r["category_id"] == 1)
    shifted = np.roll(mask_utils.decode(ring["segmentation"]), 6, axis=1)  # IoU well below 0.95
    rle = mask_utils.encode(np.asfortranarray(shifted))
    ring["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    assert _ap(coco_path, broken) < 1.0


def test_validate_accepts_our_output(coco_dict, coco_path):
    assert validate_coco(coco_dict) == []
    assert validate_coco(coco_path, expected_classes=CLASSES) == []
    assert validate_coco(str(coco_path), expected_classes=CLASSES[::-1])  # order matters


def _first_ann(coco, image_id=1, category_id=1):
    return next(a for a in coco["annotations"] if a["image_id"] == image_id and a["category_id"] == category_id)


def _ann_id_zero(c):
    c["annotations"][0]["id"] = 0


def _duplicate_id(c):
    c["annotations"][1]["id"] = c["annotations"][0]["id"]


def _overlap(c):  # give the "car" annotation the ring's pixels too
    _first_ann(c, 1, 2)["segmentation"] = copy.deepcopy(_first_ann(c, 1, 1)["segmentation"])


def _overlap_speckled(c):  # detailed masks: overlaps are found by decoding, then named by IoU
    _first_ann(c, 3, 2)["segmentation"] = copy.deepcopy(_first_ann(c, 3, 1)["segmentation"])


def _bbox_not_numbers(c):
    _first_ann(c)["bbox"] = ["a", 0, 1, 1]


def _wrong_bbox(c):
    _first_ann(c)["bbox"][2] += 1.0


def _wrong_area(c):
    _first_ann(c)["area"] += 1


def _wrong_size(c):
    _first_ann(c)["segmentation"] = mask_utils.encode(np.asfortranarray(np.ones((61, 80), np.uint8)))
    _first_ann(c)["segmentation"]["counts"] = _first_ann(c)["segmentation"]["counts"].decode()


def _unknown_category(c):
    _first_ann(c)["category_id"] = 99


def _unknown_image(c):
    _first_ann(c)["image_id"] = 42


def _two_of_one_category(c):
    _first_ann(c, 1, 2)["category_id"] = 1


def _category_gap(c):
    c["categories"][1]["id"] = 7


def _empty_name(c):
    c["categories"][0]["name"] = ""


@pytest.mark.parametrize("fault, words", [
    (_ann_id_zero, "annotation id 0"), (_duplicate_id, "used more than once"), (_overlap, "annotations 1 and 2 overlap"),
    (_overlap_speckled, "overlap"), (_bbox_not_numbers, "bbox"),
    (_wrong_bbox, "bbox"), (_wrong_area, "area"), (_wrong_size, "RLE size"),
    (_unknown_category, "unknown category"), (_unknown_image, "unknown image"),
    (_two_of_one_category, "more than one annotation"), (_category_gap, "category ids"),
    (_empty_name, "empty"),
])
def test_validate_reports_each_injected_fault(coco_dict, fault, words):
    broken = copy.deepcopy(coco_dict)
    fault(broken)
    problems = validate_coco(broken)
    assert any(words in p for p in problems), problems


@pytest.mark.parametrize("counts", ["", "0", "\u00e90", "!!", "0k", "51igV^;0" * 3])
def test_corrupt_rle_is_reported_not_decoded(tmp_path, coco_dict, counts):
    # pycocotools' C decoder trusts the counts and would write past its buffer: check them first
    _first_ann(coco_dict)["segmentation"]["counts"] = counts
    assert any("RLE counts" in p for p in validate_coco(coco_dict))
    write_coco(tmp_path / "c.json", coco_dict)
    with pytest.raises(ValueError, match="annotation 1"):
        read_coco_label_maps(tmp_path / "c.json")


def test_uncompressed_rle_with_bad_counts_is_reported(coco_dict):
    _first_ann(coco_dict)["segmentation"]["counts"] = [4000, 1000, -200]
    assert any("RLE counts" in p for p in validate_coco(coco_dict))


def test_validate_large_counts():
    lm = np.zeros((2000, 3000), np.uint8)  # counts of millions need several chunks per value
    lm[0, 0] = lm[1999, 2999] = lm[5:7, 1500] = 1
    builder = CocoBuilder(["a"])
    builder.add_image("big.png", 3000, 2000, lm)
    assert validate_coco(builder.to_dict()) == []


def test_validate_reports_unreadable_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert validate_coco(bad) and validate_coco(tmp_path / "missing.json")
    assert validate_coco({"images": []})


def test_read_label_maps_round_trips(coco_path):
    names, maps = read_coco_label_maps(coco_path)
    assert names == CLASSES
    assert maps.keys() == LABEL_MAPS.keys()
    for name, lm in LABEL_MAPS.items():
        assert maps[name].dtype == np.uint8 and np.array_equal(maps[name], lm)


def test_read_accepts_polygons_and_uncompressed_rle(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "p.png", "width": 20, "height": 10}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]},
                {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 1,
                 "segmentation": {"size": [10, 20], "counts": [150, 5, 45]}}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    names, maps = read_coco_label_maps(path)
    api = _quiet(COCO, str(path))
    expected = api.annToMask(api.anns[1]) + 2 * api.annToMask(api.anns[2])
    assert names == ["a", "b"] and np.array_equal(maps["p.png"], expected)
    assert (maps["p.png"] == 1).any() and (maps["p.png"] == 2).sum() == 5


def test_read_rejects_overlaps_and_bad_category_ids(tmp_path, coco_dict):
    _overlap(coco_dict)
    write_coco(tmp_path / "o.json", coco_dict)
    with pytest.raises(ValueError, match="scene.png"):
        read_coco_label_maps(tmp_path / "o.json")
    _category_gap(coco_dict)
    write_coco(tmp_path / "g.json", coco_dict)
    with pytest.raises(ValueError, match="category ids"):
        read_coco_label_maps(tmp_path / "g.json")


def test_300_classes_round_trip_as_uint16(tmp_path):
    classes = [f"class {k}" for k in range(1, 301)]
    lm = (np.arange(24 * 25).reshape(24, 25) % 301).astype(np.uint16)
    builder = CocoBuilder(classes)
    builder.add_image("big.png", 25, 24, lm)
    write_coco(tmp_path / "c.json", builder.to_dict())
    assert validate_coco(tmp_path / "c.json", classes) == []
    names, maps = read_coco_label_maps(tmp_path / "c.json")
    assert names == classes and maps["big.png"].dtype == np.uint16 and np.array_equal(maps["big.png"], lm)


def test_builder_rejects_bad_input():
    builder = CocoBuilder(CLASSES)
    builder.add_image("a\\b.png", 3, 2, np.zeros((2, 3), np.uint8))
    assert builder.to_dict()["images"][0]["file_name"] == "a/b.png"
    with pytest.raises(ValueError, match="duplicate"):
        builder.add_image("a/b.png", 3, 2, np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        builder.add_image("c.png", 2, 3, np.zeros((2, 3), np.uint8))  # width/height swapped
    for name in ("/abs.png", "C:/x.png", ""):
        with pytest.raises(ValueError):
            builder.add_image(name, 3, 2, np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError):
        CocoBuilder(["a", "a"])
    assert len(builder.to_dict()["images"]) == 1  # failed additions left nothing behind


def test_add_encoded_uses_masks_from_elsewhere(coco_dict):
    builder = CocoBuilder(CLASSES)
    for name, lm in LABEL_MAPS.items():
        masks = pickle.loads(pickle.dumps(encode_label_map(lm, len(CLASSES))))  # as from a worker
        builder.add_encoded(name, lm.shape[1], lm.shape[0], masks)
    assert builder.to_dict() == coco_dict
    wrong = ClassMask(category_id=1, rle={"size": [1, 1], "counts": "01"}, area=1, bbox=[0.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="size"):
        builder.add_encoded("x.png", 3, 2, [wrong])
