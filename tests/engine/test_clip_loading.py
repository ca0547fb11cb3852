"""Model names, CLIP weights from tags / files / random, offline failures, device choice."""

import time

import pytest
import torch
from safetensors.torch import save_file

from chimera_engine import load_segmenter
from chimera_engine.clip_loading import ClipSpec, create_clip, fetch_weights
from chimera_engine.devices import choose, resolve_device
from chimera_engine.errors import ModelNameError, WeightsNotFoundError
from chimera_engine.models import build_model


def test_spec_parsing():
    assert ClipSpec.parse("ViT-B-16/openai") == ClipSpec("ViT-B-16", "openai")
    spec = ClipSpec.parse("ViT-B-16//data/w.safetensors")
    assert spec.weights == "/data/w.safetensors" and spec.is_file
    assert not ClipSpec.parse("ViT-B-16/random").is_file
    for bad in ("ViT-B-16", "/openai", "ViT-B-16/"):
        with pytest.raises(ModelNameError):
            ClipSpec.parse(bad)


def test_missing_weights_offline_fail_fast_with_a_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        build_model("clip:ViT-B-16/openai")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "offline" in message and "clip:ViT-B-16/<path" in message and str(tmp_path) in message


def test_unknown_tag_arch_and_model_names():
    with pytest.raises(WeightsNotFoundError, match="not a pretrained tag"):
        fetch_weights(ClipSpec("ViT-B-16", "nosuchtag"))
    with pytest.raises(ModelNameError, match="unknown CLIP architecture"):
        build_model("clip:ViT-Q-99/random")
    with pytest.raises(ModelNameError, match="unknown model"):
        build_model("sam-huge")
    with pytest.raises(ModelNameError):
        build_model("chimera:r999/chimera-tiny/random")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        build_model("clip:chimera-tiny//nowhere/w.safetensors")


def test_local_weights_file_loads_offline(tmp_path, tiny_clip):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.state_dict().items()}, str(path))
    clip = create_clip(ClipSpec("chimera-tiny", str(path)))
    for (k, a), b in zip(tiny_clip.state_dict().items(), clip.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"nonsense": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsNotFoundError, match="cannot load CLIP weights"):
        create_clip(ClipSpec("chimera-tiny", str(path)))


def test_every_supported_architecture_builds_with_random_weights():
    seg = load_segmenter("chimera:tiny/chimera-tiny/random", device="cpu", precision="fp32")
    assert seg.model.kind == "chimera-seg" and seg.model.output_stride == 16
    big = build_model("clip:ViT-B-16/random")
    assert big.encoder.visual.transformer.width == 768 and big.logit_scale > 1


def test_device_choice_reports_why():
    device, reason = resolve_device("auto")
    if not torch.cuda.is_available():
        assert device.type in ("cpu", "mps") and reason.startswith("auto")
    choice = choose("cpu", "auto")
    assert choice.dtype in (torch.float32, torch.bfloat16) and "bf16" in choice.reason
    assert choose("cpu", "fp32").dtype == torch.float32
    with pytest.raises(ValueError):
        choose("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")


def test_download_progress_reaches_the_callback():
    from chimera_engine.clip_loading import _progress_tqdm

    seen = []
    bar_class = _progress_tqdm(lambda done, total: seen.append((done, total)))
    with bar_class(total=100, disable=True) as bar:
        bar.update(40)
        bar.update(60)
    assert seen == [(40, 100), (100, 100)]
