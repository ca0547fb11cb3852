"""The shapes CLIP pre-training and the bundled-model recipe, on tiny schedules."""

import json

import numpy as np
import pytest
import torch

from chimera_engine import load_segmenter
from chimera_engine.checkpoints import read_metadata
from chimera_engine.tiling import to_tensor
from chimera_trainer.clip_pretrain import SceneBank, caption_matches, contrastive_loss, pretrain, report_path
from chimera_trainer.shapes import SHAPE_CLASSES


def test_contrastive_loss_prefers_matching_pairs():
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(3.0)
    assert contrastive_loss(x, x, scale) < contrastive_loss(x, x.roll(1, 0), scale)


def test_contrastive_loss_stops_rewarding_telling_matching_pairs_apart():
    torch.manual_seed(0)
    apart = torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    alike = apart.clone()
    alike[1] = alike[0]  # pairs 0 and 1 embedded as one: images of the same thing, captioned alike
    scale = torch.tensor(3.0)
    matches = torch.eye(4, dtype=torch.bool)
    matches[0, 1] = matches[1, 0] = True
    # Plain CLIP loss pays for separating pairs 0 and 1; with their match declared it pays for merging.
    assert contrastive_loss(apart, apart, scale) < contrastive_loss(alike, alike, scale)
    assert contrastive_loss(alike, alike, scale, matches) < contrastive_loss(apart, apart, scale, matches)


def _counts(*pairs):
    from chimera_trainer.clip_pretrain import _pair_counts
    return _pair_counts(list(pairs))


def test_caption_matches_requires_the_same_shapes_and_true_colours():
    shown = torch.stack([_counts(("star", "red")), _counts(("star", "blue")),
                         _counts(("star", "red"), ("circle", "blue")), _counts(("star", "red"))])
    said = torch.stack([_counts(("star", "red")), _counts(), _counts(("circle", "blue")), _counts()])
    m = caption_matches(shown, said)
    assert m.diagonal().all()
    assert m[3, 0] and m[0, 3]  # "a red star" is true of the other red star; "a star" of any star
    assert not m[1, 0] and m[1, 3]  # "a red star" is false of a blue star; "a star" is true
    assert not m[2, 0] and not m[0, 2]  # a scene with one more shape never matches


def test_scene_bank_batches_cover_every_class_and_repeat_per_step():
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    bank = SceneBank(0, 64, 400, tokenizer, 32, (0.5,) * 3, (0.25,) * 3, workers=1)
    ids = {c: tokenizer([c])[0][1].item() for c in SHAPE_CLASSES}
    background = tokenizer(["background"])[0][1].item()
    seen, empty = set(), 0
    for step in range(8):
        images, tokens, shown, said = bank.batch(step, 64)
        assert images.shape == (64, 3, 64, 64) and tokens.shape == (64, 32)
        assert (said <= shown).all()
        no_shape = shown.flatten(1).sum(1) == 0  # background-only scenes, and only they, say "background"
        assert torch.equal((tokens == background).any(1), no_shape)
        empty += int(no_shape.sum())
        seen |= {c for c, t in ids.items() if (tokens == t).any()}
    assert seen == set(SHAPE_CLASSES)  # unseen shapes' names are in the CLIP's captions too
    assert 0.02 < empty / (8 * 64) < 0.2  # about 8 % of the scenes
    again = bank.batch(3, 64)
    assert torch.equal(again[0], bank.batch(3, 64)[0]) and torch.equal(again[1], bank.batch(3, 64)[1])
    assert not torch.equal(again[0], bank.batch(4, 64)[0])
    # Each image is a bank scene, as drawn or mirrored left-right, normalised.
    scenes = torch.stack([to_tensor(p, bank.mean, bank.std) for p in bank.images])
    for image in again[0][:8]:
        error = (scenes - image).abs().flatten(1).amax(1).min()
        mirrored = (scenes.flip(-1) - image).abs().flatten(1).amax(1).min()
        assert min(error, mirrored) < 1e-5


def test_pretraining_forward_equals_open_clips_with_its_gradients():
    import open_clip

    from chimera_engine.clip_loading import ClipSpec, create_clip, register_bundled_configs
    from chimera_trainer.clip_pretrain import encode_pairs

    register_bundled_configs()
    torch.manual_seed(0)
    model = create_clip(ClipSpec("shapes-tiny", "random")).train()
    bank = SceneBank(0, 64, 64, open_clip.get_tokenizer("shapes-tiny"), model.context_length,
                     open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, workers=1)
    images, tokens, _, _ = bank.batch(0, 24)
    grads, embeddings = [], []
    for encode in (lambda: (model.encode_image(images), model.encode_text(tokens)),
                   lambda: encode_pairs(model, images, tokens)):
        model.zero_grad(set_to_none=True)
        pair = encode()
        contrastive_loss(*pair, model.logit_scale).backward()
        embeddings.append(pair)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for ours, stock in zip(embeddings[1], embeddings[0]):
        torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name, stock in grads[0].items():
        torch.testing.assert_close(grads[1][name], stock, rtol=1e-3, atol=1e-5, msg=name)


def test_pretrain_writes_loadable_weights_and_report(tmp_path):
    out = tmp_path / "clip.safetensors"
    report = pretrain(out, steps=3, batch_size=16, workers=0, log=lambda r: None)
    assert set(report["per_class"]) == set(SHAPE_CLASSES) and 0 <= report["accuracy"] <= 1
    assert json.loads(report_path(out).read_text())["steps"] == 3
    seg = load_segmenter(f"clip:shapes-tiny/{out}", device="cpu", precision="fp32")
    seg.set_image(np.zeros((64, 64, 3), np.uint8))
    assert seg.segment(["circle", "star"]).labels.shape == (64, 64)


def test_bundle_quick_builds_two_self_contained_models(tmp_path):
    from chimera_trainer.bundle import build_bundled_models

    report = build_bundled_models(tmp_path / "models", tmp_path / "work", quick=True)
    files = report["files"]
    assert set(files) == {"shapes-clip.safetensors", "shapes-chimera.safetensors"}
    assert sum(files.values()) < 40 * 2 ** 20  # ResNet-18 body in fp16 + the CLIP (README "Status")
    for name in files:
        meta = read_metadata(tmp_path / "models" / name)
        assert meta["clip"]["embedded"] and "evaluation" in meta["info"]
        seg = load_segmenter(str(tmp_path / "models" / name), device="cpu", precision="fp32")
        seg.set_image(np.zeros((80, 100, 3), np.uint8))
        assert seg.segment(list(SHAPE_CLASSES)).labels.shape == (80, 100)
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU"):
        assert 0 <= report["shapes_chimera_eval"][key] <= 1


def test_the_block_forward_refuses_to_train_a_model_with_patch_dropout():
    from open_clip.transformer import PatchDropout

    from chimera_engine import vit_ops
    from chimera_engine.clip_loading import ClipSpec, create_clip, register_bundled_configs

    register_bundled_configs()
    model = create_clip(ClipSpec("shapes-tiny", "random"))
    images = torch.zeros(2, 3, 64, 64)
    model.visual.patch_dropout = PatchDropout(0.5)
    with pytest.raises(ValueError, match="patch dropout"):
        vit_ops.encode_image(model.visual.train(), images)
    assert vit_ops.encode_image(model.visual.eval(), images).shape == (2, model.visual.output_dim)  # a no-op in eval
