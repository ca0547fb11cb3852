"""The shapes world generator: determinism, shape geometry, labels vs captions, occlusion, dataset files."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from chimera_engine.formats.coco import validate_coco
from chimera_engine.formats.png_masks import read_index_png
from chimera_trainer.config import DATASET_DEFAULTS
from chimera_trainer.shapes import SHAPE_CLASSES, SPLIT, Sample, render_sample, sample, write_dataset
from chimera_trainer.shapes.draw import shape_alpha
from chimera_trainer.shapes.world import CAPTION_TEMPLATES, COLORS, MIN_VISIBLE

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _same(a: Sample, b: Sample) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
            and a.instances == b.instances and a.caption == b.caption)


def _canonical(name: str) -> np.ndarray:
    """The class's mask at one fixed pose: centred in 128 px, 80 px diameter, no rotation."""
    return shape_alpha(name, (64.0, 64.0), 80.0, 0.0, 128) >= 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def _says(caption: str, word: str) -> bool:
    return re.search(rf"\b{word}\b", caption) is not None


def test_classes_and_split():
    assert SHAPE_CLASSES == ("circle", "square", "triangle", "star", "ring", "cross", "heart",
                             "crescent", "hexagon", "diamond", "pentagon", "arrow")
    assert SPLIT["unseen"] == ["star", "heart", "hexagon"]
    assert SPLIT["seen"] == ["circle", "square", "triangle", "ring", "cross", "crescent",
                             "diamond", "pentagon", "arrow"]
    assert set(SPLIT["seen"]) | set(SPLIT["unseen"]) == set(SHAPE_CLASSES)
    assert not set(SPLIT["seen"]) & set(SPLIT["unseen"])


def test_deterministic_per_seed_and_index_and_independent_of_other_indices():
    first = sample(3, 5)
    for i in (9, 0, 4):  # other indices in between change nothing
        sample(3, i)
    assert _same(first, sample(3, 5))
    reverse = [sample(3, i) for i in reversed(range(6))][::-1]
    assert all(_same(a, b) for a, b in zip([sample(3, i) for i in range(6)], reverse))
    assert not np.array_equal(sample(3, 5).image, sample(4, 5).image)  # another seed, another world
    assert not np.array_equal(sample(3, 5).image, sample(3, 6).image)
    assert sample(3, 5, size=96).image.shape == (96, 96, 3)


def test_sample_types_and_ranges():
    for i in range(20):
        s = sample(1, i)
        assert s.image.shape == (128, 128, 3) and s.image.dtype == np.uint8
        assert s.labels.shape == (128, 128) and s.labels.dtype == np.uint8
        assert set(np.unique(s.labels).tolist()) <= set(range(len(SHAPE_CLASSES) + 1))
        assert 1 <= len(s.instances) <= 4
        assert all(n in SHAPE_CLASSES and c in COLORS for n, c in s.instances)
        assert s.image.std() > 5  # never a blank image


@pytest.mark.parametrize("name", SHAPE_CLASSES)
def test_every_class_can_be_drawn_alone(name):
    k = SHAPE_CLASSES.index(name) + 1
    for r in range(3):
        s = render_sample(np.random.default_rng([11, r]), classes=[name], max_objects=1)
        assert [n for n, _ in s.instances] == [name]
        assert set(np.unique(s.labels).tolist()) == {0, k}
        area = np.count_nonzero(s.labels == k) / s.labels.size
        assert 0.03 < area < 0.5  # 25-55 % of the side: clearly visible, never the whole image
        assert _says(s.caption, name)


def test_canonical_shapes_are_what_they_claim():
    masks = {n: _canonical(n) for n in SHAPE_CLASSES}
    for name, mask in masks.items():
        assert mask.any()
        n_parts, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        assert n_parts - 1 == 1, f"{name} is not one connected piece"
        n_background, _ = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
        assert n_background - 1 == (2 if name == "ring" else 1), f"{name}: wrong number of holes"
        hull = cv2.fillConvexPoly(np.zeros((128, 128), np.uint8),
                                  cv2.convexHull(cv2.findNonZero(mask.astype(np.uint8))), 1)
        solidity = np.count_nonzero(mask) / np.count_nonzero(hull)  # ~1 for convex shapes
        if name in ("circle", "square", "triangle", "hexagon", "diamond", "pentagon"):
            assert solidity > 0.96, f"{name}: solidity {solidity:.2f}"
        else:  # the heart's notch is shallow; star, ring, cross, crescent and arrow are far from convex
            assert solidity < (0.95 if name == "heart" else 0.8), f"{name}: solidity {solidity:.2f}"
    assert not masks["ring"][64, 64]  # a real hole in the middle
    ys, xs = np.nonzero(masks["diamond"])
    assert np.ptp(ys) > 1.4 * np.ptp(xs)  # taller than wide: not a rotated square


def test_canonical_shapes_differ_from_each_other():
    masks = {n: _canonical(n) for n in SHAPE_CLASSES}
    # Regular polygons inscribed in the same circle overlap that circle (and each other) by more
    # than 80 %: a regular hexagon fills 3*sqrt(3)/(2*pi) = 83 % of its circle at any size
    # convention that keeps it the same size. They differ in their corners, checked below.
    round_ones = {"circle", "hexagon", "pentagon"}
    for a, b in itertools.combinations(SHAPE_CLASSES, 2):
        limit = 0.85 if {a, b} <= round_ones else 0.8
        assert _iou(masks[a], masks[b]) < limit, (a, b, _iou(masks[a], masks[b]))
    corners = {}
    for name in ("circle", "triangle", "square", "diamond", "pentagon", "hexagon"):
        big = (shape_alpha(name, (256.0, 256.0), 400.0, 0.3, 512) >= 0.5).astype(np.uint8)
        contour = max(cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=len)
        corners[name] = len(cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True))
    assert corners["triangle"] == 3 and corners["square"] == corners["diamond"] == 4
    assert corners["pentagon"] == 5 and corners["hexagon"] == 6 and corners["circle"] > 6


def _template(caption: str) -> str:
    matches = [t for t in CAPTION_TEMPLATES
               if re.fullmatch(re.escape(t).replace(re.escape("{}"), "(an? .+)"), caption)]
    return max(matches, key=len)  # "{}." matches everything; the longest match is the template


def test_captions_name_every_visible_shape():
    samples = [sample(2, i) for i in range(60)]
    for s in samples:
        named = {n for n, _ in s.instances}
        in_map = {SHAPE_CLASSES[k - 1] for k in np.unique(s.labels).tolist() if k}
        assert in_map == named  # every instance is visible, every visible class an instance
        assert all(_says(s.caption, n) for n in named)
        assert sum(len(re.findall(rf"\b{n}\b", s.caption)) for n in SHAPE_CLASSES) == len(s.instances)
        assert s.caption.endswith(".") and s.caption == s.caption.lower()
    said = sum(_says(s.caption, c) for s in samples for _, c in s.instances)
    assert said > 0.7 * sum(len(s.instances) for s in samples)  # colours usually said, not always
    assert len({_template(s.caption) for s in samples}) >= 5  # several templates in use
    multi = [s for s in samples if len(s.instances) >= 2]
    first_named = [min(s.instances, key=lambda inst: s.caption.find(f" {inst[0]}"))[0] for s in multi]
    assert sum(f != s.instances[0][0] for f, s in zip(first_named, multi)) > 0  # random order


def test_occlusion_label_map_is_the_painting_order():
    overlapping = dropped = 0
    for i in range(40):
        s = render_sample(np.random.default_rng([5, i]), size=64, min_objects=6, max_objects=6)
        expected = np.zeros_like(s.labels)
        covered = np.zeros(s.labels.shape, int)
        masks = [shape.alpha(64) >= 0.5 for shape in s.shapes]
        for shape, mask in zip(s.shapes, masks):
            expected[mask] = SHAPE_CLASSES.index(shape.name) + 1
            covered += mask
        assert np.array_equal(s.labels, expected)
        assert [(sh.name, sh.color) for sh in s.shapes] == s.instances
        for j, mask in enumerate(masks):  # each kept shape shows >= 3 % of itself past later ones
            hidden = np.any(masks[j + 1:], axis=0) if j + 1 < len(masks) else np.zeros_like(mask)
            assert np.count_nonzero(mask & ~hidden) >= MIN_VISIBLE * np.count_nonzero(mask)
        overlapping += covered.max() > 1
        dropped += len(s.instances) < 6
    assert overlapping > 10 and dropped > 0  # the test saw occlusion and dropped shapes


def test_noise_and_blur_leave_the_scene_alone():
    noisy, clean = sample(8, 1), sample(8, 1, noise=0, blur=0)
    assert np.array_equal(noisy.labels, clean.labels) and noisy.caption == clean.caption
    assert not np.array_equal(noisy.image, clean.image)
    k = int(clean.labels.max())
    inside = clean.image[cv2.erode((clean.labels == k).astype(np.uint8), np.ones((5, 5))).astype(bool)]
    assert inside.std(axis=0).max() < 12  # a clean shape is one gently shaded colour


def test_write_dataset_layout_and_ground_truth(tmp_path):
    out = write_dataset(tmp_path / "world", images=12, seed=7)
    assert out == tmp_path / "world"
    names = [f"{i:06d}.png" for i in range(12)]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert sorted(p.name for p in (out / "masks").iterdir()) == names
    assert validate_coco(out / "annotations.json", list(SHAPE_CLASSES)) == []
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    captions = json.loads((out / "captions.json").read_text(encoding="utf-8"))
    assert list(captions) == names
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        i = names.index(info["file_name"])
        s = sample(7, i)
        assert (info["width"], info["height"]) == (128, 128)
        assert np.array_equal(np.asarray(Image.open(out / "images" / info["file_name"]).convert("RGB")), s.image)
        mask = read_index_png(out / "masks" / info["file_name"])
        assert np.array_equal(mask, s.labels)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert sorted(a["category_id"] for a in anns) == sorted(set(np.unique(mask).tolist()) - {0})
        for a in anns:
            assert np.array_equal(coco.annToMask(a), (mask == a["category_id"]).astype(np.uint8))
        assert captions[info["file_name"]] == s.caption
    split = json.loads((out / "split.json").read_text(encoding="utf-8"))
    assert split == {"classes": list(SHAPE_CLASSES), "seen": SPLIT["seen"], "unseen": SPLIT["unseen"],
                     "background": "background", "seed": 7, "size": 128, "single_share": 0.0,
                     "twins": DATASET_DEFAULTS["shapes"]["twin_count"]}  # by default as many as the recipe trains on
    assert len(split["seen"]) == 9 and len(split["unseen"]) == 3
    assert set(split["seen"]) | set(split["unseen"]) == set(split["classes"])
    assert not set(split["seen"]) & set(split["unseen"])


def test_write_dataset_with_workers_writes_the_same_images(tmp_path):
    out = write_dataset(tmp_path / "pool", images=64, seed=2, size=64, workers=2)  # >= 64: a pool
    captions = json.loads((out / "captions.json").read_text(encoding="utf-8"))
    assert captions == {f"{i:06d}.png": sample(2, i, size=64).caption for i in range(64)}
    for i in (0, 31, 63):
        assert np.array_equal(np.asarray(Image.open(out / "images" / f"{i:06d}.png")), sample(2, i, 64).image)
    assert validate_coco(out / "annotations.json", list(SHAPE_CLASSES)) == []


def test_single_share_draws_that_share_with_one_shape_and_keeps_the_others_as_sample_draws_them(tmp_path):
    from chimera_trainer.shapes.world import scene_objects

    out = write_dataset(tmp_path / "mix", images=48, seed=4, size=64, single_share=0.5)
    assert json.loads((out / "split.json").read_text(encoding="utf-8"))["single_share"] == 0.5
    captions = json.loads((out / "captions.json").read_text(encoding="utf-8"))
    kinds = [scene_objects(i, 0.5) for i in range(48)]
    assert 14 <= kinds.count((1, 1)) <= 34  # the hash draw gives about half
    for i, kind in enumerate(kinds):
        image = np.asarray(Image.open(out / "images" / f"{i:06d}.png"))
        if kind == (1, 1):
            one = sample(4, i, 64, min_objects=1, max_objects=1)
            assert len(one.instances) == 1 and captions[f"{i:06d}.png"] == one.caption
            assert np.array_equal(image, one.image)
        else:  # untouched: the same image as the world without the option
            assert kind == (1, 4) and np.array_equal(image, sample(4, i, 64).image)
    assert [scene_objects(i, 0.0) for i in range(48)] == [(1, 4)] * 48
    assert [scene_objects(i, 0.0, background_share=1.0) for i in range(3)] == [(0, 0)] * 3
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="single_share"):
            write_dataset(tmp_path / "bad", images=2, seed=4, size=64, single_share=bad)


def test_background_only_scenes_are_captioned_as_background_and_only_they_say_it():
    from chimera_trainer.shapes.world import BACKGROUND_CAPTIONS

    empty = sample(3, 0, 64, min_objects=0, max_objects=0)
    assert empty.instances == [] and not empty.labels.any() and empty.caption in BACKGROUND_CAPTIONS
    for i in range(40):
        assert "background" not in sample(3, i, 64).caption  # scenes with shapes never say it
    assert all("background" in c for c in BACKGROUND_CAPTIONS)


def test_visible_masks_partition_the_label_map_shape_by_shape():
    from chimera_trainer.shapes.app_rule import visible_masks

    for i in range(20):
        s = sample(3, i, 64)
        masks = visible_masks(s)
        assert len(masks) == len(s.shapes)
        assert np.array_equal(np.sum(masks, axis=0), s.labels > 0)  # disjoint, and cover every shape pixel
        for shape, mask in zip(s.shapes, masks):
            assert mask.any() and set(np.unique(s.labels[mask])) == {SHAPE_CLASSES.index(shape.name) + 1}


def test_a_scenes_twins_redraw_one_shape_as_distinct_classes_and_the_first_never_moves(tmp_path):
    from chimera_trainer.shapes.world import twin, twin_file_name, twin_swaps

    for index in range(20):
        scene = sample(5, index, 64, min_objects=1, max_objects=4)
        swaps = twin_swaps(5, index, scene.instances, 11)
        instance = swaps[0][0]
        # One instance, redrawn as every other class once: the eleven twins name all eleven others.
        assert {k for k, _ in swaps} == {instance}
        assert sorted(name for _, name in swaps) == sorted(set(SHAPE_CLASSES) - {scene.instances[instance][0]})
        for count in (1, 3):  # a shorter list is a prefix: twin 0 is the same however many are written
            assert twin_swaps(5, index, scene.instances, count) == swaps[:count]
    for bad in (0, 12):
        with pytest.raises(ValueError, match="twins"):
            twin_swaps(5, 0, sample(5, 0, 64).instances, bad)
    out = write_dataset(tmp_path / "three", images=4, seed=3, size=64, twins=3)
    assert json.loads((out / "split.json").read_text())["twins"] == 3
    assert sorted(p.name for p in (out / "twins").iterdir()) == sorted(
        twin_file_name(f"{i:06d}.png", k) for i in range(4) for k in range(3))
    assert [twin_file_name("000002.png", k) for k in range(3)] == ["000002.png", "000002-1.png", "000002-2.png"]
    for i in range(4):
        scene = sample(3, i, 64, min_objects=1, max_objects=4)
        for k in range(3):
            expected = twin(3, i, 64, scene, k, min_objects=1, max_objects=4)
            assert np.array_equal(np.asarray(Image.open(out / "twins" / twin_file_name(f"{i:06d}.png", k))), expected.image)
    with pytest.raises(ValueError, match="twins"):
        write_dataset(tmp_path / "bad", images=1, seed=3, size=64, twins=12)


def test_shapes_data_writes_the_twins_it_is_asked_for_and_refuses_impossible_counts(tmp_path, capsys):
    from chimera_trainer.cli import main

    # By default as many as the shapes recipe trains on (zss refuses a folder with fewer).
    for count, expected in ((None, DATASET_DEFAULTS["shapes"]["twin_count"]), ("0", 0), ("2", 2)):
        out = tmp_path / f"twins{count}"
        assert main(["shapes-data", "--out", str(out), "--images", "3", "--seed", "4", "--size", "32",
                     *(["--twins", count] if count else [])]) == 0
        assert json.loads((out / "split.json").read_text())["twins"] == expected
        assert len(list((out / "twins").glob("*.png")) if expected else []) == 3 * expected
        assert (out / "twins").exists() == bool(expected)
    for bad in ("12", "-1", "two"):
        with pytest.raises(SystemExit) as refused:
            main(["shapes-data", "--out", str(tmp_path / "bad"), "--images", "3", "--twins", bad])
        assert refused.value.code == 2, bad
    assert "0..11 twins" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_twin_is_the_same_scene_with_one_shape_redrawn_as_another_class():
    from chimera_trainer.shapes.world import HEART_TILT

    for index in range(12):
        original = sample(5, index, 64)
        k = index % len(original.instances)
        new = "heart" if original.instances[k][0] != "heart" else "pentagon"
        twin = render_sample(np.random.default_rng([5, index]), 64, swap=(k, new))
        assert twin.instances == [(new, c) if i == k else (n, c) for i, (n, c) in enumerate(original.instances)]
        # The same template, order and colour words: only the shape's word and its article differ.
        words = [(a, b) for a, b in zip(original.caption.split(), twin.caption.split()) if a != b]
        assert len(original.caption.split()) == len(twin.caption.split()) and 1 <= len(words) <= 2
        assert words[-1][1].rstrip(".,") == new
        changed = (twin.image != original.image).any(-1)
        drawn = twin.shapes[k]
        # Only pixels the two outlines cover change, or next to them: the blur (sigma <= 0.8) reaches 2 px.
        covered = (original.shapes[k].alpha(64) > 0) | (drawn.alpha(64) > 0)
        near = cv2.dilate(covered.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert changed.any() and not (changed & ~near).any()
        assert np.array_equal(twin.labels[~covered], original.labels[~covered])
        assert (drawn.center, drawn.diameter, drawn.color) == (original.shapes[k].center, original.shapes[k].diameter,
                                                               original.shapes[k].color)
        if new == "heart":
            assert abs(drawn.angle) <= HEART_TILT + 1e-9
    with pytest.raises(ValueError, match="swap"):
        render_sample(np.random.default_rng([5, 0]), 64, min_objects=1, max_objects=1, swap=(1, "star"))
    with pytest.raises(ValueError, match="swap"):
        render_sample(np.random.default_rng([5, 0]), 64, swap=(0, "dragon"))
