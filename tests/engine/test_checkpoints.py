"""Checkpoints rebuild the model with no other input; bad files fail clearly; nothing is unpickled."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from chimera_engine import checkpoints, load_segmenter
from chimera_engine.chimera.model import ChimeraConfig, preset
from chimera_engine.errors import CheckpointError
from chimera_engine.models import build_model, chimera_model, load_model, save_model


def _rgb(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def _features(model, rgb):
    from chimera_engine.devices import DeviceChoice
    from chimera_engine.segmenter import Segmenter

    seg = Segmenter(model, DeviceChoice(torch.device("cpu"), torch.float32, "test"))
    seg.set_image(rgb)
    return seg.features().features, seg.segment(["circle", "square; box", "star"])


@pytest.fixture(scope="module")
def trained_like_chimera(tiny_clip):
    """A tiny Chimera-Seg with non-default weights everywhere (as after training)."""
    import copy

    torch.manual_seed(3)
    cfg = ChimeraConfig(body=preset("tiny"), clip="chimera-tiny/random", csh_depth=2,
                        seen_classes=["circle", "square"], templates="single", tau=0.05)
    model = chimera_model(cfg, clip=copy.deepcopy(tiny_clip))
    with torch.no_grad():
        for p in model.encoder.body.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def test_chimera_round_trip_is_exact(tmp_path, trained_like_chimera):
    path = save_model(trained_like_chimera, tmp_path / "m.safetensors", info={"metrics": {"hIoU": 0.5}})
    loaded = load_model(path)
    assert loaded.kind == "chimera-seg" and loaded.seen_classes == ["circle", "square"]
    assert loaded.logit_scale == pytest.approx(20.0) and loaded.info["metrics"] == {"hIoU": 0.5}
    rgb = _rgb()
    f1, s1 = _features(trained_like_chimera, rgb)
    f2, s2 = _features(loaded, rgb)
    torch.testing.assert_close(f1, f2)
    np.testing.assert_array_equal(s1.labels, s2.labels)
    meta = checkpoints.read_metadata(path)
    assert meta["format"] == "chimera-checkpoint" and meta["clip"]["embedded"] is True


def test_dense_clip_checkpoint_round_trip_via_load_segmenter(tmp_path):
    torch.manual_seed(5)
    model = build_model("clip:chimera-tiny/random")
    path = save_model(model, tmp_path / "dense.safetensors")
    seg = load_segmenter(str(path), device="cpu", precision="fp32")
    rgb = _rgb(1)
    np.testing.assert_array_equal(_features(model, rgb)[1].labels, _features(load_model(path), rgb)[1].labels)
    seg.set_image(rgb)
    assert seg.segment(["a", "b"]).labels.shape == (96, 128)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, trained_like_chimera):
    path = save_model(trained_like_chimera, tmp_path / "m.safetensors")
    data = path.read_bytes()
    for name, blob in [("half", data[: len(data) // 2]), ("header-only", data[:200]), ("empty", b"")]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(blob)
        with pytest.raises(CheckpointError, match=name):
            load_model(bad)


def test_foreign_files_are_refused(tmp_path):
    pickle_file = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, pickle_file)
    with pytest.raises(CheckpointError):
        load_model(pickle_file)
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="not a Chimera checkpoint"):
        load_model(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_config_that_does_not_match_tensors_is_refused(tmp_path, trained_like_chimera):
    path = save_model(trained_like_chimera, tmp_path / "m.safetensors")
    tensors, meta = checkpoints.read_checkpoint(path)
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
    meta["model"]["csh_depth"] = 3  # the file holds a depth-2 head
    checkpoints.write_checkpoint(tmp_path / "wrong.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(tmp_path / "wrong.safetensors")
    del meta["clip"]
    checkpoints.write_checkpoint(tmp_path / "incomplete.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="incomplete"):
        load_model(tmp_path / "incomplete.safetensors")


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "new.safetensors"
    save_file({"a": torch.zeros(1)}, str(path),
              metadata={"chimera": json.dumps({"format": "chimera-checkpoint", "format_version": 99})})
    with pytest.raises(CheckpointError, match="newer"):
        load_model(path)


def test_failed_write_keeps_the_old_checkpoint(tmp_path, trained_like_chimera, monkeypatch):
    path = save_model(trained_like_chimera, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        save_model(trained_like_chimera, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
