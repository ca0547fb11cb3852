"""``chimera-train`` given bad arguments, configs, devices, run folders and a full disk: a one-line
message naming the problem, exit 2 for bad arguments and 1 for failures, never a traceback, and a
run's saved checkpoint never lost.

The cases run through the real entry point in a subprocess: one console-script run, and one batch
process that calls ``chimera_trainer.cli.main`` per case (each fresh interpreter costs seconds of imports).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.hostile.conftest import REPO, console_script, no_traceback, run_python

SHAPES = ["zss", "--dataset", "shapes", "--quiet", "--device", "cpu"]

# (case id, extra arguments after `zss --dataset shapes ... --data-root ROOT --out OUT`, exit status, words)
BAD_ZSS = [
    ("lr_text", ["--set", "lr=abc"], 2, ["lr must be a finite number", "'abc'"]),
    ("crop_size_zero", ["--set", "crop_size=0"], 2, ["crop_size = 0", "16..4096"]),
    ("checkpoint_every_zero", ["--set", "checkpoint_every=0"], 2, ["checkpoint_every = 0"]),
    ("resize_scale_number", ["--set", "resize_scale=5"], 2, ["resize_scale must be a pair"]),
    ("iterations_fraction", ["--set", "iterations=1.5"], 2, ["iterations must be a whole number", "1.5"]),
    ("batch_size_true", ["--set", "batch_size=true"], 2, ["batch_size must be a whole number", "True"]),
    ("lr_nan", ["--set", "lr=NaN"], 2, ["lr must be a finite number"]),
    ("amp_unknown", ["--set", "amp=fp64"], 2, ["amp must be one of"]),
    ("tau_zero", ["--set", "tau=0"], 2, ["tau = 0.0"]),
    ("eval_stride_beyond_window", ["--set", "eval_stride=600"], 2, ["eval_stride (600) must not exceed"]),
    ("body_overrides_dropout", ["--set", 'body_overrides={"dropout": 2}'], 2, ["body_overrides.dropout"]),
    ("body_unknown", ["--set", "body=vgg"], 2, ["body must be one of"]),
    ("clip_without_weights", ["--set", "clip=ViT-B-16"], 2, ["clip:", "expected <arch>/<tag>"]),
    ("seed_negative", ["--set", "seed=-1"], 2, ["seed = -1"]),
    ("set_without_equals", ["--set", "lr"], 2, ["cannot apply --set 'lr'"]),
    ("set_unknown_key", ["--set", "learning_rate=1"], 2, ["known key"]),
    ("device_tpu", ["--device", "tpu"], 2, ["unknown device 'tpu'"]),
    ("device_cuda_absent", ["--device", "cuda:7"], 2, ["cuda"]),
    ("iterations_zero_option", ["--iterations", "0"], 2, ["expected a number >= 1"]),
    ("config_missing", ["--config", "{tmp}/nowhere.json"], 2, ["cannot read the config file", "nowhere.json"]),
    ("config_folder", ["--config", "{tmp}"], 2, ["cannot read the config file"]),
    ("config_not_json", ["--config", "{tmp}/not_json.json"], 2, ["not valid JSON"]),
    ("config_latin1", ["--config", "{tmp}/latin1.json"], 2, ["not UTF-8"]),
    ("config_list", ["--config", "{tmp}/list.json"], 2, ["must hold a JSON object"]),
    ("config_unknown_key", ["--config", "{tmp}/unknown.json"], 2, ["unknown config keys: colour"]),
    ("config_huge", ["--config", "{tmp}/huge.json"], 2, ["larger than 1024 KiB"]),
    ("data_root_missing", ["--data-root", "{tmp}/no_data"], 1, ["no_data"]),
    ("out_is_a_file", ["--out", "{tmp}/a_file"], 1, ["a_file"]),
    ("train_state_corrupt", ["--out", "{tmp}/corrupt_run"], 1, ["train_state.pt is damaged", "--fresh"]),
    ("train_state_foreign", ["--out", "{tmp}/foreign_run"], 1, ["train_state.pt is damaged", "'optimizer'"]),
]


@pytest.fixture(scope="module")
def shapes_cli(tmp_path_factory):
    """A 4-image shapes data root, the bad files the cases name, and runs with damaged states."""
    import torch

    from chimera_engine.clip_loading import bundled_model_path
    from chimera_trainer.shapes import write_dataset

    tmp = tmp_path_factory.mktemp("cli")
    write_dataset(tmp / "data" / "train", 4, seed=0, size=64, workers=1)
    (tmp / "not_json.json").write_text("{lr: 1")
    (tmp / "latin1.json").write_bytes(b'{"templates": "caf\xe9"}')
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "unknown.json").write_text('{"colour": "red"}')
    (tmp / "huge.json").write_text('{"templates": "' + "x" * (2 * 1024 * 1024) + '"}')
    (tmp / "a_file").write_text("not a folder")
    for run, state in (("corrupt_run", b"\x80\x02garbage"), ("foreign_run", None)):
        (tmp / run).mkdir()
        shutil.copy(bundled_model_path("shapes-chimera"), tmp / run / "model.safetensors")
        if state is None:
            torch.save({"step": 3}, tmp / run / "train_state.pt")
        else:
            (tmp / run / "train_state.pt").write_bytes(state)
    return tmp


def _argv(tmp: Path, extra: list[str]) -> list[str]:
    extra = [a.replace("{tmp}", str(tmp)) for a in extra]
    base = SHAPES + (["--data-root", str(tmp / "data")] if "--data-root" not in extra else [])
    base += ["--out", str(tmp / "run")] if "--out" not in extra else []
    return base + ["--set", "workers=0"] + extra


_BATCH = """
import contextlib, io, json, sys, traceback
from chimera_trainer.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except BaseException as exc:
            code = "raised " + type(exc).__name__
            traceback.print_exc(file=err)
    results.append({"code": code, "stderr": err.getvalue()})
print("RESULTS" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def batch_results(shapes_cli):
    argvs = [_argv(shapes_cli, case[1]) for case in BAD_ZSS]
    argvs.append(["eval", "--checkpoint", str(shapes_cli / "not_json.json"), "--dataset", "shapes",
                  "--data-root", str(shapes_cli / "data"), "--device", "cpu"])
    done = run_python(_BATCH, json.dumps(argvs), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULTS", 1)[1])
    return dict(zip([case[0] for case in BAD_ZSS] + ["eval_not_a_checkpoint"], results))


@pytest.mark.parametrize("case,status,words", [(c[0], c[2], c[3]) for c in BAD_ZSS], ids=[c[0] for c in BAD_ZSS])
def test_bad_training_invocation(batch_results, case, status, words):
    result = batch_results[case]
    stderr = result["stderr"]
    assert result["code"] == status, stderr
    assert no_traceback(stderr), stderr
    assert all(w in stderr for w in words), stderr


def test_damaged_runs_keep_their_checkpoint(batch_results, shapes_cli):
    from chimera_engine.clip_loading import bundled_model_path

    for run in ("corrupt_run", "foreign_run"):
        assert (shapes_cli / run / "model.safetensors").read_bytes() == bundled_model_path("shapes-chimera").read_bytes()
        assert (shapes_cli / run / "train_state.pt").exists()


def test_eval_of_a_file_that_is_no_checkpoint(batch_results):
    result = batch_results["eval_not_a_checkpoint"]
    assert result["code"] == 1 and no_traceback(result["stderr"]) and "not_json.json" in result["stderr"]


def test_the_console_script_itself(shapes_cli):
    import subprocess

    done = subprocess.run([console_script("chimera-train"), *_argv(shapes_cli, ["--set", "iterations=1.5"])],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "chimera-train: iterations must be a whole number, not 1.5"
    assert not (shapes_cli / "run" / "model.safetensors").exists()


def test_full_disk_while_training_keeps_the_last_checkpoint(shapes_cli, tmp_path, monkeypatch, capsys):
    import errno

    import torch

    from chimera_trainer import run_state
    from chimera_trainer.cli import main

    run = tmp_path / "run"
    real_save, calls = run_state.save_model, []

    def fills_up_after_the_first_checkpoint(model, path, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # step 1 wrote model.safetensors and iter_000001.safetensors; step 2 finds no room
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(model, path, **kwargs)

    monkeypatch.setattr(run_state, "save_model", fills_up_after_the_first_checkpoint)
    argv = _argv(shapes_cli, ["--out", str(run), "--set", "batch_size=2", "--set", "iterations=2",
                              "--set", "checkpoint_every=1", "--set", "clip=shapes-tiny/random"])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "model.safetensors" in err and no_traceback(err)
    # The checkpoint of step 1 is whole: the model equals its periodic copy and the state says step 1.
    assert (run / "model.safetensors").read_bytes() == (run / "iter_000001.safetensors").read_bytes()
    assert torch.load(run / "train_state.pt", weights_only=True)["step"] == 1


def test_a_bad_argument_answers_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom chimera_trainer.cli import main\n"
            "code = main(['zss', '--dataset', 'shapes', '--data-root', '.', '--out', sys.argv[1], '--set', 'lr=abc'])\n"
            "print(code, ','.join(m for m in ('torch', 'open_clip', 'timm') if m in sys.modules) or 'none')\n")
    done = run_python(code, str(tmp_path / "run"))
    assert done.stdout.split() == ["2", "none"], done.stdout + done.stderr
    assert "lr must be a finite number" in done.stderr
