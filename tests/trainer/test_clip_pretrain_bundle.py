"""The shapes CLIP pre-training and the bundled-model recipe, on tiny schedules."""

import json

import numpy as np
import torch

from engine import load_segmenter
from engine.checkpoints import read_metadata
from trainer.clip_pretrain import CaptionedShapes, contrastive_loss, pretrain, report_path
from trainer.shapes import SHAPE_CLASSES


def test_contrastive_loss_prefers_matching_pairs():
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(3.0)
    assert contrastive_loss(x, x, scale) < contrastive_loss(x, x.roll(1, 0), scale)


def test_captioned_pairs_cover_every_class():
    import open_clip

    data = CaptionedShapes(0, 64, 400, open_clip.get_tokenizer("ViT-B-16"), 32, (0.5,) * 3, (0.25,) * 3)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    ids = {c: tokenizer([c])[0][1].item() for c in SHAPE_CLASSES}
    seen = set()
    for i in range(len(data)):
        image, tokens = data[i]
        assert image.shape == (3, 64, 64) and tokens.shape == (32,)
        seen |= {c for c, t in ids.items() if t in tokens.tolist()}
    assert seen == set(SHAPE_CLASSES)  # unseen shapes' names are in the CLIP's captions too


def test_pretrain_writes_loadable_weights_and_report(tmp_path):
    out = tmp_path / "clip.safetensors"
    report = pretrain(out, steps=3, batch_size=16, workers=0, log=lambda r: None)
    assert set(report["per_class"]) == set(SHAPE_CLASSES) and 0 <= report["accuracy"] <= 1
    assert json.loads(report_path(out).read_text())["steps"] == 3
    seg = load_segmenter(f"clip:shapes-tiny/{out}", device="cpu", precision="fp32")
    seg.set_image(np.zeros((64, 64, 3), np.uint8))
    assert seg.segment(["circle", "star"]).labels.shape == (64, 64)


def test_bundle_quick_builds_two_self_contained_models(tmp_path):
    from trainer.bundle import build_bundled_models

    report = build_bundled_models(tmp_path / "models", tmp_path / "work", quick=True)
    files = report["files"]
    assert set(files) == {"shapes-clip.safetensors", "shapes-chimera.safetensors"}
    assert sum(files.values()) < 15 * 2 ** 20
    for name in files:
        meta = read_metadata(tmp_path / "models" / name)
        assert meta["clip"]["embedded"] and "evaluation" in meta["info"]
        seg = load_segmenter(str(tmp_path / "models" / name), device="cpu", precision="fp32")
        seg.set_image(np.zeros((80, 100, 3), np.uint8))
        assert seg.segment(list(SHAPE_CLASSES)).labels.shape == (80, 100)
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU"):
        assert 0 <= report["shapes_chimera_eval"][key] <= 1
