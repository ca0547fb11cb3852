"""The shipped shapes models: offline, self-contained, within budget, and still zero-shot on images
drawn with a seed no training or evaluation of the recipe ever used."""

import numpy as np
import pytest

from chimera_engine import load_segmenter
from chimera_engine.checkpoints import read_metadata
from chimera_engine.clip_loading import bundled_model_path
from chimera_trainer.metrics import ConfusionMatrix
from chimera_trainer.shapes import SHAPE_CLASSES, SPLIT, sample

HELD_OUT_SEED = 424242  # never a training (0), validation (1), demo (7) or benchmark seed
IMAGES = 60
# Regression floors, not the target (hIoU >= 0.6, not met: README "Status"). The shipped model
# measures hIoU 0.132 (seen 0.273, unseen 0.087) on these 60 images, the training-free shapes CLIP
# 0.059 (seen 0.050, unseen 0.070): a model that broke (wrong weights, class order or preprocessing)
# falls below the floors.
HIOU_FLOOR = 0.09


@pytest.fixture(scope="module")
def files():
    return {name: bundled_model_path(name) for name in ("shapes-clip", "shapes-chimera")}


def test_bundled_models_are_self_contained_and_small(files):
    assert sum(p.stat().st_size for p in files.values()) <= 15 * 2 ** 20
    for path in files.values():
        meta = read_metadata(path)
        assert meta["clip"]["embedded"]  # no download, no other file needed
        assert {"mIoU_seen", "mIoU_unseen", "hIoU"} <= set(meta["info"]["evaluation"])
    chimera = read_metadata(files["shapes-chimera"])
    assert sorted(chimera["seen_classes"]) == sorted(SPLIT["seen"])  # unseen never trained on


def held_out_hiou(model: str) -> dict:
    seg = load_segmenter(model, device="cpu", precision="fp32")
    matrix = ConfusionMatrix(len(SHAPE_CLASSES))
    for i in range(IMAGES):
        s = sample(HELD_OUT_SEED, i, 64)
        seg.set_image(s.image)
        out = seg.segment(list(SHAPE_CLASSES), min_confidence=0.0)
        target = s.labels.astype(np.int64) - 1
        target[s.labels == 0] = 255  # unlabeled background is ignored, as in the VOC protocol
        matrix.update(out.labels, target)
    return matrix.summary(list(SHAPE_CLASSES), list(SPLIT["unseen"]))


def test_shapes_chimera_segments_seen_and_unseen_shapes_better_than_dense_clip():
    chimera, dense = held_out_hiou("shapes-chimera"), held_out_hiou("shapes-clip")
    assert chimera["hIoU"] >= HIOU_FLOOR and chimera["mIoU_seen"] >= 0.18, chimera
    assert chimera["mIoU_unseen"] >= 0.05, chimera  # it finds shapes it never saw a mask of
    assert chimera["hIoU"] > 1.5 * dense["hIoU"], (chimera, dense)  # the paper's ordering, in miniature
