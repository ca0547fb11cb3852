"""A model's own background prompts: stored in its checkpoint, used when a caller gives none."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from chimera_engine import checkpoints
from chimera_engine.devices import DeviceChoice
from chimera_engine.errors import CheckpointError
from chimera_engine.models import build_model, load_model, save_model
from chimera_engine.segmenter import Segmenter

RGB = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = build_model("clip:chimera-tiny/random")
    m.background = ["background", "texture"]
    return m


def _segmenter(model):
    seg = Segmenter(model, DeviceChoice(torch.device("cpu"), torch.float32, "test"), min_confidence=0.0)
    seg.set_image(RGB)
    return seg


def test_default_background_competes_and_leaves_pixels_unlabeled(model):
    seg = _segmenter(model)
    default = seg.segment(["circle", "square"])
    explicit = seg.segment(["circle", "square"], background=["background", "texture"])
    none = seg.segment(["circle", "square"], background=())
    np.testing.assert_array_equal(default.labels, explicit.labels)
    assert (none.labels >= 0).all()  # nothing competes: every pixel gets a class
    assert (default.labels < 0).any()  # random weights: some pixels go to a background prompt


def test_a_class_that_owns_a_background_word_keeps_it(model):
    seg = _segmenter(model)
    owned = seg.segment(["circle", "texture"])
    explicit = seg.segment(["circle", "texture"], background=["background"])
    np.testing.assert_array_equal(owned.labels, explicit.labels)


def test_background_round_trips_and_bad_values_are_refused(tmp_path, model):
    path = save_model(model, tmp_path / "m.safetensors")
    assert load_model(path).background == ["background", "texture"]
    tensors, meta = load_file(path), checkpoints.read_metadata(path)
    for bad in ("background", [""], [3], ["x"] * 100_000):
        out = tmp_path / "bad.safetensors"
        save_file(tensors, out, metadata={checkpoints.METADATA_KEY: json.dumps({**meta, "background": bad})})
        with pytest.raises(CheckpointError, match="background"):
            load_model(out)
