"""The engine contract: set_image once, segment for any class list; tiling and scoring."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chimera_engine import scoring, tiling
from chimera_engine.errors import ClassNameError
from chimera_engine.scoring import ScoringRule, label_maps


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 30, 30)
    img[h // 2:] = (20, 160, 40)
    return np.clip(img + rng.integers(0, 40, img.shape), 0, 255).astype(np.uint8)


def test_contract_shapes_and_dtypes(tiny_segmenter):
    rgb = _image(300, 451)
    tiny_segmenter.set_image(rgb)
    out = tiny_segmenter.segment(["circle", "star; pentagram", "square"])
    assert out.labels.shape == out.confidence.shape == (300, 451)
    assert out.labels.dtype == np.int32 and out.confidence.dtype == np.float32
    assert out.labels.min() >= 0 and out.labels.max() <= 2  # min_confidence 0: every pixel labeled
    assert 1 / 3 - 1e-6 <= out.confidence.min() and out.confidence.max() <= 1
    assert out.classes == ("circle", "star; pentagram", "square")


def test_features_are_cached_per_image_content(tiny_segmenter):
    a, b = _image(200, 300, 1), _image(200, 300, 2)
    key_a = tiny_segmenter.set_image(a)
    first = tiny_segmenter.segment(["x", "y"]).labels
    tiny_segmenter.set_image(b)
    tiny_segmenter.set_image(a.copy())  # same pixels, new array: cache hit
    assert tiny_segmenter.images_encoded == 2
    assert tiny_segmenter.set_image(a) == key_a
    np.testing.assert_array_equal(tiny_segmenter.segment(["x", "y"]).labels, first)
    tiny_segmenter.segment(["x", "y", "z"])
    assert tiny_segmenter.images_encoded == 2  # a new class re-runs only text + scoring
    assert tiny_segmenter.text.phrases_encoded == 3


def test_cache_is_lru_bounded(tiny_segmenter):
    tiny_segmenter.cache_images = 2
    for seed in range(3):
        tiny_segmenter.set_image(_image(64, 64, seed))
    tiny_segmenter.set_image(_image(64, 64, 0))  # evicted: encoded again
    assert tiny_segmenter.images_encoded == 4


def test_unlabeled_rules(tiny_segmenter):
    tiny_segmenter.set_image(_image(128, 160))
    base = tiny_segmenter.segment(["red thing", "green thing"])
    strict = tiny_segmenter.segment(["red thing", "green thing"], min_confidence=0.99)
    assert (strict.labels == -1).any()
    keep = strict.labels >= 0
    np.testing.assert_array_equal(strict.labels[keep], base.labels[keep])
    np.testing.assert_array_equal(strict.labels == -1, base.confidence < 0.99)
    with_bg = tiny_segmenter.segment(["red thing"], background=["green thing"])
    np.testing.assert_array_equal(with_bg.labels == -1, base.labels == 1)
    with pytest.raises(ClassNameError):
        tiny_segmenter.segment(["sky"], background=["sky"])
    with pytest.raises(ClassNameError):
        tiny_segmenter.segment([])


def test_calibration_moves_pixels_away_from_seen_classes(tiny_segmenter):
    tiny_segmenter.model.seen_classes = ["red thing"]
    tiny_segmenter.set_image(_image(128, 160))
    plain = tiny_segmenter.segment(["red thing", "green thing"])
    calibrated = tiny_segmenter.segment(["red thing", "green thing"], calibration=0.5)
    assert (calibrated.labels == 0).sum() <= (plain.labels == 0).sum()
    assert (calibrated.labels == 1).sum() > (plain.labels == 1).sum() or (plain.labels == 1).all()


def test_bad_image_arrays_are_refused(tiny_segmenter):
    with pytest.raises(TypeError):
        tiny_segmenter.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(TypeError):
        tiny_segmenter.set_image(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(RuntimeError, match="set_image"):
        tiny_segmenter.segment(["a"])


def test_batched_encode_equals_one_by_one(tiny_segmenter):
    images = [_image(120, 200, s) for s in range(3)]
    tiny_segmenter.batch_size = 5
    together = tiny_segmenter.encode(images)
    for rgb, feats in zip(images, together):
        alone = tiny_segmenter.encode([rgb])[0]
        torch.testing.assert_close(feats.features, alone.features, rtol=1e-4, atol=1e-5)


def test_sliding_windows_average_equals_averaged_window_logits(tiny_segmenter):
    """Scoring the averaged features == averaging each window's logits (sliding-window inference)."""
    model = tiny_segmenter.model
    model.inference = tiling.InferenceConfig(short_side=96, window=64, stride=40)
    rgb = _image(96, 200)
    feats = tiny_segmenter.encode([rgb])[0].features  # 64 x 6 x 12 grid
    text = tiny_segmenter.text.encode(["a", "b", "c"])
    size = tiling.encode_size(96, 200, model.inference, 16)
    x = tiling.to_tensor(tiling.resize_for_encoding(rgb, size), model.mean, model.std)
    total = torch.zeros(3, size[0] // 16, size[1] // 16)
    count = torch.zeros(1, *total.shape[1:])
    wins = tiling.windows(*size, model.inference, 16)
    assert len(wins) > 1
    with torch.no_grad():
        for y, x0, h, w in wins:
            f = model.encoder(x[None, :, y:y + h, x0:x0 + w])[0]
            total[:, y // 16:(y + h) // 16, x0 // 16:(x0 + w) // 16] += torch.einsum("chw,kc->khw", f, text)
            count[:, y // 16:(y + h) // 16, x0 // 16:(x0 + w) // 16] += 1
    torch.testing.assert_close(torch.einsum("chw,kc->khw", feats, text), total / count, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length, window, stride", [(512, 512, 426), (688, 512, 426), (2000, 512, 426),
                                                    (96, 64, 40), (48, 512, 426)])
def test_window_origins_cover_and_align(length, window, stride):
    origins = tiling.window_origins(length, min(window, length), stride, 16)
    covered = np.zeros(length, bool)
    for o in origins:
        assert o % 16 == 0 and o + min(window, length) <= length
        covered[o:o + min(window, length)] = True
    assert covered.all()


def test_encode_size_keeps_aspect_and_snaps_to_stride():
    cfg = tiling.InferenceConfig()
    assert tiling.encode_size(768, 1024, cfg, 16) == (512, 688)
    assert tiling.encode_size(6000, 8000, cfg, 16) == (512, 688)
    h, w = tiling.encode_size(100, 20000, cfg, 16)
    assert w <= cfg.max_long_side and h % 16 == 0 and w % 16 == 0


def test_scoring_equals_interpolate_then_softmax():
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(8, 5, 7), dim=0)
    text = F.normalize(torch.randn(4, 8), dim=1)
    labels, conf = label_maps(feats, text, (37, 61), ScoringRule(logit_scale=10.0))
    logits = F.interpolate(torch.einsum("chw,kc->khw", feats, text)[None] * 10, size=(37, 61),
                           mode="bilinear", align_corners=False)[0]
    prob = logits.softmax(0)
    np.testing.assert_array_equal(labels, prob.argmax(0).numpy())
    np.testing.assert_allclose(conf, prob.max(0).values.numpy(), rtol=1e-5, atol=1e-6)


def test_scoring_in_bands_equals_one_pass(monkeypatch):
    torch.manual_seed(1)
    feats = F.normalize(torch.randn(8, 6, 9), dim=0)
    text = F.normalize(torch.randn(3, 8), dim=1)
    rule = ScoringRule(logit_scale=20.0, min_confidence=0.5)
    whole = label_maps(feats, text, (250, 333), rule)
    monkeypatch.setattr(scoring, "BAND_ELEMENTS", 3 * 333 * 7)  # 7 rows per band
    banded = label_maps(feats, text, (250, 333), rule)
    np.testing.assert_array_equal(whole[0], banded[0])
    np.testing.assert_allclose(whole[1], banded[1], rtol=1e-6, atol=1e-6)  # SIMD rounding only


def test_inference_never_runs_nn_multihead_attention(tiny_segmenter, monkeypatch):
    # The engine owns its block forward (vit_ops): nn.MultiheadAttention's batch-second layout is a
    # CPU slow path, so neither the image tower nor the text tower may go through it.
    calls = []
    original = torch.nn.MultiheadAttention.forward
    monkeypatch.setattr(torch.nn.MultiheadAttention, "forward",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    tiny_segmenter.set_image(_image(64, 96))
    out = tiny_segmenter.segment(["a never seen phrase", "another new one"])
    assert out.labels.shape == (64, 96)
    assert calls == []

def test_scoring_at_an_output_size_equals_interpolating_to_it():
    torch.manual_seed(2)
    feats = F.normalize(torch.randn(8, 5, 7), dim=0)
    text = F.normalize(torch.randn(3, 8), dim=1)
    rule = ScoringRule(logit_scale=10.0)
    labels, conf = label_maps(feats, text, (370, 610), rule, output_size=(37, 61))
    assert labels.shape == conf.shape == (37, 61)
    logits = F.interpolate(torch.einsum("chw,kc->khw", feats, text)[None] * 10, size=(37, 61),
                           mode="bilinear", align_corners=False)[0]
    prob = logits.softmax(0)
    np.testing.assert_array_equal(labels, prob.argmax(0).numpy())
    np.testing.assert_allclose(conf, prob.max(0).values.numpy(), rtol=1e-5, atol=1e-6)
    full = label_maps(feats, text, (37, 61), rule)  # output_size == size: the same as leaving it out
    np.testing.assert_array_equal(label_maps(feats, text, (37, 61), rule, output_size=(37, 61))[0], full[0])
    with pytest.raises(ValueError):
        label_maps(feats, text, (37, 61), rule, output_size=(0, 10))


def test_segment_at_display_size_is_the_full_map_at_lower_resolution(tiny_segmenter):
    key = tiny_segmenter.set_image(_image(192, 256))
    assert tiny_segmenter.is_cached(key) and not tiny_segmenter.is_cached("other")
    full = tiny_segmenter.segment(["red thing", "green thing"])
    small = tiny_segmenter.segment(["red thing", "green thing"], output_size=(96, 128))
    assert small.labels.shape == small.confidence.shape == (96, 128) and full.labels.shape == (192, 256)
    # same scores, sampled at the centres of 2x2 blocks: agree except at (rare) boundary pixels
    assert (small.labels == full.labels[::2, ::2]).mean() > 0.95


def test_quick_text_embeds_only_new_names_with_one_template(tiny_segmenter):
    seg = tiny_segmenter
    seg.set_image(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    full = seg.segment(["road", "car"])
    assert len(seg.text.templates) > 1 and len(seg.quick_text.templates) == 1
    quick = seg.segment(["road", "car", "bicycle"], quick_text=True)
    assert seg.text.has("road") and not seg.text.has("bicycle")  # the preview left the ensemble cache alone
    assert seg.quick_text.has("bicycle") and not seg.quick_text.has("road")  # cached names: full ensemble
    exact = seg.segment(["road", "car", "bicycle"])
    assert seg.text.has("bicycle")
    assert not np.array_equal(quick.confidence, exact.confidence)  # one template is not the ensemble
    same = seg.segment(["road", "car"], quick_text=True)  # nothing new: identical to the full answer
    assert np.array_equal(same.labels, full.labels) and np.array_equal(same.confidence, full.confidence)


def test_cpu_fp32_stores_dense_clip_weights_in_fp16_and_computes_in_fp32():
    from chimera_engine import load_segmenter

    rgb = _image(64, 96)
    torch.manual_seed(0)
    full = load_segmenter("clip:chimera-tiny/random", device="cpu", precision="fp32", weight_storage="full")
    torch.manual_seed(0)
    half = load_segmenter("clip:chimera-tiny/random", device="cpu", precision="fp32")
    assert full.model.encoder.visual.conv1.weight.dtype == torch.float32
    assert half.model.encoder.visual.conv1.weight.dtype == torch.float16
    assert half.model.clip.token_embedding.weight.dtype == torch.float16
    assert half.model.clip.ln_final.weight.dtype == torch.float32  # only what our own forward reads
    full_bytes = sum(p.numel() * p.element_size() for p in full.model.encoder.parameters())
    half_bytes = sum(p.numel() * p.element_size() for p in half.model.encoder.parameters())
    assert half_bytes == full_bytes // 2
    full.set_image(rgb)
    half.set_image(rgb)
    assert half.features().features.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(full.features().features, half.features().features, dim=0)
    assert cos.min() > 0.999
    torch.testing.assert_close(half.text.encode(["circle"]), full.text.encode(["circle"]), rtol=0, atol=2e-3)
    with pytest.raises(ValueError):
        load_segmenter("clip:chimera-tiny/random", device="cpu", weight_storage="tiny")
