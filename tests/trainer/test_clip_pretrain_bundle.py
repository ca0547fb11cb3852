"""The shapes CLIP pre-training and the bundled-model recipe, on tiny schedules."""

import json
import math

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


def test_scene_bank_twin_pairs_differ_in_one_shape_only():
    import open_clip

    tokenizer = open_clip.get_tokenizer("shapes-tiny")
    plain = SceneBank(0, 64, 200, tokenizer, 32, (0.5,) * 3, (0.25,) * 3, workers=1)
    paired = SceneBank(0, 64, 200, tokenizer, 32, (0.5,) * 3, (0.25,) * 3, workers=1, twin_share=0.5)
    assert np.array_equal(plain.images, paired.images)  # the scenes themselves are the world's
    special = {0, tokenizer.sot_token_id, tokenizer.eot_token_id}
    twins = 0
    for step in range(4):
        images, tokens, shown, said = paired.batch(step, 32)
        index = np.random.default_rng([0, step, 2]).integers(200, size=32)  # the batch's own draw
        for k in range(8):  # a quarter of the slots are origins, a quarter their twins
            t = 31 - k
            if paired.twins[index[k]] is None:  # a shape-less scene has no twin
                continue
            twins += 1
            shapes = shown[k].sum(-1) - shown[t].sum(-1)
            assert shapes.abs().sum() == 2 and shapes.sum() == 0  # one shape became another
            assert torch.equal(shown[k].sum(0), shown[t].sum(0))  # in the same colour
            words = [tokenizer.decode([i for i in tokens[j].tolist() if i not in special]).split() for j in (k, t)]
            assert len(words[0]) == len(words[1])  # the same template, order and colour words:
            assert 1 <= sum(a != b for a, b in zip(*words)) <= 2  # only the shape word and its article differ
            changed = (images[k] != images[t]).any(0).float().mean()
            assert 0 < changed < 0.4  # flipped alike: only the outline's pixels change
    assert twins >= 24

def test_pretrain_refuses_a_twin_share_outside_0_to_1(tmp_path):
    from chimera_trainer.config import ConfigError

    with pytest.raises(ConfigError, match="twin"):
        pretrain(tmp_path / "clip.safetensors", steps=1, batch_size=4, workers=0, twin_share=1.5)
    assert not any(tmp_path.iterdir())


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


def _no_group(*args):  # refused before joining torchrun's group, so no process leaves one open
    raise AssertionError("the process group was joined before the settings were checked")


def test_the_low_resolution_steps_come_first_and_shrink_the_whole_batch(tmp_path, monkeypatch):
    from chimera_trainer import clip_pretrain

    seen = []
    real = clip_pretrain.encode_pairs

    optimizers, rates = [], []
    real_adamw = clip_pretrain.adamw

    def recording_adamw(*args, **kwargs):
        optimizers.append(real_adamw(*args, **kwargs))
        return optimizers[-1]

    def recording(model, images, tokens):
        seen.append(tuple(images.shape))
        rates.append(optimizers[0].param_groups[0]["lr"])  # the rate this step trains with
        return real(model, images, tokens)

    monkeypatch.setattr(clip_pretrain, "encode_pairs", recording)
    monkeypatch.setattr(clip_pretrain, "adamw", recording_adamw)
    report = pretrain(tmp_path / "c.safetensors", steps=4, batch_size=8, workers=0, scenes=16, low_res_steps=3,
                      low_res_size=32, native_lr=0.5, lr=1e-3, warmup=100, log=lambda r: None)
    assert seen == [(8, 3, 32, 32)] * 3 + [(8, 3, 64, 64)]
    assert (report["low_res_steps"], report["low_res_size"], report["native_lr"]) == (3, 32, 0.5)
    # Warm-up under a cosine that ends with the third step, then the native step starts anew at half the peak.
    cosine = [0.5 * (1 + math.cos(math.pi * t / 3)) for t in range(3)]
    assert rates == pytest.approx([1e-3 * (t + 1) / 100 * cosine[t] for t in range(3)] + [1e-3 * 0.5 / 100])


def test_one_schedule_is_warm_up_then_cosine_and_a_restart_gives_the_native_steps_their_own():
    from chimera_trainer.clip_pretrain import schedule

    steps, warmup = 1000, 100
    plain = [schedule(t, steps, warmup) for t in range(steps)]
    assert plain == pytest.approx([min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * t / steps))
                                   for t in range(steps)], abs=1e-12)
    restarted = [schedule(t, steps, warmup, restart=800, restart_peak=0.3) for t in range(steps)]
    assert restarted[:800] == [schedule(t, 800, warmup) for t in range(800)]  # the first cosine runs down at 800
    assert restarted[799] < 1e-4 and restarted[800] == pytest.approx(0.3 / warmup)
    assert restarted[800 + warmup - 1] == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * (warmup - 1) / 200)))
    tail = restarted[800 + warmup - 1:]
    assert all(a >= b for a, b in zip(tail, tail[1:])) and tail[-1] < 1e-3


@pytest.mark.parametrize("argv, message", [(["--native-lr", "0.3"], "needs a low-resolution phase first"),
                                           (["--native-lr", "0.3", "--low-res-steps", "1", "--low-res-size", "64"],
                                            "needs a low-resolution phase first"),
                                           (["--native-lr", "1.5", "--low-res-steps", "1"], "in \\(0, 1\\]"),
                                           (["--native-lr", "0.3", "--low-res-steps", "2"], "needs native-size steps")])
def test_a_native_schedule_without_native_steps_is_a_usage_error(tmp_path, capsys, monkeypatch, argv, message):
    import re

    from chimera_engine import distributed
    from chimera_trainer.cli import main

    monkeypatch.setattr(distributed, "start", _no_group)

    assert main(["shapes-clip", "--out", str(tmp_path / "c.safetensors"), "--steps", "2", *argv]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize("steps, size, message", [(-1, 32, "must be >= 0"), (2, 44, "multiple of the patch size 8"),
                                                  (2, 72, "below 64 px"), (2, 0, "multiple of the patch")])
def test_a_low_resolution_the_model_cannot_take_is_a_usage_error(tmp_path, monkeypatch, steps, size, message):
    from chimera_engine import distributed
    from chimera_trainer.cli import main
    from chimera_trainer.config import ConfigError

    monkeypatch.setattr(distributed, "start", _no_group)

    with pytest.raises(ConfigError, match=message):
        pretrain(tmp_path / "c.safetensors", steps=2, batch_size=8, workers=0, scenes=8, low_res_steps=steps,
                 low_res_size=size, log=lambda r: None)
    assert main(["shapes-clip", "--out", str(tmp_path / "d.safetensors"), "--steps", "2",
                 "--low-res-steps", str(steps), "--low-res-size", str(size)]) == 2
    assert not (tmp_path / "d.safetensors").exists()


def test_bundle_quick_builds_two_self_contained_models(tmp_path):
    from chimera_trainer.bundle import SCHEDULES, build_bundled_models

    report = build_bundled_models(tmp_path / "models", tmp_path / "work", quick=True)
    assert report["clip_pretraining"]["scenes"] == SCHEDULES["clip_scenes"][1]  # the bank size reaches pretrain
    files = report["files"]
    assert set(files) == {"shapes-clip.safetensors", "shapes-chimera.safetensors"}
    assert sum(files.values()) < 40 * 2 ** 20  # ResNet-18 body in fp16 + the CLIP (benchmarks/SHAPES.md: shapes-chimera 12.4 MB)
    for name in files:
        meta = read_metadata(tmp_path / "models" / name)
        assert meta["clip"]["embedded"] and "evaluation" in meta["info"]
        seg = load_segmenter(str(tmp_path / "models" / name), device="cpu", precision="fp32")
        seg.set_image(np.zeros((80, 100, 3), np.uint8))
        assert seg.segment(list(SHAPE_CLASSES)).labels.shape == (80, 100)
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU"):
        assert 0 <= report["shapes_chimera_eval"][key] <= 1


def test_bundle_clip_schedules_name_pretrains_arguments_and_the_cli_offers_each(monkeypatch, tmp_path):
    from chimera_trainer import bundle, cli, clip_pretrain

    assert bundle.clip_schedule("native", 12000) == {"steps": 12000}
    assert bundle.clip_schedule("low-res", 12000) == {"steps": 12000, "low_res_steps": 10000,
                                                      "low_res_size": 40, "native_lr": 0.3}
    assert bundle.clip_schedule("low-res", 20)["low_res_steps"] == 17  # the quick schedule keeps native steps
    with pytest.raises(ValueError, match="low-res"):
        bundle.clip_schedule("fast", 100)

    seen = []

    def fake_pretrain(out, **kwargs):  # stop at the first stage: only what the CLI passes down matters
        seen.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(clip_pretrain, "pretrain", fake_pretrain)
    parser = cli.build_parser()
    offered = next(a.choices["bundle"] for a in parser._subparsers._group_actions if "bundle" in a.choices)
    assert set(next(a.choices for a in offered._actions if a.dest == "clip_schedule")) == set(bundle.CLIP_SCHEDULES)
    for name in bundle.CLIP_SCHEDULES:
        args = parser.parse_args(["bundle", "--quick", "--work", str(tmp_path), "--out", str(tmp_path),
                                              "--clip-schedule", name])
        with pytest.raises(KeyboardInterrupt):
            args.func(args)
        assert {k: seen[-1][k] for k in bundle.clip_schedule(name, 20)} == bundle.clip_schedule(name, 20)
    assert "low_res_steps" not in seen[0] and seen[1]["low_res_steps"] == 17
    assert seen[0]["scenes"] == bundle.SCHEDULES["clip_scenes"][1]  # the schedule's bank, unless told
    args = parser.parse_args(["bundle", "--quick", "--work", str(tmp_path), "--out", str(tmp_path), "--clip-scenes", "300"])
    with pytest.raises(KeyboardInterrupt):
        args.func(args)
    assert seen[-1]["scenes"] == 300


def test_bundle_set_reaches_the_chimera_stage_and_a_bad_one_is_refused_before_any_work(monkeypatch, tmp_path):
    from chimera_trainer import cli, clip_pretrain, zss

    def no_pretraining(out, **kwargs):
        raise AssertionError("a refused --set must stop the bundle before the CLIP stage")

    monkeypatch.setattr(clip_pretrain, "pretrain", no_pretraining)
    for bad in (["seed=-1"], ["no_such_key=1"], ["clip=ViT-B-16/openai"], ["data_root=/tmp"], ["sgd_weight=heavy"],
                ["twin_count=12"]):
        argv = ["bundle", "--quick", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "m")]
        assert cli.main(argv + [f"--set={item}" for item in bad]) == 2, bad
    for share in ("1.5", "-0.2", "nan"):
        assert cli.main(argv + ["--single-share", share]) == 2, share
    for scenes in ("0", "-5", "many"):  # argparse's own usage error
        with pytest.raises(SystemExit) as refused:
            cli.main(argv + ["--clip-scenes", scenes])
        assert refused.value.code == 2, scenes
    assert not (tmp_path / "w").exists()
    monkeypatch.undo()

    trained = []

    def spy_train(cfg, *args, **kwargs):  # stop at the Chimera-Seg stage: only its config matters
        trained.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(zss, "train", spy_train)
    assert cli.main(["bundle", "--quick", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "m"),
                     "--set", "sgd_weight=3", "--set", "seed=5", "--set", "twin_count=2", "--single-share", "1"]) == 130
    (cfg,) = trained
    train_split = json.loads((tmp_path / "w" / "shapes" / "train" / "split.json").read_text(encoding="utf-8"))
    assert train_split["single_share"] == 1.0  # the option reached the training images
    val_split = json.loads((tmp_path / "w" / "shapes" / "val" / "split.json").read_text(encoding="utf-8"))
    assert val_split["single_share"] == 0.0  # and not the val images, which stay the world's own
    assert val_split["twins"] == 0 and not (tmp_path / "w" / "shapes" / "val" / "twins").exists()  # never trained on
    assert (cfg.sgd_weight, cfg.seed, cfg.dataset) == (3.0, 5, "shapes")
    assert cfg.iterations == 20 and cfg.clip.startswith("shapes-tiny/")  # the bundle's own keys kept
    # The recipe's twin contrast has as many twins of every training image as it asks for.
    assert (cfg.twin_weight, cfg.twin_count) == (1.0, 2)
    train_data = tmp_path / "w" / "shapes" / "train"
    assert json.loads((train_data / "split.json").read_text())["twins"] == 2
    images = sorted(p.name for p in (train_data / "images").iterdir())
    assert sorted(p.name for p in (train_data / "twins").iterdir()) == sorted(
        [*images, *(name.replace(".png", "-1.png") for name in images)])


def test_bundle_quick_under_torchrun_writes_each_file_once_and_reports_on_every_rank(tmp_path):
    # Two processes share one group through both trainings; rank 0 alone writes data, models and the demo.
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29544", "-m", "chimera_trainer.cli", "bundle", "--quick", "--out", str(tmp_path / "models"),
                           "--work", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # one report: rank 1 prints nothing
    assert report["processes"] == 2 and report["clip_pretraining"]["processes"] == 2
    assert set(report["files"]) == {"shapes-clip.safetensors", "shapes-chimera.safetensors"}
    assert report["seconds"] >= report["clip_seconds"] + report["chimera_seconds"] - 1
    seg = load_segmenter(str(tmp_path / "models" / "shapes-chimera.safetensors"), device="cpu", precision="fp32")
    seg.set_image(np.zeros((64, 64, 3), np.uint8))
    assert seg.segment(list(SHAPE_CLASSES)).labels.shape == (64, 64)
    assert len(list((tmp_path / "demo").glob("demo*.png"))) == 8


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


_STEP_GRADIENTS = """
import sys, open_clip, torch
from chimera_engine import distributed
from chimera_engine.clip_loading import ClipSpec, create_clip, register_bundled_configs
from chimera_trainer.clip_pretrain import (SceneBank, _average_gradients, _batch_part, _gathered,
                                           contrastive_loss, encode_pairs)


def step_gradients(out):
    # One step of pre-training's own pieces, as pretrain wires them; its parameter gradients in ``out``.
    context = distributed.start("cpu")
    register_bundled_configs()
    torch.manual_seed(0)
    model = create_clip(ClipSpec("shapes-tiny", "random")).train()
    bank = SceneBank(0, 64, 32, open_clip.get_tokenizer("shapes-tiny"), model.context_length,
                     open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, workers=0)
    images, tokens = bank.batch(1, 16)[:2]
    part = _batch_part(16, context)
    loss = contrastive_loss(*_gathered(*encode_pairs(model, images[part], tokens[part]), context), model.logit_scale)
    loss.backward()
    _average_gradients(model, context)
    if context.is_main:
        torch.save({k: p.grad for k, p in model.named_parameters() if p.grad is not None}, out)
    context.close()
"""


def test_two_gloo_processes_pretrain_the_same_clip_as_one(tmp_path):
    # torchrun splits each step's batch between processes and gathers the embeddings for the whole-batch
    # loss. One step's gradients must be one process's (AdamW would hide a wrong scale in the weights),
    # and the weights after a few steps too, up to float summation order.
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    (tmp_path / "step.py").write_text(_STEP_GRADIENTS)
    sys.path.insert(0, str(tmp_path))
    try:
        from step import step_gradients
    finally:
        sys.path.remove(str(tmp_path))
    step_gradients(tmp_path / "grads-one.pt")
    one = pretrain(tmp_path / "one.safetensors", steps=3, batch_size=16, workers=0, scenes=64, log=lambda r: None)
    script = tmp_path / "ddp.py"
    script.write_text(f"""
import json, sys
sys.path.insert(0, {str(tmp_path)!r})
from chimera_engine import distributed
from step import step_gradients
from chimera_trainer.clip_pretrain import pretrain
job = distributed.start("cpu")  # both stages share the job's group, as the bundle's do
step_gradients({str(tmp_path / 'grads-two.pt')!r})
report = pretrain({str(tmp_path / 'two.safetensors')!r}, steps=3, batch_size=16, workers=0, scenes=64, log=lambda r: None)
print(json.dumps(report))
job.close()
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29543", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grads = [torch.load(tmp_path / f"grads-{n}.pt") for n in ("one", "two")]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name, single in grads[0].items():
        torch.testing.assert_close(grads[1][name], single, rtol=1e-4, atol=1e-6, msg=name)
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 2 and reports[0] == reports[1]  # every rank returns rank 0's report
    assert reports[0]["processes"] == 2 and one["processes"] == 1
    a, b = load_file(str(tmp_path / "one.safetensors")), load_file(str(tmp_path / "two.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=2e-5, msg=name)
    pretrain(tmp_path / "zero.safetensors", steps=1, batch_size=16, workers=0, scenes=64, lr=0.0, log=lambda r: None)
    zero = load_file(str(tmp_path / "zero.safetensors"))
    assert sum(not torch.equal(zero[k], a[k]) for k in a) > 50  # trained weights, not two copies of the initial


def test_a_batch_two_processes_cannot_split_is_refused():
    from chimera_engine.distributed import Context
    from chimera_trainer.clip_pretrain import _batch_part

    assert _batch_part(16, Context(1, 2, "cpu")) == slice(8, 16)
    with pytest.raises(ValueError, match="not divisible by 2 processes"):
        _batch_part(15, Context(0, 2, "cpu"))
