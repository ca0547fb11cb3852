"""Each training-free method against a plain transcription of its authors' formulation.

The transcriptions below are deliberately naive: explicit q, k, v projections, explicit heads, an
explicit softmax over an explicit score matrix, and the Gaussian prior built with Python loops. The
engine's versions use fused attention and a vectorised prior; both must give the same dense features
and the same labels at a native (224²) and a non-native (160 x 96) input size, fp32, to 1e-5.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from chimera_engine import last_block, vit_ops
from chimera_engine.dense_clip import DenseCLIP
from chimera_engine.neighbourhood import gaussian_prior


def _explicit_prior(gh: int, gw: int, std: float) -> torch.Tensor:
    n = gh * gw
    prior = torch.zeros(1 + n, 1 + n)
    for i in range(n):
        for j in range(n):
            dy, dx = i // gw - j // gw, i % gw - j % gw
            prior[1 + i, 1 + j] = math.exp(-(dy * dy + dx * dx) / (2 * std * std))
    return prior


def _reference_tokens(visual, images: torch.Tensor, method: str) -> torch.Tensor:
    """Patch features in CLIP space, unit length, ``B x N x C``, as the papers write the last block."""
    x, (gh, gw) = vit_ops.embed_patches(visual, images)  # checked against open_clip in test_dense_clip
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        x = blk(x)  # open_clip's own forward for every block but the last
    blk = blocks[-1]
    b, length, width = x.shape
    heads = blk.attn.num_heads
    d = width // heads
    y = blk.ln_1(x)
    w, bias = blk.attn.in_proj_weight, blk.attn.in_proj_bias
    q = y @ w[:width].T + bias[:width]
    k = y @ w[width:2 * width].T + bias[width:2 * width]
    v = y @ w[2 * width:].T + bias[2 * width:]
    q, k, v = (t.reshape(b, length, heads, d).permute(0, 2, 1, 3) for t in (q, k, v))  # B x H x L x d
    scale = 1.0 / math.sqrt(d)

    def attend(weights):  # B x H x L x L attention weights → out_proj(weights @ v), B x L x W
        out = (weights @ v).permute(0, 2, 1, 3).reshape(b, length, width)
        return out @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias

    if method == "maskclip":  # each token attends to itself only
        x = x + attend(torch.eye(length).expand(b, heads, length, length))
        x = x + blk.mlp(blk.ln_2(x))
    elif method == "sclip":  # correlative self-attention; residual and FFN kept
        weights = torch.softmax(q @ q.transpose(-1, -2) * scale, -1) + torch.softmax(k @ k.transpose(-1, -2) * scale, -1)
        x = x + attend(weights)
        x = x + blk.mlp(blk.ln_2(x))
    elif method == "clearclip":  # q-q attention; no residual, no FFN
        x = attend(torch.softmax(q @ q.transpose(-1, -2) * scale, -1))
    elif method == "naclip":  # k-k attention plus the Gaussian neighbourhood (std 5); no residual, no FFN
        x = attend(torch.softmax(k @ k.transpose(-1, -2) * scale + _explicit_prior(gh, gw, 5.0), -1))
    else:
        raise AssertionError(method)
    tokens = visual.ln_post(x) @ visual.proj
    return F.normalize(tokens[:, 1:], dim=-1)


@pytest.mark.parametrize("method", ["naclip", "sclip", "clearclip", "maskclip"])
@pytest.mark.parametrize("size", [(224, 224), (160, 96)])
def test_method_equals_transcription_of_its_paper(tiny_clip, method, size):
    torch.manual_seed(3)
    images = torch.randn(2, 3, *size)
    text = F.normalize(torch.randn(5, tiny_clip.visual.output_dim), dim=-1)
    with torch.no_grad():
        ours = DenseCLIP(tiny_clip.visual, method)(images)  # B x C x gh x gw
        ref = _reference_tokens(tiny_clip.visual, images, method)
    gh, gw = size[0] // 16, size[1] // 16
    assert ours.shape == (2, tiny_clip.visual.output_dim, gh, gw)
    ours_tokens = ours.flatten(2).transpose(1, 2)
    torch.testing.assert_close(ours_tokens, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal((ours_tokens @ text.T).argmax(-1), (ref @ text.T).argmax(-1))  # same labels


def test_methods_give_different_features(tiny_clip):
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = {m: DenseCLIP(tiny_clip.visual, m)(images) for m in ("naclip", "sclip", "clearclip", "maskclip", "stock")}
    names = list(feats)
    for i, a in enumerate(names):
        for b_ in names[i + 1:]:
            assert not torch.allclose(feats[a], feats[b_], atol=1e-4), (a, b_)


def test_gaussian_prior_is_naclips_neighbourhood():
    prior = gaussian_prior((6, 9), std=5.0)
    assert prior.shape == (1 + 54, 1 + 54)
    torch.testing.assert_close(prior, _explicit_prior(6, 9, 5.0))
    assert torch.all(prior[0] == 0) and torch.all(prior[:, 0] == 0)  # class token: no prior
    assert torch.all(prior[1:, 1:].diagonal() == 1)  # peak 1 at the query patch itself
    # std: one std (5 patches) away the prior is exp(-1/2); patch (0,0) vs (0,5) and (3,4) (distance 5)
    assert prior[1, 1 + 5].item() == pytest.approx(math.exp(-0.5))
    assert prior[1, 1 + 3 * 9 + 4].item() == pytest.approx(math.exp(-0.5))
    # centre: the row of a patch peaks at that patch and is symmetric around it
    row = prior[1 + 2 * 9 + 4, 1:].reshape(6, 9)
    assert divmod(int(row.argmax()), 9) == (2, 4)
    torch.testing.assert_close(row[2, 4 - 3], row[2, 4 + 3])
    with pytest.raises(ValueError):
        gaussian_prior((3, 3), std=0)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_block_forward_equals_open_clip_for_any_batch(tiny_clip, batch):
    blocks = tiny_clip.visual.transformer.resblocks
    x = torch.randn(batch, 50, tiny_clip.visual.transformer.width)
    with torch.no_grad():
        ours, stock = x, x
        for blk in blocks:
            ours, stock = vit_ops.block_forward(blk, ours), blk(stock)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


def test_block_forward_bf16_close_to_open_clip_bf16(tiny_clip):
    import copy

    blk = copy.deepcopy(tiny_clip.visual.transformer.resblocks[0]).to(torch.bfloat16)
    x = torch.randn(2, 50, tiny_clip.visual.transformer.width).to(torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(vit_ops.block_forward(blk, x).float(), blk(x).float(), rtol=2e-2, atol=3e-2)


def test_method_defaults_are_the_authors():
    m = last_block.METHODS
    assert m["naclip"].geometry(224) == {"short_side": 336, "window": 224, "stride": 112}  # ViT-B/16
    assert m["naclip"].geometry(64) == {"short_side": 96, "window": 64, "stride": 32}  # the shapes CLIP
    assert m["clearclip"].geometry(224) == {"short_side": 448, "window": 448, "stride": 224}
    assert m["maskclip"].geometry(224) is None  # keeps PAPER.md's 512 / 426
    assert (m["naclip"].logit_scale, m["sclip"].logit_scale, m["clearclip"].logit_scale) == (40, 40, 50)
    assert m["sclip"].templates == m["naclip"].templates == "openai80"


def test_model_names_carry_the_method_and_its_settings(tmp_path):
    from chimera_engine.models import build_model, load_model, save_model

    model = build_model("clip:ViT-B-16/random+clearclip")
    assert model.encoder.method == "clearclip" and model.logit_scale == 50 and model.templates == "openai80"
    assert (model.inference.short_side, model.inference.window, model.inference.stride) == (448, 448, 224)
    assert build_model("clip:ViT-B-16/random").encoder.method == "naclip"  # the default
    maskclip = build_model("clip:ViT-B-16/random+maskclip")
    assert (maskclip.inference.short_side, maskclip.inference.window, maskclip.templates) == (512, 512, "zegclip15")
    small = build_model("clip:chimera-tiny/random+sclip")
    path = save_model(small, tmp_path / "m.safetensors")
    assert load_model(path).encoder.method == "sclip"  # recorded in the checkpoint


def test_bundled_shapes_clip_takes_a_method_and_keeps_its_prompts():
    from chimera_engine.models import build_model

    plain, maskclip = build_model("shapes-clip"), build_model("shapes-clip+maskclip")
    assert plain.encoder.method == "naclip"  # the bundle records the default method
    assert maskclip.encoder.method == "maskclip" and maskclip.name == "shapes-clip+maskclip"
    assert (maskclip.templates, maskclip.logit_scale) == (plain.templates, plain.logit_scale)
    assert maskclip.background == plain.background == ["background"]  # the model's own prompt stays
    assert (plain.inference.short_side, plain.inference.window, plain.inference.stride) == (64, 64, 48)  # as trained
