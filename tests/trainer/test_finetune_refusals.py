"""chimera-train finetune's refusals and interrupts as programs see them: the held-out split keeps
the only image of a class for training, a refusal is also a JSON record (the app words it and
offers the way forward), Ctrl+C before training is a one-line exit 130 even when the parent
ignored SIGINT, and a version records the model it really trained."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from chimera_app.project import Project, Region
from chimera_engine.formats.model_versions import MIN_VERIFIED_IMAGES
from chimera_engine.models import load_model
from chimera_trainer import cli
from chimera_trainer.finetune import FinetuneOptions, alpha_rule_text, finetune, split_images
from tests.trainer.test_finetune import REPO, _options, base_checkpoint, make_project  # noqa: F401 (fixture)


def test_the_held_out_split_never_takes_the_only_image_of_a_class():
    rels = [f"img{i}.png" for i in range(5)]
    pixels = np.zeros((5, 3), np.int64)
    pixels[:, 0] = 100  # every image has class 0
    pixels[2, 1] = 50  # only img2 has class 1: it must be trained on
    pixels[[3, 4], 2] = 10  # class 2 in two images: one of them may be held out
    for seed in range(20):
        held, train = split_images(rels, 0.4, seed, pixels)
        assert len(held) == 2 and sorted(held + train) == rels
        assert "img2.png" in train and {"img3.png", "img4.png"} & set(train)
    # Without the counts: the plain seeded shuffle (and the same count).
    assert len(split_images(rels, 0.4, 0)[0]) == 2
    # Nothing can be spared (every image holds a class of its own): still one is held out.
    held, train = split_images(rels[:3], 0.2, 0, np.eye(3, dtype=np.int64))
    assert len(held) == 1 and len(train) == 2


def test_the_minimum_is_shared_with_the_app():
    assert FinetuneOptions(project=".").min_images == MIN_VERIFIED_IMAGES == 3
    parser = cli.build_parser()
    assert parser.parse_args(["finetune", "--project", "."]).min_images == MIN_VERIFIED_IMAGES


def test_a_refusal_is_also_a_json_record_naming_the_classes_and_the_held_out_images(base_checkpoint,  # noqa: F811
                                                                                     tmp_path, capsys):
    root = tmp_path / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    with Project.open(root) as project:  # 'star' labelled nowhere
        project.classes.add("star")
        project.save_meta()
    code = cli.main(["finetune", "--project", str(root), "--device", "cpu", "--progress", "json",
                     "--holdout", "0.25"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    record = next(json.loads(line) for line in err if line.startswith('{"event": "refused"'))
    assert record["reason"] == "empty_classes" and record["classes"] == ["star"] and record["nowhere"] == ["star"]
    assert not record["all_classes"] and len(record["held_out"]) == 1 and record["train_images"] == 3
    assert err[-1].startswith("chimera-train: no person-decided pixels of 'star'") and record["held_out"][0] in err[-1]

    code = cli.main(["finetune", "--project", str(root), "--device", "cpu", "--progress", "json",
                     "--min-images", "9"])
    record = json.loads(capsys.readouterr().err.splitlines()[0])
    assert code == 1 and record["reason"] == "too_few_images" and (record["verified"], record["needed"]) == (4, 9)


def test_a_class_labelled_in_one_image_is_trained_not_held_out(base_checkpoint, tmp_path):  # noqa: F811
    """The tester's case: one carefully labelled image holds the only 'star' pixels."""
    root = tmp_path / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    with Project.open(root) as project:
        star = project.classes.add("star").id
        doc = project.load_document("img01.png")
        doc.paint(Region(4, 4, np.ones((6, 6), bool)), star)
        project.save_document("img01.png", doc)
        project.save_meta()
    for seed in range(4):  # whichever image the seed would hold out
        result = finetune(_options(root, seed=seed, holdout=0.25, iterations=1))
        assert "img01.png" not in result["held_out_images"] and "star" in result["trained_classes"]
        assert result["class_pixels"]["star"] == 36


def test_a_version_records_the_model_it_trained_not_config_defaults(base_checkpoint, tmp_path):  # noqa: F811
    root = tmp_path / "proj"
    make_project(root, 3, 3, model=base_checkpoint)
    result = finetune(_options(root))
    base = load_model(base_checkpoint)
    for recorded in (result["config"], load_model(result["checkpoint"]).info["finetune"]["config"],
                     json.loads((root / ".chimera" / "models" / "v1.json").read_text())["config"]):
        assert recorded["clip"] == str(base.clip_spec) != "ViT-B-16/openai"
        assert recorded["body"]["backbone"] == base.encoder.cfg.body.backbone == "resnet18"
        assert recorded["body"]["pretrained_backbone"] is False
        assert "pretrained_backbone" not in recorded and "dataset" not in recorded and "data_root" not in recorded
        assert recorded["iterations"] == 2 and recorded["batch_size"] == 2
    assert result["alpha_rule"] == ("the smallest α whose share of person-decided pixels pre-labelled right on "
                                    "the held-out images is within 1 point of the best")
    assert "mIoU on the held-out images is within 2 points" in alpha_rule_text(
        FinetuneOptions(project=root, alpha_metric="mIoU", alpha_tolerance=0.02))


def test_an_interrupt_before_training_is_one_line_and_exit_130(monkeypatch, capsys):
    import chimera_trainer.finetune_cli as finetune_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_cli, "run_finetune", interrupted)
    assert cli.main(["finetune", "--project", "."]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chimera-train: interrupted") and "Traceback" not in err


def test_an_interrupt_that_library_code_turned_into_another_error_is_still_the_interrupt(monkeypatch, capsys):
    """Seen once in the suite: SIGINT while safetensors built a tensor came back from torch as
    "could not determine the shape of object type 'torch.storage.UntypedStorage'", exit 1."""
    import chimera_trainer.finetune_cli as finetune_cli

    def interrupted_inside_a_library(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, through chimera-train's handler
            time.sleep(5)
        except KeyboardInterrupt:
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None
        raise AssertionError("SIGINT did not raise")

    monkeypatch.setattr(finetune_cli, "run_finetune", interrupted_inside_a_library)
    assert cli.main(["finetune", "--project", "."]) == 130
    err = capsys.readouterr().err
    assert err.startswith("chimera-train: interrupted") and "shape" not in err

    def failed(args):  # the next run, without an interrupt: a failure is a failure again
        raise ValueError("a real failure")

    monkeypatch.setattr(finetune_cli, "run_finetune", failed)
    assert cli.main(["finetune", "--project", "."]) == 1
    assert "a real failure" in capsys.readouterr().err


# Starts chimera-train with SIGINT ignored, as a shell does for a background job ("&").
IGNORING_PARENT = """
import runpy, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.argv = ["chimera-train", *sys.argv[1:]]
runpy.run_module("chimera_trainer.cli", run_name="__main__")
"""


def test_sigint_stops_it_even_when_its_parent_ignored_sigint(base_checkpoint, tmp_path):  # noqa: F811
    root = tmp_path / "proj"
    make_project(root, 3, 3, model=base_checkpoint)
    args = ["finetune", "--project", str(root), "--device", "cpu", "--iterations", "400", "--batch-size", "2",
            "--progress", "json"]
    proc = subprocess.Popen([sys.executable, "-c", IGNORING_PARENT, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stderr.readline().startswith('{"event": "progress", "stage": "read"')  # past the imports
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - started < 30, err
    assert "Traceback" not in err
    assert "chimera-train: interrupted" in err or "interrupted at step" in out  # before / in the training loop
