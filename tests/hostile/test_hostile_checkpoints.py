"""Crafted checkpoints and weights files: every bad metadata field is a CheckpointError naming it,
a pickle is never unpickled, and a declared model larger than the file is refused before allocation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from chimera_engine.clip_loading import ClipSpec, create_clip
from chimera_engine.errors import CheckpointError, WeightsNotFoundError
from chimera_engine.models import build_model, load_model
from tests.hostile.conftest import craft_checkpoint, write_evil_pickle


def _load_refused(path: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert all(w in message for w in words), message
    return message


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


BAD_FIELDS = [
    # (case id, metadata edit, words the message must hold)
    ("format_version_text", _set("format_version", "abc"), ["format_version", "whole number"]),
    ("format_version_newer", _set("format_version", 99), ["newer Chimera"]),
    ("format_version_bool", _set("format_version", True), ["format_version"]),
    ("foreign_format", _set("format", "someone-else"), ["unknown checkpoint format"]),
    ("unknown_kind", _set("kind", "evil"), ["'kind'"]),
    ("template_without_braces", _set("templates", ["a photo of a thing"]), ["templates", "{}"]),
    ("template_with_named_field", _set("templates", ["a {} and a {x}"]), ["templates"]),
    ("template_set_path", _set("templates", "../../../etc/passwd"), ["templates"]),
    ("template_set_unknown", _set("templates", "no-such-set"), ["templates", "unknown prompt template set"]),
    ("templates_number", _set("templates", 7), ["templates"]),
    ("logit_scale_nan", _set("logit_scale", math.nan), ["logit_scale", "finite"]),
    ("logit_scale_inf", _set("logit_scale", math.inf), ["logit_scale"]),
    ("logit_scale_negative", _set("logit_scale", -3.0), ["logit_scale"]),
    ("logit_scale_text", _set("logit_scale", "100"), ["logit_scale"]),
    ("clip_width_65536", _set("clip", "model_cfg", "vision_cfg", "width", 65536), ["width", "1..8192"]),
    ("clip_layers_huge", _set("clip", "model_cfg", "text_cfg", "layers", 10**6), ["layers"]),
    ("clip_hf_tower", _set("clip", "model_cfg", "text_cfg", "hf_model_name", "bert-base-uncased"),
     ["hf_model_name", "does not accept"]),
    ("clip_timm_tower", _set("clip", "model_cfg", "vision_cfg", "timm_model_name", "resnet50"), ["timm_model_name"]),
    ("clip_config_not_object", _set("clip", "model_cfg", [1, 2]), ["model_cfg", "object"]),
    ("clip_spec_unparsable", _set("clip", "spec", "no-slash"), ["clip.spec"]),
    ("clip_embedded_text", _set("clip", "embedded", "yes"), ["clip.embedded"]),
    ("mean_two_values", _set("clip", "mean", [0.5, 0.5]), ["clip.mean"]),
    ("std_zero", _set("clip", "std", [0.0, 0.2, 0.2]), ["clip.std"]),
    ("inference_window_huge", _set("inference", {"window": 10**9}), ["inference.window"]),
    ("inference_unknown_key", _set("inference", {"tile": 5}), ["inference"]),
    ("seen_classes_text", _set("seen_classes", "cat"), ["seen_classes"]),
    ("dense_method_unknown", _set("info", {"method": "magic"}), ["info.method"]),
    ("clip_section_missing", _set("clip", None), ["'clip'"]),
]


@pytest.mark.parametrize("edit,words", [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS])
def test_bad_metadata_field(tiny_model_file, tmp_path, edit, words):
    path = craft_checkpoint(tiny_model_file, tmp_path / "crafted.safetensors", edit)
    _load_refused(path, *words)


def test_a_declared_clip_larger_than_the_file_is_refused_before_allocation(tiny_model_file, tmp_path, monkeypatch):
    # Within every per-field limit, but 8192 wide: ~GBs of weights declared next to a few MB of tensors.
    path = craft_checkpoint(tiny_model_file, tmp_path / "wide.safetensors",
                            _set("clip", "model_cfg", "vision_cfg", "width", 8192))
    import open_clip

    def no_real_build(*_args, **_kwargs):
        raise AssertionError("the declared model was built for real")
    monkeypatch.setattr(open_clip, "create_model", no_real_build)
    _load_refused(path, "does not match the model its config describes", "wrong shape")


def test_checkpoint_with_nan_weights(tiny_model_file, tmp_path):
    def poison(tensors):
        name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
    _load_refused(craft_checkpoint(tiny_model_file, tmp_path / "nan.safetensors", tensors_edit=poison), "NaN")


@pytest.mark.parametrize("raw,words", [
    ("[1, 2, 3]", ["not a JSON object"]),
    ("{not json", ["not valid JSON"]),
    ("[" * 100000 + "]" * 100000, ["nested too deeply"]),
], ids=["metadata_list", "metadata_not_json", "metadata_deeply_nested"])
def test_unreadable_metadata(tiny_model_file, tmp_path, raw, words):
    _load_refused(craft_checkpoint(tiny_model_file, tmp_path / "m.safetensors", raw_meta=raw), *words)


def test_truncated_checkpoint(tiny_model_file, tmp_path):
    data = tiny_model_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    _load_refused(tmp_path / "cut.safetensors", "cut.safetensors")


def test_random_bytes_checkpoint(tmp_path):
    (tmp_path / "noise.safetensors").write_bytes(bytes(range(256)) * 10)
    _load_refused(tmp_path / "noise.safetensors", "not a readable safetensors checkpoint")


def test_empty_checkpoint(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    _load_refused(tmp_path / "empty.safetensors", "empty or truncated")


def test_folder_given_as_checkpoint(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        build_model(str(tmp_path / "dir.safetensors"))


def test_pt_weights_named_inside_a_checkpoint_are_refused_and_never_unpickled(tiny_model_file, tmp_path):
    marker = tmp_path / "UNPICKLED"
    evil = write_evil_pickle(tmp_path / "weights.pt", marker)
    path = craft_checkpoint(tiny_model_file, tmp_path / "points.safetensors",
                            lambda m: m["clip"].update(embedded=False, spec=f"chimera-tiny/{evil}"))
    _load_refused(path, "never unpickles", "weights.pt")
    assert not marker.exists()


def test_pickle_given_as_safetensors_clip_weights(tmp_path):
    marker = tmp_path / "UNPICKLED"
    evil = write_evil_pickle(tmp_path / "weights.safetensors", marker)
    with pytest.raises(WeightsNotFoundError, match="not a readable .safetensors"):
        create_clip(ClipSpec("chimera-tiny", str(evil)))
    assert not marker.exists()


def test_pickle_given_as_pt_clip_weights_on_the_command_line_is_not_unpickled(tmp_path):
    # A user's own clip:<arch>//file.pt loads with torch.load(weights_only=True): objects are refused.
    marker = tmp_path / "UNPICKLED"
    evil = write_evil_pickle(tmp_path / "weights.pt", marker)
    with pytest.raises(WeightsNotFoundError, match="holds more than tensors"):
        create_clip(ClipSpec("chimera-tiny", str(evil)))
    assert not marker.exists()


def test_corrupt_pt_clip_weights(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"\x80\x04garbage" * 10)
    with pytest.raises(WeightsNotFoundError, match="w.pt"):
        create_clip(ClipSpec("chimera-tiny", str(tmp_path / "w.pt")))


def test_pt_clip_weights_of_the_wrong_architecture(tmp_path):
    torch.save({"visual.proj": torch.zeros(3, 3)}, tmp_path / "w.pt")
    with pytest.raises(WeightsNotFoundError, match="cannot load CLIP weights"):
        create_clip(ClipSpec("chimera-tiny", str(tmp_path / "w.pt")))


def test_chimera_body_on_an_unknown_backbone(tmp_path):
    from chimera_engine.models import save_model

    torch.manual_seed(0)
    model = build_model("chimera:tiny/chimera-tiny/random")
    path = save_model(model, tmp_path / "c.safetensors")
    craft_checkpoint(path, tmp_path / "bad_backbone.safetensors", _set("model", "body", "backbone", "no_such_net"))
    _load_refused(tmp_path / "bad_backbone.safetensors", "cannot be built")
    craft_checkpoint(path, tmp_path / "bad_rates.safetensors", _set("model", "body", "aspp_rates", [6, 12, 10**7]))
    _load_refused(tmp_path / "bad_rates.safetensors", "aspp_rates")
    craft_checkpoint(path, tmp_path / "bad_truncate.safetensors", _set("model", "body", "truncate", "yes"))
    _load_refused(tmp_path / "bad_truncate.safetensors", "truncate")
    # A file whose tensors hold layer4 but whose config says the body ends at layer3: refused, not half-loaded.
    craft_checkpoint(path, tmp_path / "cut.safetensors", _set("model", "body", "truncate", True))
    with pytest.raises(CheckpointError, match=r"does not match the model .*unexpected: body\.backbone\.layer4"):
        load_model(tmp_path / "cut.safetensors")
    craft_checkpoint(path, tmp_path / "bad_tau.safetensors", _set("model", "tau", float("nan")))
    _load_refused(tmp_path / "bad_tau.safetensors", "model.tau")


def test_the_valid_base_checkpoint_still_loads(tiny_model_file):
    model = load_model(tiny_model_file)
    assert model.kind == "dense-clip" and math.isfinite(model.logit_scale)
    assert json.loads(json.dumps(model.clip_model_cfg))["embed_dim"] == 64


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors"])
def test_plain_clip_weights_still_load(tiny_clip, tmp_path, suffix):
    # The control: refusing hostile weights files must not refuse good ones.
    from safetensors.torch import save_file

    state = {k: v.clone().contiguous() for k, v in tiny_clip.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = create_clip(ClipSpec("chimera-tiny", str(path)))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
