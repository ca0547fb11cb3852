"""Exports checked with pycocotools (masks bit for bit, ids, disjoint, AP 1.0), PNG masks, COCO import."""

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from chimera_app.project import ImageState, Project, Provenance, Region
from chimera_app.project.exports import (
    ExportError,
    export_coco,
    export_png_masks,
    import_coco,
)
from chimera_engine.formats.png_masks import read_index_png

H, W = 48, 64


def quiet_coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture
def root(tmp_path) -> Path:
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    cv2.imwrite(str(images / "a.png"), np.full((H, W, 3), 90, np.uint8))
    cv2.imwrite(str(images / "nested" / "b.png"), np.full((H, W, 3), 20, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 48 high, upright 48 wide x 64 high
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(images / "rotated.jpg", exif=exif)
    return images


def fill(project, rel, maps: dict[int, np.ndarray], verify=True):
    """Paint each class's mask into the image's document and save it."""
    doc = project.load_document(rel)
    for class_id, mask in maps.items():
        doc.paint(Region.full(mask), class_id)
    doc.state = ImageState.VERIFIED if verify else ImageState.PREDICTED  # painting alone: in progress
    project.save_document(rel, doc)
    return doc.labels.copy()


@pytest.fixture
def project(root):
    with Project.open(root) as project:
        for name in ("car; automobile", "tree", "sky", "road"):
            project.classes.add(name)
        yy, xx = np.mgrid[:H, :W]
        ring = ((yy - 20) ** 2 + (xx - 30) ** 2 < 15 ** 2) & ((yy - 20) ** 2 + (xx - 30) ** 2 >= 6 ** 2)
        parts = np.zeros((H, W), bool)
        parts[40:, :10] = parts[40:, 50:] = True  # one class in two separate pieces
        fill(project, "a.png", {1: ring, 2: parts, 3: (yy < 3)})
        fill(project, "nested/b.png", {2: xx > 40}, verify=False)
        tall = np.zeros((W, H), bool)
        tall[50:, :] = True
        fill(project, "rotated.jpg", {4: tall})
        yield project


def test_coco_export_matches_the_label_maps_bit_for_bit(project, tmp_path):
    out = tmp_path / "coco.json"
    record = export_coco(project, out)
    coco = quiet_coco(out)
    data = json.loads(out.read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert [c["name"] for c in data["categories"]] == ["car", "tree", "sky", "road"]
    assert [i["file_name"] for i in data["images"]] == ["a.png", "nested/b.png", "rotated.jpg"]
    rotated = data["images"][2]
    assert (rotated["width"], rotated["height"]) == (H, W)  # upright
    ids = [a["id"] for a in data["annotations"]]
    assert min(ids) >= 1 and len(set(ids)) == len(ids) and all(a["iscrowd"] == 0 for a in data["annotations"])
    for img in data["images"]:
        labels = project.load_document(img["file_name"]).labels
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        by_class = {a["category_id"]: coco.annToMask(a).astype(bool) for a in anns}
        assert len(by_class) == len(anns)  # one annotation per (image, class)
        for class_id in (1, 2, 3, 4):
            expected = labels == class_id
            np.testing.assert_array_equal(by_class.get(class_id, np.zeros_like(expected)), expected)
        assert sum(m.astype(int) for m in by_class.values()).max(initial=0) <= 1  # pairwise disjoint
    ring = coco.annToMask(next(a for a in data["annotations"] if a["image_id"] == 1 and a["category_id"] == 1))
    assert ring[20, 30] == 0 and ring[20, 40] == 1  # the hole survived
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes([dict(a, score=1.0) for a in data["annotations"]]), "segm")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    assert record["kind"] == "coco" and record["images"] == 3 and record["annotations"] == len(ids)
    saved = json.loads((project.data_dir / "project.json").read_text())["exports"]
    assert saved[-1]["path"] == str(out) and saved[-1]["annotations"] == len(ids)


def test_coco_export_of_chosen_states(project, tmp_path):
    export_coco(project, tmp_path / "verified.json", states=[ImageState.VERIFIED])
    data = json.loads((tmp_path / "verified.json").read_text())
    assert [i["file_name"] for i in data["images"]] == ["a.png", "rotated.jpg"]
    assert len(data["categories"]) == 4  # from the class list, not from what appears


def test_category_ids_after_a_deleted_class_follow_the_stable_ids(project, tmp_path):
    project.classes.remove(2)
    project.classes.move(4, 0)  # display order must not matter
    record = export_coco(project, tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "car"), (2, "sky"), (3, "road")]
    assert record["category_class_ids"] == [1, 3, 4]
    coco = quiet_coco(tmp_path / "c.json")
    labels = project.load_document("rotated.jpg").labels
    ann = coco.loadAnns(coco.getAnnIds(imgIds=3))[0]
    assert ann["category_id"] == 3 and (coco.annToMask(ann).astype(bool) == (labels == 4)).all()


def test_png_mask_export_with_class_list(project, tmp_path):
    record = export_png_masks(project, tmp_path / "masks")
    listed = json.loads((tmp_path / "masks" / "classes.json").read_text())
    assert [c["name"] for c in listed["classes"]] == ["car", "tree", "sky", "road"]
    for rel in project.images():
        png = read_index_png((tmp_path / "masks" / rel).with_suffix(".png"))
        np.testing.assert_array_equal(png, project.load_document(rel).labels)
    assert record["kind"] == "png" and record["images"] == 3 and project.exports[-1]["kind"] == "png"


def test_png_export_refuses_two_images_sharing_a_mask_name(project, root, tmp_path):
    cv2.imwrite(str(root / "a.jpg"), np.zeros((H, W, 3), np.uint8))
    project.refresh_images()
    fill(project, "a.jpg", {1: np.ones((H, W), bool)})
    with pytest.raises(ExportError, match="a.jpg"):
        export_png_masks(project, tmp_path / "masks")


def test_import_round_trip_into_a_fresh_project(project, root, tmp_path):
    export_coco(project, tmp_path / "coco.json")
    expected = {rel: project.load_document(rel).labels for rel in project.images()}
    with Project.open(root, project_dir=tmp_path / "other") as other:
        other.classes.add("ROAD")  # matched by name, case-insensitive: keeps its id 1
        summary = import_coco(other, tmp_path / "coco.json")
        assert summary["images"] == 3 and summary["classes_added"] == ["car", "tree", "sky"]
        names = {c.name: c.id for c in other.classes}
        assert names == {"ROAD": 1, "car": 2, "tree": 3, "sky": 4}
        remap = np.asarray([0, names["car"], names["tree"], names["sky"], names["ROAD"]], np.uint16)
        for rel, labels in expected.items():
            doc = other.load_document(rel)
            np.testing.assert_array_equal(doc.labels, remap[labels])
            np.testing.assert_array_equal(doc.provenance == Provenance.HUMAN, labels != 0)
            assert doc.state == other.state(rel) == ImageState.VERIFIED


def test_import_of_images_outside_the_project_changes_nothing(project, tmp_path):
    export_coco(project, tmp_path / "coco.json")
    data = json.loads((tmp_path / "coco.json").read_text())
    data["images"][0]["file_name"] = "elsewhere/x.png"
    data["images"][1]["file_name"] = "y.png"
    data["categories"].append({"id": 5, "name": "new class", "supercategory": "object"})
    (tmp_path / "bad.json").write_text(json.dumps(data))
    meta = (project.data_dir / "project.json").read_bytes()
    labels = (project.data_dir / "labels" / "a.png.png").read_bytes()
    with pytest.raises(ExportError, match=r"2 images .* not in the project .*elsewhere/x.png, y.png"):
        import_coco(project, tmp_path / "bad.json")
    assert len(project.classes) == 4 and (project.data_dir / "project.json").read_bytes() == meta
    assert (project.data_dir / "labels" / "a.png.png").read_bytes() == labels


def test_import_refuses_wrong_sizes_clashing_names_and_garbage(project, tmp_path):
    export_coco(project, tmp_path / "coco.json")
    data = json.loads((tmp_path / "coco.json").read_text())
    sized = json.loads(json.dumps(data))
    sized["images"][2].update(width=W, height=H)  # the rotated image as stored, not upright
    sized["annotations"] = [a for a in sized["annotations"] if a["image_id"] != 3]
    (tmp_path / "sized.json").write_text(json.dumps(sized))
    with pytest.raises(ExportError, match="sizes differ for rotated.jpg"):
        import_coco(project, tmp_path / "sized.json")
    data["categories"][1]["name"] = "bus; automobile"  # a new class whose phrase "automobile" is taken
    (tmp_path / "clash.json").write_text(json.dumps(data))
    with pytest.raises(ExportError, match="automobile"):
        import_coco(project, tmp_path / "clash.json")
    (tmp_path / "garbage.json").write_text("{nope")
    with pytest.raises(ExportError, match="cannot import"):
        import_coco(project, tmp_path / "garbage.json")
    assert [c.name for c in project.classes] == ["car", "tree", "sky", "road"]
