"""PAMR against a pixel-by-pixel transcription of its formulation; the area rule; background words."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chimera_engine import pamr
from chimera_engine.background import background_prompts
from chimera_engine.scoring import ScoringRule, label_maps


def _reference_pamr(image: np.ndarray, scores: np.ndarray, steps: int, dilations) -> np.ndarray:
    """Araslanov & Roth's PAMR written per pixel: replicate borders = clamped coordinates."""
    c, h, w = image.shape
    ring = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    offsets = [(dy * d, dx * d) for d in dilations for dy, dx in ring]

    def at(a, y, x):
        return a[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    weights = np.zeros((len(offsets), h, w))
    for y in range(h):
        for x in range(w):
            window = [image[:, y, x]] * len(dilations) + [at(image, y + dy, x + dx) for dy, dx in offsets]
            std = np.std(np.stack(window), axis=0, ddof=1)  # per colour channel
            aff = np.array([np.mean(-np.abs(image[:, y, x] - at(image, y + dy, x + dx)) / (1e-8 + 0.1 * std))
                            for dy, dx in offsets])
            e = np.exp(aff - aff.max())
            weights[:, y, x] = e / e.sum()
    for _ in range(steps):
        new = np.zeros_like(scores)
        for y in range(h):
            for x in range(w):
                new[:, y, x] = sum(weights[p, y, x] * at(scores, y + dy, x + dx) for p, (dy, dx) in enumerate(offsets))
        scores = new
    return scores


def test_pamr_equals_its_transcription():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (3, 11, 9))
    scores = rng.normal(size=(4, 11, 9))
    ours = pamr.refine(torch.tensor(image, dtype=torch.float64), torch.tensor(scores), steps=3, dilations=(1, 2))
    np.testing.assert_allclose(ours.numpy(), _reference_pamr(image, scores, 3, (1, 2)), rtol=1e-5, atol=1e-7)


def test_pamr_moves_a_blurry_boundary_onto_the_image_edge():
    h, w, edge = 48, 64, 40  # dark left of column 40, bright right of it
    image = torch.zeros(3, h, w)
    image[:, :, edge:] = 200
    image += torch.randn(3, h, w, generator=torch.Generator().manual_seed(1)) * 3
    x = torch.arange(w, dtype=torch.float32)
    right = torch.tanh((x - 34.5) / 4)  # a coarse, upsampled prediction whose boundary is 5 px off
    scores = torch.stack([-right, right])[:, None, :].expand(2, h, w).clone()
    before = (scores.argmax(0) == 1).float().mean(0)  # share of "right" per column
    after = (pamr.refine(image, scores, steps=10, dilations=(2, 4)).argmax(0) == 1).float().mean(0)
    boundary_before = int((before > 0.5).float().argmax())
    boundary_after = int((after > 0.5).float().argmax())
    assert boundary_before == 35
    assert edge - 1 <= boundary_after <= edge + 1  # onto the edge (the dark side no longer supports it)


def test_segment_with_refinement_runs_at_the_scoring_resolution(tiny_segmenter):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)
    tiny_segmenter.set_image(rgb)
    plain = tiny_segmenter.segment(["circle", "star"])
    refined = tiny_segmenter.segment(["circle", "star"], refine=10)
    assert refined.labels.shape == plain.labels.shape == (70, 90)
    assert not np.array_equal(refined.confidence, plain.confidence)
    preview = tiny_segmenter.segment(["circle", "star"], refine=10, output_size=(20, 30))
    assert preview.labels.shape == (20, 30)


def test_area_rule_drops_small_classes_and_keeps_the_largest():
    feats = torch.zeros(3, 10, 10)
    feats[0] = 1.0
    feats[0, :1, :5], feats[1, :1, :5] = 0.0, 1.0  # 5 % of the grid prefers class 1
    feats = F.normalize(feats + 1e-3, dim=0)
    text = torch.eye(3)
    keep = label_maps(feats, text, (10, 10), ScoringRule(logit_scale=50.0))[0]
    assert (keep == 1).sum() == 5
    dropped = label_maps(feats, text, (10, 10), ScoringRule(logit_scale=50.0, min_area=0.1))[0]
    assert (dropped == 1).sum() == 0 and (dropped == 0).all()
    kept = label_maps(feats, text, (10, 10), ScoringRule(logit_scale=50.0, min_area=0.01))[0]
    assert (kept == 1).sum() == 5


def test_background_presets_and_lists():
    stuff = background_prompts("stuff")
    assert len(stuff) == 26 and stuff[:3] == ["sky", "wall", "tree"] and "fence" in stuff
    assert background_prompts(" sky ,  brick   wall,") == ["sky", "brick wall"]
    assert background_prompts("") == [] and background_prompts(None) == []
    assert "bed" not in background_prompts("stuff", ["cat", "Bed; cot"])  # a class owns its phrases


def test_background_words_leave_their_pixels_unlabeled(tiny_segmenter):
    rgb = np.random.default_rng(3).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    tiny_segmenter.set_image(rgb)
    out = tiny_segmenter.segment(["circle"], background=background_prompts("stuff"))
    assert out.labels.min() >= -1 and out.labels.max() <= 0
    assert (out.labels == -1).any()  # 26 random background prompts win somewhere against one class
