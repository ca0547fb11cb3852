"""The shipped shapes models: offline, self-contained, and still zero-shot on images drawn with a
seed no training or evaluation of the recipe ever used, scored the way the app shows them: the user
types the 12 shape names, the model's own "background" prompt competes, and its pixels stay unlabeled."""

import json
from pathlib import Path

import pytest

from chimera_engine import load_segmenter
from chimera_engine.checkpoints import read_metadata
from chimera_engine.clip_loading import bundled_model_path
from chimera_trainer.bundle import DEMO_IMAGES, DEMO_SEED, DEMO_SIZE, TRAIN_SEED, shapes_train_config
from chimera_trainer.shapes import BACKGROUND, SHAPE_CLASSES, SPLIT
from chimera_trainer.shapes.app_rule import demo_scores, held_out_scores

HELD_OUT_SEED = 424242  # never a training (0), validation (1), demo (7) or benchmark seed
IMAGES = 200  # 60 were too few: one unseen shape's IoU moved the hIoU by a third between two models
# Regression floors, about 0.7 of what the shipped shapes-chimera measures on these images with the
# app's rule — its own background prompt and its own PAMR default, 10 steps at (4, 8) px (hIoU 0.594,
# seen shapes 0.693, unseen 0.505, background kept 0.996; without PAMR 0.379 / 0.448 / 0.306 / 0.980;
# README "Status" has them with the issue's targets, and seed 2718's, where hIoU is 0.607): a model
# that broke (wrong weights, class order, preprocessing, background or refinement rule) falls below
# them. Classes it segments under 0.05 IoU get no floor.
MEASURED = {"circle": 0.77, "square": 0.79, "triangle": 0.73, "star": 0.56, "ring": 0.82, "cross": 0.83,
            "heart": 0.57, "crescent": 0.70, "hexagon": 0.38, "diamond": 0.58, "pentagon": 0.41, "arrow": 0.60}
FLOORS = {"background_kept": 0.95, "seen_shapes": 0.48, "unseen": 0.35, "hIoU": 0.41,
          "per_class": {c: round(0.7 * v, 3) if v >= 0.05 else 0.0 for c, v in MEASURED.items()}}


@pytest.fixture(scope="module")
def files():
    return {name: bundled_model_path(name) for name in ("shapes-clip", "shapes-chimera")}


def test_bundled_models_are_self_contained(files):
    assert sum(p.stat().st_size for p in files.values()) <= 40 * 2 ** 20
    for path in files.values():
        meta = read_metadata(path)
        assert meta["clip"]["embedded"]  # no download, no other file needed
        assert meta["background"] == [BACKGROUND]  # the default "no shape here" prompt
        assert (meta["refine"], meta["refine_dilations"]) == (10, [4, 8])  # PAMR by default, sized for 64 px
        assert {"mIoU_seen", "mIoU_unseen", "hIoU"} <= set(meta["info"]["evaluation"])
    chimera = read_metadata(files["shapes-chimera"])
    assert sorted(chimera["seen_classes"]) == sorted([BACKGROUND, *SPLIT["seen"]])  # unseen never trained on


ADDED_SINCE_BUILD: dict = {}


def test_shapes_chimera_is_what_the_shapes_recipe_trains(files):
    # `chimera-train bundle` must rebuild the shipped model: its recorded training config is the one the
    # bundle builds today (the shapes recipe over TrainConfig's defaults; paths aside), so a change of
    # either without a rebuild fails here. Keys the trainer gained after the build count with the value
    # that was the build's behaviour (ADDED_SINCE_BUILD), so a new key whose default changes it fails too.
    stored = read_metadata(files["shapes-chimera"])["info"]["training"]
    recorded = json.loads(json.dumps({**ADDED_SINCE_BUILD, **stored}))
    today = json.loads(json.dumps(shapes_train_config(Path("data"), "shapes-tiny/bundled:shapes-clip",
                                                      seed=TRAIN_SEED).to_dict()))
    differ = {k: (recorded.get(k), v) for k, v in today.items()
              if k not in ("data_root", "clip") and recorded.get(k) != v}
    assert not differ and recorded.keys() == today.keys(), differ


def held_out(model: str, refine: int | None = None) -> dict:
    """The app's rule on the held-out seed; ``refine`` None: the model's own PAMR default."""
    seg = load_segmenter(model, device="cpu", precision="fp32", refine=refine)
    return held_out_scores(seg, HELD_OUT_SEED, IMAGES)


@pytest.fixture(scope="module")
def chimera():
    return held_out("shapes-chimera")


def test_shapes_chimera_leaves_background_unlabeled_and_finds_seen_and_unseen_shapes(chimera):
    assert chimera["per_class_recall"][BACKGROUND] >= FLOORS["background_kept"], chimera
    assert chimera["mIoU_seen_shapes"] >= FLOORS["seen_shapes"], chimera
    assert chimera["mIoU_unseen"] >= FLOORS["unseen"], chimera  # shapes it never saw a mask of
    assert chimera["hIoU"] >= FLOORS["hIoU"], chimera
    for name in SHAPE_CLASSES:
        assert chimera["per_class_iou"][name] >= FLOORS["per_class"][name], (name, chimera["per_class_iou"])


def test_shapes_chimera_beats_training_free_dense_clip_on_seen_shapes_and_background(chimera):
    # Both with their PAMR default. Unseen shapes: 0.505 vs 0.067 here (stop 28's model: 0.229).
    dense = held_out("shapes-clip")
    assert chimera["mIoU_seen_shapes"] > 2 * dense["mIoU_seen_shapes"], (chimera, dense)
    assert chimera["per_class_recall"][BACKGROUND] > 0.5 > dense["per_class_recall"][BACKGROUND], (chimera, dense)
    assert chimera["mIoU_unseen"] > dense["mIoU_unseen"], (chimera, dense)
    assert chimera["hIoU"] >= dense["hIoU"] * 2, (chimera, dense)  # measured: 0.594 vs 0.041 (stop 28's model: 0.350)


def test_the_pamr_default_is_what_lifts_shapes_chimera(chimera):
    # Measured: hIoU 0.379 without PAMR, 0.594 with it (1.57x; stop 28's model: 0.274 and 0.350, 1.28x),
    # background kept 0.980 and 0.996.
    plain = held_out("shapes-chimera", refine=0)
    assert chimera["hIoU"] > 1.15 * plain["hIoU"], (chimera["hIoU"], plain["hIoU"])
    assert chimera["per_class_recall"][BACKGROUND] > plain["per_class_recall"][BACKGROUND]


def test_the_demo_images_are_mostly_right():
    # The images `chimera-app --demo` opens, scored shape by shape as the app shows them. Measured with the
    # shipped model: 84.0 % of shape pixels right, 19 of the 22 shapes right by majority (two of the 4
    # hearts, called circle and diamond, and an arrow left unlabeled are wrong), background kept 99.3 %.
    # 22 shapes are few: on 200 images drawn like them (benchmarks/shapes_candidates.py, "demo_world")
    # it is 81.2 % of pixels and 501 of 614 shapes (stop 30's model: 84.0 % here, 80.2 % there; stop 32's
    # one-thread six-twin build: 69.3 % here, 80.9 % there).
    seg = load_segmenter("shapes-chimera", device="cpu", precision="fp32")
    demo = demo_scores(seg, DEMO_SEED, DEMO_IMAGES, DEMO_SIZE)
    assert demo["shapes"] == 22 and demo["shapes_right_by_majority"] >= 16, demo
    assert demo["shape_pixels_right"] >= 0.7 and demo["background_kept"] >= 0.95, demo
