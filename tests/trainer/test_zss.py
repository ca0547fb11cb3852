"""Zero-shot training: unseen names never reach training, exact resume, DDP == one process, CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

from chimera_engine.models import load_model
from chimera_trainer.cli import main as train_main
from chimera_trainer.config import DATASET_DEFAULTS, TrainConfig
from chimera_trainer.data.datasets import build_dataset, load_info
from chimera_trainer.shapes import BACKGROUND, SPLIT, write_dataset
from chimera_trainer.zss import train


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root / "train", 24, seed=0, size=64)
    write_dataset(root / "val", 6, seed=1, size=64)
    return root


def _cfg(root, **kw):
    base = dict(dataset="shapes", data_root=str(root), clip="shapes-tiny/random", body="shapes",
                pretrained_backbone=False, crop_size=64, resize_scale=(128, 64), iterations=4, batch_size=4,
                lr=1e-3, warmup_iterations=2, amp="none", workers=0, checkpoint_every=100, log_every=1,
                eval_short_side=64, eval_window=64, eval_stride=48, freeze_bn=True,
                body_overrides={"dropout": 0.0})
    base.update(kw)
    return TrainConfig(**base)


def _train(root, run, **kw):
    torch.manual_seed(0)
    cfg = _cfg(root, **{k: v for k, v in kw.items() if k not in ("stop_after", "fresh")})
    dataset = build_dataset("shapes", root / "train", "train")
    return train(cfg, str(run), dataset, load_info("shapes", root / "train"), device="cpu",
                 fresh=kw.get("fresh", False), show_progress=False, stop_after=kw.get("stop_after"))


def _weights(model):
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


def test_unseen_class_names_never_reach_training(shapes_root, tmp_path, monkeypatch):
    from chimera_engine import text

    seen_phrases = []
    original = text.TextEncoder._encode_phrases

    def spy(self, phrases):
        seen_phrases.extend(phrases)
        return original(self, phrases)

    monkeypatch.setattr(text.TextEncoder, "_encode_phrases", spy)
    model = _train(shapes_root, tmp_path / "run", iterations=2)
    # background is the shapes world's trained "no shape here" class, seen like VOC's background
    assert seen_phrases and set(seen_phrases) == {BACKGROUND, *SPLIT["seen"]}
    assert not set(seen_phrases) & set(SPLIT["unseen"])
    assert model.seen_classes == [BACKGROUND, *SPLIT["seen"]]
    assert model.background == [BACKGROUND]  # and the trained model's default background prompt


def test_training_labels_hold_only_seen_ids(shapes_root):
    from chimera_trainer.train_data import ZeroShotTrainSet

    info = load_info("shapes", shapes_root / "train")
    data = ZeroShotTrainSet(build_dataset("shapes", shapes_root / "train", "train"), info, 64,
                            (0.5,) * 3, (0.25,) * 3, (128, 64))
    for i in range(len(data.base)):
        _, label = data[(i, (0, i))]
        values = set(label.unique().tolist())
        assert values <= set(range(len(info.seen))) | {255}


def test_training_reduces_the_loss_and_writes_a_loadable_run(shapes_root, tmp_path):
    run = tmp_path / "run"
    model = _train(shapes_root, run, iterations=30, lr=3e-3)
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 30 and {"ce", "sgd", "sam", "keep_ratio", "images_per_s", "teacher_share"} <= set(log[0])
    assert log[-1]["keep_ratio"] < log[0]["keep_ratio"]
    first = sum(r["ce"] for r in log[:5]) / 5
    last = sum(r["ce"] for r in log[-5:]) / 5
    assert last < first
    loaded = load_model(run / "model.safetensors")
    for k, v in _weights(model).items():
        torch.testing.assert_close(loaded.encoder.state_dict()[k], v)


@pytest.mark.parametrize("aux_weight", [0.0, 0.4])  # with it, its classifier's weights resume too
def test_resume_continues_exactly(shapes_root, tmp_path, aux_weight):
    straight = _weights(_train(shapes_root, tmp_path / "a", iterations=6, aux_weight=aux_weight))
    _train(shapes_root, tmp_path / "b", iterations=6, stop_after=3, aux_weight=aux_weight)
    resumed = _weights(_train(shapes_root, tmp_path / "b", iterations=6, aux_weight=aux_weight))
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0, msg=k)
    log = [json.loads(line)["iter"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]


def test_ablation_switches_reach_the_model_and_losses(shapes_root, tmp_path):
    model = _train(shapes_root, tmp_path / "lin", iterations=1, head="linear", sgd_weight=0.0, sam_weight=0.0)
    assert type(model.encoder.head).__name__ == "LinearHead"
    log = json.loads((tmp_path / "lin" / "metrics.jsonl").read_text().splitlines()[0])
    assert "sgd" not in log and "sam" not in log
    model = _train(shapes_root, tmp_path / "d1", iterations=1, csh_depth=1)
    assert len(model.encoder.head.clip.blocks) == 1


def test_the_auxiliary_classifier_trains_the_body_and_stays_out_of_the_checkpoint(shapes_root, tmp_path):
    plain = _train(shapes_root, tmp_path / "plain", iterations=2)
    aided = _train(shapes_root, tmp_path / "aux", iterations=2, aux_weight=0.4)
    log = [json.loads(line) for line in (tmp_path / "aux" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["aux"] > 0 for r in log) and "aux" not in json.loads(
        (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[0])
    stored = load_model(tmp_path / "aux" / "model.safetensors").encoder.state_dict()
    assert stored.keys() == _weights(plain).keys()  # the same model, no classifier in it
    moved = [k for k, v in _weights(aided).items() if k.startswith("body.backbone.") and k.endswith("weight")
             and not torch.equal(v, _weights(plain)[k])]
    assert moved  # its gradient reached the backbone
    state = torch.load(tmp_path / "aux" / "train_state.pt", weights_only=True)
    assert set(state["auxiliary"]) == {"weight", "bias"} and state["auxiliary"]["weight"].shape[0] == len(
        aided.seen_classes)


def test_a_state_saved_before_auxiliary_classifiers_existed_still_resumes(shapes_root, tmp_path):
    _train(shapes_root, tmp_path / "run", iterations=4, stop_after=2)
    path = tmp_path / "run" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    del state["auxiliary"]
    torch.save(state, path)
    _train(shapes_root, tmp_path / "run", iterations=4)
    assert [json.loads(line)["iter"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4]


def test_two_gloo_processes_equal_one_process(shapes_root, tmp_path):
    one = _weights(_train(shapes_root, tmp_path / "one", iterations=3, batch_size=4))
    script = tmp_path / "ddp.py"
    script.write_text(f"""
import sys, torch
sys.path.insert(0, {os.getcwd()!r})
from tests.trainer.test_zss import _train
from pathlib import Path
import torch.distributed as dist
model = _train(Path({str(shapes_root)!r}), Path({str(tmp_path / 'two')!r}), iterations=3, batch_size=4)
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29541", str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = {k: v for k, v in load_model(tmp_path / "two" / "model.safetensors").encoder.state_dict().items()}
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)


def test_cli_zss_eval_and_bad_dataset(shapes_root, tmp_path, capsys):
    code = train_main(["zss", "--dataset", "shapes", "--data-root", str(shapes_root), "--out", str(tmp_path / "r"),
                       "--iterations", "2", "--clip", "shapes-tiny/random", "--quiet", "--device", "cpu",
                       "--set", "workers=0", "--set", "batch_size=4", "--eval"])
    assert code == 0
    result = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert {"mIoU_seen", "mIoU_unseen", "hIoU", "pixel_accuracy", "per_class_iou"} <= set(result)
    assert "hIoU" in capsys.readouterr().out
    code = train_main(["eval", "--checkpoint", str(tmp_path / "r" / "model.safetensors"), "--dataset", "voc",
                       "--data-root", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 1 and "nowhere" in err and "VOCdevkit" in err
    with pytest.raises(SystemExit):
        train_main(["zss", "--dataset", "mnist", "--data-root", ".", "--out", "x"])
    assert train_main(["zss", "--dataset", "shapes", "--data-root", str(shapes_root), "--out", str(tmp_path / "x"),
                       "--set", "nonsense=1"]) == 2  # a bad argument


def test_the_seed_alone_decides_the_initial_weights_and_the_run(shapes_root, tmp_path):
    # The CLI never seeds torch itself: the config's seed must draw the body's and head's weights, or
    # `chimera-train zss --seed 0` trains a different model each time it runs.
    dataset, info = build_dataset("shapes", shapes_root / "train", "train"), load_info("shapes", shapes_root / "train")

    def run(name, rng_before, seed):
        torch.manual_seed(rng_before)  # whatever this process drew before must not matter
        return _weights(train(_cfg(shapes_root, iterations=1, seed=seed), str(tmp_path / name), dataset, info,
                              device="cpu", fresh=True, show_progress=False))

    first, again, other = run("a", 1, 0), run("b", 2, 0), run("c", 1, 5)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_sgd_twin_contrast_trains_on_twins_augmented_like_their_images(tmp_path):
    from chimera_engine.errors import ChimeraError
    from chimera_trainer import losses
    from chimera_trainer.data.datasets import twin_paths
    from chimera_trainer.shapes import sample
    from chimera_trainer.shapes.world import twin
    from chimera_trainer.train_data import ZeroShotTrainSet

    root = tmp_path / "shapes"
    write_dataset(root / "train", 8, seed=3, size=64)  # with twins, as every shapes folder by default:
    recipe_twins = DATASET_DEFAULTS["shapes"]["twin_count"]
    assert json.loads((root / "train" / "split.json").read_text())["twins"] == recipe_twins
    # Each twin file is the world's twin of its image.
    from chimera_engine.images import load_image
    for i in (0, 5):
        expected = twin(3, i, 64, sample(3, i, 64, min_objects=1, max_objects=4), min_objects=1, max_objects=4)
        assert (load_image(root / "train" / "twins" / f"{i:06d}.png") == expected.image).all()
    info = load_info("shapes", root / "train")
    base = build_dataset("shapes", root / "train", "train")
    # Augmented alike: with the image itself as its "twin" the two tensors are equal, at every seed.
    same = ZeroShotTrainSet(base, info, 64, (0.5,) * 3, (0.25,) * 3, (128, 64), (0.5, 2.0),
                            twins=[[image, image] for image, _ in base.pairs])
    for i in range(4):
        image, _, twin_images = same[(i, (9, i))]
        assert twin_images.shape == (2, *image.shape)
        assert torch.equal(image, twin_images[0]) and torch.equal(image, twin_images[1])
    # With the real twins, the pixels that differ after augmentation are the redrawn shape's: some, not most.
    real = ZeroShotTrainSet(base, info, 64, (0.5,) * 3, (0.25,) * 3, (128, 64), (0.5, 2.0), twins=twin_paths(base))
    shares = [float(losses.changed_region(image[None], twin_images[:1], (1, 1))) for image, _, twin_images in
              (real[(i, (9, i))] for i in range(8))]
    assert max(shares) > 0 and all(share < 0.5 for share in shares), shares
    for pool in ("image", "changed"):
        model = _train(root, tmp_path / pool, iterations=3, twin_weight=1.0, twin_pool=pool)
        log = [json.loads(line) for line in (tmp_path / pool / "metrics.jsonl").read_text().splitlines()]
        assert len(log) == 3 and all(r["twin"] > 0 for r in log)
        assert model.encoder is not None
    # Three twins per image: a four-way choice. Same seed, weights, batch and first twin (a prefix), so
    # the first step's loss only gains the two extra negatives' terms: strictly larger than with one.
    three = tmp_path / "three"
    write_dataset(three / "train", 8, seed=3, size=64, twins=3)
    first = {}
    for count in (1, 3):
        _train(three, tmp_path / f"count{count}", iterations=2, twin_weight=1.0, twin_count=count)
        log = [json.loads(line) for line in (tmp_path / f"count{count}" / "metrics.jsonl").read_text().splitlines()]
        first[count] = log[0]["twin"]
    assert first[3] > first[1] > 0, first
    # Fewer twins on disk than the recipe asks for is refused before any work.
    with pytest.raises(ChimeraError, match=f"{recipe_twins + 1} twin"):
        _train(root, tmp_path / "too_few", iterations=1, twin_weight=1.0, twin_count=recipe_twins + 1)
    assert not (tmp_path / "too_few").exists()
    # Data without twins is refused before any work.
    plain = tmp_path / "plain_data"
    write_dataset(plain / "train", 4, seed=3, size=64, twins=False)
    with pytest.raises(ChimeraError, match="twin"):
        _train(plain, tmp_path / "refused", iterations=1, twin_weight=1.0)
    assert not (tmp_path / "refused").exists()
