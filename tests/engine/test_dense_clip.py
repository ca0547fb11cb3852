"""Dense CLIP features against open_clip's own forward pass."""

import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import resize_pos_embed

from chimera_engine import last_block, vit_ops
from chimera_engine.dense_clip import DenseCLIP


def _images(size, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g)


def test_stock_dense_tokens_match_open_clip_at_native_size(tiny_clip):
    images = _images((224, 224))
    dense = DenseCLIP(tiny_clip.visual, "stock")
    with torch.no_grad():
        tokens, grid = dense.forward_tokens(images)
        expected_pooled = tiny_clip.encode_image(images)
        visual = copy.deepcopy(tiny_clip.visual)
        visual.output_tokens = True
        _, expected_tokens = visual(images)  # ln_post'ed patch tokens, not yet projected
    assert grid == (14, 14)
    torch.testing.assert_close(tokens[:, 0], expected_pooled, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens[:, 1:], expected_tokens @ tiny_clip.visual.proj, rtol=1e-5, atol=1e-5)
    fmap = dense(images)
    assert fmap.shape == (2, tiny_clip.visual.output_dim, 14, 14)
    torch.testing.assert_close(fmap.norm(dim=1), torch.ones(2, 14, 14))


def test_maskclip_block_equals_identity_attention_mask(tiny_clip):
    block = tiny_clip.visual.transformer.resblocks[-1]
    x = torch.randn(2, 17, tiny_clip.visual.transformer.width)
    mask = torch.full((17, 17), float("-inf"))
    mask.fill_diagonal_(0)
    with torch.no_grad():
        torch.testing.assert_close(last_block.maskclip(block, x, (4, 4)), block(x, attn_mask=mask),
                                   rtol=1e-5, atol=1e-5)
        assert not torch.allclose(block(x), block(x, attn_mask=mask), atol=1e-3)  # the mask matters


def test_pos_embed_interpolation_matches_open_clip_state_dict_resize(tiny_clip):
    pos = tiny_clip.visual.positional_embedding.detach()
    assert vit_ops.interpolate_pos_embed(pos, (14, 14)) is pos  # native size: untouched
    big = open_clip.create_model("chimera-tiny", force_image_size=(320, 256))
    state = {"visual.positional_embedding": pos.clone()}
    resize_pos_embed(state, big)
    ours = vit_ops.interpolate_pos_embed(pos, (20, 16))
    torch.testing.assert_close(ours, state["visual.positional_embedding"])
    assert ours.shape == (1 + 20 * 16, pos.shape[1])


def test_dense_features_at_other_sizes_equal_a_model_built_for_that_size(tiny_clip):
    """Run-time interpolation == open_clip's own model created at that size with resized weights."""
    big = open_clip.create_model("chimera-tiny", force_image_size=(320, 256)).eval()
    state = {f"visual.{k}": v for k, v in tiny_clip.visual.state_dict().items()}
    resize_pos_embed(state, big)
    big.visual.load_state_dict({k[7:]: v for k, v in state.items()})
    images = _images((320, 256))
    with torch.no_grad():
        ours = DenseCLIP(tiny_clip.visual, "stock").forward_tokens(images)[0]
        pooled = big.encode_image(images)
    torch.testing.assert_close(ours[:, 0], pooled, rtol=1e-4, atol=1e-5)


def test_maskclip_differs_from_stock_and_crops_partial_patches(tiny_clip):
    images = _images((100, 70))
    with torch.no_grad():
        value = DenseCLIP(tiny_clip.visual, "maskclip")(images)
        stock = DenseCLIP(tiny_clip.visual, "stock")(images)
    assert value.shape == stock.shape == (2, tiny_clip.visual.output_dim, 6, 4)  # 100//16, 70//16
    assert not torch.allclose(value, stock)


def test_dense_clip_is_frozen_and_rejects_unknown_method(tiny_clip):
    with pytest.raises(ValueError):
        DenseCLIP(tiny_clip.visual, "fancy")
    dense = DenseCLIP(copy.deepcopy(tiny_clip.visual))
    assert not any(p.requires_grad for p in dense.parameters())


def test_bf16_features_close_to_fp32(tiny_clip):
    images = _images((224, 224), batch=1)
    dense = DenseCLIP(copy.deepcopy(tiny_clip.visual))
    with torch.no_grad():
        fp32 = dense(images)
        bf16 = dense.to(torch.bfloat16)(images.to(torch.bfloat16))
    assert F.cosine_similarity(fp32, bf16.float(), dim=1).min() > 0.97
