"""The one model-name parser: every spelling the README documents, and the errors."""

import pytest

from chimera_engine.errors import ModelNameError
from chimera_engine.model_names import DEFAULT_METHOD, parse_model_name


def test_clip_names_with_and_without_method():
    m = parse_model_name("clip:ViT-B-16/openai")
    assert (m.kind, m.arch, m.weights, m.method) == ("clip", "ViT-B-16", "openai", DEFAULT_METHOD)
    assert DEFAULT_METHOD == "naclip"
    assert m.needs_download and not m.is_local_file
    assert str(m) == "clip:ViT-B-16/openai+naclip"
    for method in ("sclip", "clearclip", "maskclip", "naclip", "SCLIP"):
        assert parse_model_name(f"clip:ViT-B-16/openai+{method}").method == method.lower()
    assert str(parse_model_name("clip:ViT-B-16/openai+sclip")) == "clip:ViT-B-16/openai+sclip"


def test_local_files_random_and_plus_inside_paths():
    m = parse_model_name("clip:ViT-B-16//data/my+weights.safetensors")
    assert (m.weights, m.method, m.is_local_file) == ("/data/my+weights.safetensors", "naclip", True)
    m = parse_model_name("clip:ViT-B-16//data/w.safetensors+clearclip")
    assert (m.weights, m.method) == ("/data/w.safetensors", "clearclip")
    assert parse_model_name("clip:chimera-tiny/random").is_local_file
    assert parse_model_name("clip:ViT-B-16/w.bin").is_local_file


def test_chimera_bundled_and_checkpoints(tmp_path):
    m = parse_model_name("chimera:r50/ViT-B-16/openai")
    assert (m.kind, m.preset, m.clip) == ("chimera", "r50", "ViT-B-16/openai")
    assert parse_model_name("shapes-chimera").kind == "bundled"
    m = parse_model_name("shapes-clip+naclip")
    assert (m.kind, m.path, m.method) == ("bundled", "shapes-clip", "naclip")
    ckpt = tmp_path / "run" / "model.safetensors"
    assert parse_model_name(str(ckpt)).kind == "checkpoint"  # by suffix, even before it exists
    folder_file = tmp_path / "m.ckpt"
    folder_file.write_bytes(b"x")
    assert parse_model_name(str(folder_file)).kind == "checkpoint"  # by existence


@pytest.mark.parametrize("bad", ["", "clip:", "clip:ViT-B-16", "clip:/openai", "clip:ViT-B-16/openai+fancy",
                                 "chimera:r50", "chimera:/ViT-B-16/openai", "shapes-chimera+naclip", "nonsense"])
def test_bad_names_raise_model_name_error(bad):
    with pytest.raises(ModelNameError):
        parse_model_name(bad)
