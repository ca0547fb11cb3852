"""A model's own PAMR default: stored in its checkpoint, applied when a caller asks for nothing else,
and never by the zero-shot evaluation protocol."""

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

RGB = np.zeros((64, 80, 3), np.uint8)
RGB[:, 40:] = (200, 30, 30)  # two flat colours: what PAMR snaps labels to
RGB += np.random.default_rng(0).integers(0, 20, RGB.shape, dtype=np.uint8)
CPU = DeviceChoice(torch.device("cpu"), torch.float32, "test")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = build_model("clip:chimera-tiny/random")
    m.refine, m.refine_dilations = 10, (2, 4)
    return m


def _labels(model, **options):
    seg = Segmenter(model, CPU, min_confidence=0.0, **options)
    seg.set_image(RGB)
    return seg, seg.segment(["circle", "square", "star"]).confidence


def test_the_models_refine_is_the_segmenters_default_and_a_callers_value_wins(model):
    seg, default = _labels(model)
    assert seg.refine == 10
    np.testing.assert_array_equal(default, seg.segment(["circle", "square", "star"], refine=10).confidence)
    assert not np.array_equal(default, seg.segment(["circle", "square", "star"], refine=0).confidence)
    off, plain = _labels(model, refine=0)
    assert off.refine == 0
    np.testing.assert_array_equal(plain, seg.segment(["circle", "square", "star"], refine=0).confidence)


def test_the_models_dilations_reach_pamr(model, monkeypatch):
    from chimera_engine import pamr

    used = []
    real = pamr.refine
    monkeypatch.setattr(pamr, "refine", lambda image, scores, steps, dilations: used.append(dilations)
                        or real(image, scores, steps, dilations))
    _labels(model)
    assert used == [(2, 4)]


def test_refine_round_trips_and_bad_values_are_refused(tmp_path, model):
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert (loaded.refine, loaded.refine_dilations) == (10, (2, 4))
    tensors, meta = load_file(path), checkpoints.read_metadata(path)
    older = {k: v for k, v in meta.items() if not k.startswith("refine")}  # before models had a default
    out = tmp_path / "older.safetensors"
    save_file(tensors, out, metadata={checkpoints.METADATA_KEY: json.dumps(older)})
    assert (load_model(out).refine, load_model(out).refine_dilations) == (0, (8, 16))
    for bad in (-1, 101, 2.5, "10", True, None):
        save_file(tensors, out, metadata={checkpoints.METADATA_KEY: json.dumps({**meta, "refine": bad})})
        with pytest.raises(CheckpointError, match="refine"):
            load_model(out)
    for bad in ([], [0], [65], [1, 2, 3, 4, 5], [2.0], "8", [True]):
        save_file(tensors, out, metadata={checkpoints.METADATA_KEY: json.dumps({**meta, "refine_dilations": bad})})
        with pytest.raises(CheckpointError, match="refine_dilations"):
            load_model(out)


def test_the_zero_shot_protocol_does_not_refine(model, monkeypatch):
    from chimera_trainer.data.datasets import DatasetInfo
    from chimera_trainer.evaluate import evaluate

    seg = Segmenter(model, CPU)
    asked = []
    real = seg.segment
    monkeypatch.setattr(seg, "segment", lambda *a, **k: asked.append(k["refine"]) or real(*a, **k))
    info = DatasetInfo("toy", ["circle", "square"], unseen=["square"])
    result = evaluate(seg, [{"image": RGB, "label": np.zeros((64, 80), np.uint8)}], info)
    assert asked == [0] and result["refine"] == 0
