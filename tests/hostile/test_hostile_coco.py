"""Hostile COCO files imported into a project: each refused with a message naming the problem, and
the labels a person already saved are exactly as they were afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chimera_app.project import Project
from chimera_app.project.exports import ExportError, import_coco
from chimera_engine import limits
from chimera_engine.formats.coco_reader import read_coco
from tests.hostile.conftest import labelled


def _coco(images=None, annotations=None, categories=None) -> dict:
    """A valid semantic COCO of the fixture's a.png (20x10) and b.png (16x12); parts replaceable."""
    return {
        "images": images if images is not None else [
            {"id": 1, "file_name": "a.png", "width": 20, "height": 10},
            {"id": 2, "file_name": "b.png", "width": 16, "height": 12}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 2, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]}],
        "categories": categories if categories is not None else [{"id": 1, "name": "thing"}],
    }


def _polygon(points) -> list:
    return [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [points]}]


BAD_FILES = [
    # (case id, COCO dict or raw text, words the message must hold)
    ("same_image_twice", _coco(images=[{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
                                       {"id": 2, "file_name": "./a.png", "width": 20, "height": 10}]),
     ["'a.png' is listed twice", "'./a.png'"]),
    ("same_image_backslash", _coco(images=[{"id": 1, "file_name": "a.png", "width": 20, "height": 10},
                                           {"id": 2, "file_name": ".\\a.png", "width": 20, "height": 10}]),
     ["listed twice"]),
    ("integer_category_name", _coco(categories=[{"id": 1, "name": 7}]), ["category 1", "name 7", "text"]),
    ("empty_category_name", _coco(categories=[{"id": 1, "name": "  "}]), ["category 1"]),
    ("category_names_differ_in_case_only", _coco(categories=[{"id": 1, "name": "Cat"}, {"id": 2, "name": "cat"}]),
     ["not unique"]),
    ("category_ids_with_a_gap", _coco(categories=[{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]), ["1..2"]),
    ("category_id_zero", _coco(categories=[{"id": 0, "name": "a"}]), ["category id 0"]),
    ("enormous_polygon_coordinates", _coco(annotations=_polygon([0, 0, 1e12, 0, 1e12, 1e12])),
     ["far outside", "20x10"]),
    ("nan_polygon_coordinate", _coco(annotations=_polygon([0, 0, float("nan"), 0, 5, 5])), ["finite numbers"]),
    ("text_in_a_polygon", _coco(annotations=_polygon([0, 0, "5", 0, 5, 5])), ["finite numbers"]),
    ("two_point_polygon", _coco(annotations=_polygon([0, 0, 5, 5])), ["at least 3"]),
    ("rle_counts_with_fractions", _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1,
                                                      "segmentation": {"size": [10, 20], "counts": [100.5, 99.5]}}]),
     ["whole numbers"]),
    ("rle_counts_astronomical", _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1,
                                                   "segmentation": {"size": [10, 20], "counts": [10**30, 5]}}]),
     ["whole numbers"]),
    ("rle_size_of_another_image", _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1,
                                                     "segmentation": {"size": [99, 99], "counts": [9801]}}]),
     ["RLE size"]),
    ("rle_counts_short", _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1,
                                            "segmentation": {"size": [10, 20], "counts": [10, 10]}}]),
     ["do not cover"]),
    ("declared_image_200000_square", _coco(images=[{"id": 1, "file_name": "a.png", "width": 200000,
                                                    "height": 200000}], annotations=[]), ["too large", "65535"]),
    ("declared_image_300_megapixels", _coco(images=[{"id": 1, "file_name": "a.png", "width": 20000,
                                                     "height": 15000}], annotations=[]), ["megapixels", "limit 200"]),
    ("width_as_text", _coco(images=[{"id": 1, "file_name": "a.png", "width": "20", "height": 10}], annotations=[]),
     ["not two positive whole numbers"]),
    ("file_name_escapes", _coco(images=[{"id": 1, "file_name": "../secret.png", "width": 20, "height": 10}],
                                annotations=[]), ["inside the image folder"]),
    ("file_name_absolute", _coco(images=[{"id": 1, "file_name": "/etc/a.png", "width": 20, "height": 10}],
                                 annotations=[]), ["relative"]),
    ("file_name_number", _coco(images=[{"id": 1, "file_name": 5, "width": 20, "height": 10}], annotations=[]),
     ["not text"]),
    ("annotation_of_unknown_image", _coco(annotations=[{"id": 1, "image_id": 9, "category_id": 1,
                                                       "segmentation": [[1, 1, 5, 1, 5, 5]]}]), ["unknown image id 9"]),
    ("annotation_without_segmentation", _coco(annotations=[{"id": 1, "image_id": 1, "category_id": 1}]),
     ["no segmentation"]),
    ("images_not_a_list", {"images": {"a": 1}, "annotations": [], "categories": []}, ["'images'"]),
    ("top_level_list", "[1, 2, 3]", ["not a COCO object"]),
    ("not_json", "{images: ", ["not valid JSON"]),
    ("deeply_nested", "[" * 200000 + "]" * 200000, ["nested too deeply"]),
    ("latin1_bytes", b'{"images": [], "categories": [{"id": 1, "name": "caf\xe9"}], "annotations": []}',
     ["not UTF-8"]),
    ("too_many_categories", _coco(categories=[{"id": k, "name": f"c{k}"} for k in range(1, 3001)]),
     ["3000 classes", "2048"]),
]


@pytest.fixture
def project(image_folder):
    with Project.open(image_folder) as project:
        yield project


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "import.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("content,words", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_coco_import_changes_nothing(project, tmp_path, content, words):
    saved = labelled(project, "a.png")
    classes_before = [c.name for c in project.classes]
    path = _write(tmp_path, content)
    with pytest.raises(ExportError) as caught:
        import_coco(project, path)
    message = str(caught.value)
    assert all(w in message for w in words), message
    assert "nothing was imported" in message
    assert np.array_equal(project.load_document("a.png").labels, saved)
    assert project.state("b.png").value == "unlabeled"
    assert [c.name for c in project.classes] == classes_before


def test_outline_longer_than_the_limit_is_refused_before_rasterising(tmp_path):
    # Inside the image's neighbourhood, but zigzagging: 2000 edges of 10000 px = 20 M px of outline.
    zigzag = [v for i in range(2000) for v in ((0, i) if i % 2 else (9999, i))]
    coco = _coco(images=[{"id": 1, "file_name": "big.png", "width": 10000, "height": 10000}],
                 annotations=_polygon(zigzag))
    parsed = read_coco(_write(tmp_path, coco))
    with pytest.raises(limits.LimitError, match="outline"):
        parsed.label_map("big.png")


def test_outline_budget_of_a_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_COCO_POLYGON_PERIMETER", 50)  # three 27-pixel outlines exceed it
    parsed = read_coco(_write(tmp_path, _coco(annotations=[
        {"id": k, "image_id": i, "category_id": 1, "segmentation": [[0, 0, 9, 0, 9, 9]]}
        for k, i in ((1, 1), (2, 2))])))
    parsed.label_map("a.png")
    with pytest.raises(limits.LimitError, match="in all"):
        parsed.label_map("b.png")


def test_coco_file_beyond_the_size_limit(project, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_COCO_BYTES", 64)
    with pytest.raises(ExportError, match="MiB"):
        import_coco(project, _write(tmp_path, _coco()))


def test_folder_given_as_coco_file(project, tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ExportError, match="folder"):
        import_coco(project, tmp_path / "dir.json")


def test_overlapping_masks_in_the_second_image_change_nothing_in_the_first(project, tmp_path):
    saved = labelled(project, "a.png")
    coco = _coco(annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        {"id": 2, "image_id": 2, "category_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        {"id": 3, "image_id": 2, "category_id": 2, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}],
        categories=[{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}])
    with pytest.raises(ExportError, match="overlap"):
        import_coco(project, _write(tmp_path, coco))
    assert np.array_equal(project.load_document("a.png").labels, saved)
    assert project.classes.find("other") is None


def test_dot_slash_names_import_as_the_same_image(project, tmp_path):
    coco = _coco(images=[{"id": 1, "file_name": "./b.png", "width": 16, "height": 12}],
                 annotations=[{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]}])
    report = import_coco(project, _write(tmp_path, coco))
    assert report["images"] == 1 and project.state("b.png").value == "human-verified"
