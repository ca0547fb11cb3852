import json
import math

import pytest
import torch

from chimera_engine.chimera.body import BodyConfig, DeepLabV3PlusBody


def small_cfg(**kw) -> BodyConfig:
    base = dict(backbone="resnet18", output_stride=16, aspp_channels=32,
                low_level_channels=16, decoder_channels=32)
    base.update(kw)
    return BodyConfig(**base)


@pytest.fixture(scope="module")
def body16() -> DeepLabV3PlusBody:
    torch.manual_seed(0)
    return DeepLabV3PlusBody(small_cfg()).eval()


@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (64, 64), (100, 75), (130, 97), (512, 683)])
def test_output_shape_odd_sizes(body16, hw):
    h, w = hw
    with torch.no_grad():
        y = body16(torch.randn(1, 3, h, w))
    assert y.shape == (1, body16.out_channels, math.ceil(h / 4), math.ceil(w / 4))
    assert body16.out_channels == 32 and body16.reduction == 4
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("hw", [(33, 47), (100, 75)])
def test_os8_and_os16_same_output_shape(body16, hw):
    body8 = DeepLabV3PlusBody(small_cfg(output_stride=8)).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        assert body8(x).shape == body16(x).shape


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_backbone_deepest_feature_has_configured_stride(os_):
    body = DeepLabV3PlusBody(small_cfg(output_stride=os_)).eval()
    with torch.no_grad():
        feats = body.backbone(torch.randn(1, 3, 64, 96))
    assert len(feats) == 2  # only the stride-4 and deepest features are produced
    assert feats[0].shape[-2:] == (16, 24)
    assert feats[-1].shape[-2:] == (64 // os_, 96 // os_)
    assert body.backbone.feature_info.reduction() == [4, os_]


@pytest.mark.parametrize("os_", [8, 16])
def test_truncated_backbone_ends_at_the_stride_and_drops_deeper_stages(os_):
    full = DeepLabV3PlusBody(small_cfg(output_stride=os_))
    cut = DeepLabV3PlusBody(small_cfg(output_stride=os_, truncate=True)).eval()
    names = {n.split(".")[1] for n, _ in cut.named_parameters() if n.startswith("backbone.")}
    deepest = {8: "layer2", 16: "layer3"}[os_]
    assert deepest in names and "layer4" not in names
    assert not any(m.dilation != (1, 1) for m in cut.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters()) / 2
    with torch.no_grad():
        feats = cut.backbone(torch.randn(1, 3, 64, 96))
        assert cut(torch.randn(1, 3, 33, 47)).shape == (1, 32, 9, 12)
    assert [f.shape[-2:] for f in feats] == [(16, 24), (64 // os_, 96 // os_)]
    assert BodyConfig.from_dict(cut.cfg.to_dict()) == cut.cfg


def test_default_aspp_rates():
    assert BodyConfig(output_stride=8).rates == (12, 24, 36)
    assert BodyConfig(output_stride=16).rates == (6, 12, 18)
    assert BodyConfig(output_stride=32).rates == (3, 6, 9)
    assert BodyConfig(aspp_rates=[1, 2, 3]).rates == (1, 2, 3)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_batch_size_one_train_mode_and_gradients(norm):
    body = DeepLabV3PlusBody(small_cfg(norm=norm)).train()
    y = body(torch.randn(1, 3, 33, 47))
    assert y.shape == (1, 32, 9, 12)
    y.square().mean().backward()
    for prefix in ("backbone.", "aspp.", "decoder."):
        grads = [p.grad for n, p in body.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None for g in grads), prefix
        assert any(g.abs().sum() > 0 for g in grads), prefix
    # every parameter belongs to exactly one optimiser group
    names = [n for n, _ in body.named_parameters()]
    assert all(n.split(".")[0] in ("backbone", "aspp", "decoder") for n in names)


def test_group_norm_variant():
    body = DeepLabV3PlusBody(small_cfg(norm="group", aspp_channels=24, low_level_channels=12))
    gns = [m for m in body.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert gns and all(m.num_channels % m.num_groups == 0 and m.num_groups <= 32 for m in gns)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in list(body.aspp.modules()) + list(body.decoder.modules()))
    with torch.no_grad():
        assert body.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 32, 16, 16)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_bf16_close_to_fp32(norm):
    torch.manual_seed(0)
    body = DeepLabV3PlusBody(small_cfg(norm=norm)).eval()
    x = torch.randn(1, 3, 66, 70)
    with torch.no_grad():
        y32 = body(x)
        y16 = body.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and y16.shape == y32.shape
    err = (y16.float() - y32).norm() / y32.norm()
    assert err < 0.1, err


def test_config_round_trip():
    cfg = BodyConfig(backbone="convnext_tiny", output_stride=16, aspp_rates=(2, 4, 6), norm="group")
    back = BodyConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.aspp_rates, tuple)
    assert BodyConfig.from_dict(json.loads(json.dumps(BodyConfig().to_dict()))) == BodyConfig()


def test_config_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="bogus"):
        BodyConfig.from_dict({**BodyConfig().to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        BodyConfig(output_stride=4)
    with pytest.raises(ValueError):
        BodyConfig(norm="layer")


@pytest.mark.parametrize("name", ["resnet101", "convnext_tiny"])
def test_large_backbones_construct_at_os8(name):
    body = DeepLabV3PlusBody(BodyConfig(backbone=name, output_stride=8))
    assert body.backbone.feature_info.reduction() == [4, 8]
    assert body.out_channels == 256


def test_unsupported_output_stride_raises():
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3PlusBody(BodyConfig(backbone="densenet121", output_stride=16))
    with pytest.raises(ValueError, match="stride-4"):
        DeepLabV3PlusBody(BodyConfig(backbone="vit_tiny_patch16_224", output_stride=32))
