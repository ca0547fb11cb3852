"""Chimera-Seg: the CLIP Semantic Head is the tail of the CLIP encoder; shapes; what trains."""

import copy

import pytest
import torch

from chimera_engine import vit_ops
from chimera_engine.chimera.head import CLIPSemanticHead
from chimera_engine.chimera.model import ChimeraConfig, ChimeraSeg, preset
from chimera_engine.errors import ModelNameError


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_csh_tail_equals_last_blocks_of_full_encoder(tiny_clip, depth):
    visual = tiny_clip.visual
    images = torch.randn(2, 3, 224, 224)
    head = CLIPSemanticHead(visual, in_channels=8, depth=depth)
    blocks = visual.transformer.resblocks
    with torch.no_grad():
        x, _ = vit_ops.embed_patches(visual, images)
        middle = vit_ops.run_blocks(blocks[:len(blocks) - depth], x)
        tail = head.forward_tokens(middle)
        expected_pooled = tiny_clip.encode_image(images)
    torch.testing.assert_close(tail[:, 0], expected_pooled, rtol=1e-5, atol=1e-5)


def _model(tiny_clip, **overrides):
    cfg = ChimeraConfig(body=preset("tiny"), clip="chimera-tiny/random", **overrides)
    return ChimeraSeg(cfg, copy.deepcopy(tiny_clip))


@pytest.mark.parametrize("size", [(224, 224), (100, 75), (64, 160)])
def test_output_is_unit_features_on_clip_patch_grid(tiny_clip, size):
    model = _model(tiny_clip).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, tiny_clip.visual.output_dim, size[0] // 16, size[1] // 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, size[0] // 16, size[1] // 16))


def test_only_body_and_adapter_train_and_frozen_clip_stays_in_eval(tiny_clip):
    model = _model(tiny_clip).train()
    assert not model.head.clip.training and model.body.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("body.", "head.adapter")) for n in trainable)
    out = model(torch.randn(2, 3, 96, 96))
    text = torch.nn.functional.normalize(torch.randn(3, out.shape[1]), dim=1)
    loss = torch.nn.functional.cross_entropy(model.logits(out, text), torch.randint(0, 3, (2, 6, 6)))
    loss.backward()
    assert model.head.adapter.weight.grad is not None
    assert next(model.body.backbone.parameters()).grad is not None
    assert all(p.grad is None for p in model.head.clip.parameters())


def test_logits_are_cosine_over_tau(tiny_clip):
    model = _model(tiny_clip, tau=0.05)
    feats = torch.nn.functional.normalize(torch.randn(1, 64, 2, 2), dim=1)
    text = torch.nn.functional.normalize(torch.randn(3, 64), dim=1)
    expected = torch.einsum("bchw,kc->bkhw", feats, text) / 0.05
    torch.testing.assert_close(model.logits(feats, text), expected)


def test_linear_head_ablation_and_config_round_trip(tiny_clip):
    model = _model(tiny_clip, head="linear").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 64, 4, 4)
    cfg = ChimeraConfig(body=preset("tiny"), clip="chimera-tiny/random", csh_depth=3, seen_classes=["a"])
    assert ChimeraConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ChimeraConfig.from_dict({"depth": 3})
    with pytest.raises(ValueError):
        ChimeraConfig(head="mlp")
    with pytest.raises(ValueError, match="depth"):
        _model(tiny_clip, csh_depth=9)
    with pytest.raises(ModelNameError):
        preset("r999")
