"""chimera-train finetune: learns only from what a person decided, writes never-overwritten versions,
never embeds names outside the project, refuses clearly, and survives being killed."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chimera_app.project import Project, Provenance, Region
from chimera_engine.models import build_model, load_model, save_model
from chimera_engine.tiling import InferenceConfig
from chimera_trainer.cli import main as train_main
from chimera_trainer.finetune import FinetuneOptions, finetune
from chimera_trainer.finetune_eval import blend
from chimera_trainer.project_data import IGNORE, read_snapshot
from chimera_trainer.shapes import SHAPE_CLASSES, sample

CLASSES = ["circle", "square", "triangle"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A tiny random Chimera-Seg checkpoint whose seen classes are NOT the project's."""
    torch.manual_seed(3)
    model = build_model("chimera:tiny/chimera-tiny/random")
    model.inference = InferenceConfig(short_side=64, window=64, stride=48)
    model.seen_classes = ["hexagon", "arrow"]
    return str(save_model(model, tmp_path_factory.mktemp("base") / "base.safetensors"))


def make_project(root: Path, images: int, verified: int, model: str | None = None, undecided_border: int = 0):
    """Shapes images with their true masks painted by a "person" (and ``background``); the first
    ``verified`` images are verified. ``undecided_border`` leaves a frame of pixels nobody decided."""
    root.mkdir(parents=True, exist_ok=True)
    scenes = [sample(21, i, 64, classes=CLASSES, min_objects=3) for i in range(images)]
    for i, scene in enumerate(scenes):
        Image.fromarray(scene.image).save(root / f"img{i:02d}.png")
    with Project.open(root) as project:
        ids = {name: project.classes.add(name).id for name in ["background", *CLASSES]}
        project.model = model
        for i, scene in enumerate(scenes[:verified]):
            rel = f"img{i:02d}.png"
            doc = project.load_document(rel)
            inner = np.zeros(scene.labels.shape, bool)
            b = undecided_border
            inner[b:inner.shape[0] - b, b:inner.shape[1] - b] = True
            doc.paint(Region.full(inner & (scene.labels == 0)), ids["background"])
            for name in CLASSES:
                mask = inner & (scene.labels == SHAPE_CLASSES.index(name) + 1)
                if mask.any():
                    doc.paint(Region.full(mask), ids[name])
            doc.accept_prediction()  # the person's "done": the image is human-verified
            project.save_document(rel, doc)
        project.save_meta()
    return ids


def _options(root, **kw):
    base = dict(project=root, iterations=2, batch_size=2, device="cpu", progress="none", holdout=0.34)
    base.update(kw)
    return FinetuneOptions(**base)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _project_files(data_dir: Path) -> dict[str, str]:
    """Every file of the project's data folder except the fine-tune's own work folder."""
    return {str(p.relative_to(data_dir)): _digest(p) for p in sorted(data_dir.rglob("*"))
            if p.is_file() and "finetune-run" not in p.parts and p.name != "lock"}


def test_finetune_writes_loadable_versions_and_never_overwrites(base_checkpoint, tmp_path):
    root = tmp_path / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    first = finetune(_options(root))
    models = root / ".chimera" / "models"
    assert first["version"] == "v1" and (models / "v1.safetensors").is_file()
    loaded = load_model(models / "v1.safetensors")
    info = loaded.info["finetune"]
    assert info["base"] == base_checkpoint and 0.0 <= info["alpha"] <= 1.0
    assert set(info["alpha_grid"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    metrics = json.loads((models / "v1.json").read_text())
    assert set(metrics["before"]["per_class_iou"]) == {"background", *CLASSES}
    assert metrics["after"]["pixels_to_change_per_image"] is not None and metrics["train_images"] == 3
    index = json.loads((models / "index.json").read_text())
    assert [v["name"] for v in index["versions"]] == ["v1"] and index["active"] is None
    assert set(loaded.seen_classes) >= {"background", *CLASSES, "hexagon"}

    # CLIP's tail inside the CSH is frozen: identical to the base's, whatever was trained and blended.
    base = load_model(base_checkpoint)
    for key, value in base.encoder.state_dict().items():
        if key.startswith("head.clip."):
            torch.testing.assert_close(loaded.encoder.state_dict()[key], value)

    v1_digest = _digest(models / "v1.safetensors")
    second = finetune(_options(root, activate=True, alpha=0.5))
    assert second["version"] == "v2" and second["alpha"] == 0.5
    assert _digest(models / "v1.safetensors") == v1_digest
    index = json.loads((models / "index.json").read_text())
    assert [v["name"] for v in index["versions"]] == ["v1", "v2"] and index["active"] == "v2"
    assert not (root / ".chimera" / "finetune-run" / "train_state.pt").exists()


def test_blend_interpolates_floats_and_keeps_counters():
    base = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.ones(3), "n": torch.tensor(9)}
    out = blend(base, tuned, 0.25)
    torch.testing.assert_close(out["w"], torch.full((3,), 0.25))
    assert int(out["n"]) == 9


def test_pixels_nobody_decided_are_ignored(tmp_path):
    root = tmp_path / "proj"
    ids = make_project(root, 2, 2, undecided_border=8)
    with Project.open(root) as project:
        # A model pre-label on image 1 that nobody accepted, and a person's erase: neither is trained on.
        doc = project.load_document("img01.png")
        free = doc.provenance != Provenance.HUMAN
        doc.provenance[free] = Provenance.MODEL
        doc.labels[free] = ids["square"]
        patch = doc.paint(Region(10, 10, np.ones((4, 4), bool)), 0)
        project.record("img01.png", doc, patch)  # only in the journal: the reader must replay it
    snapshot = read_snapshot(root)
    assert snapshot.verified == ["img00.png", "img01.png"]
    item = snapshot.load("img01.png")
    assert (item.target[:8] == IGNORE).all() and (item.target[:, -8:] == IGNORE).all()
    assert (item.target[10:14, 10:14] == IGNORE).all() and item.decided[10:14, 10:14].all()
    assert (item.person_labels[10:14, 10:14] == -1).all()
    inner = item.target[8:-8, 8:-8]
    assert np.isin(inner, [0, 1, 2, 3, IGNORE]).all() and (inner != IGNORE).mean() > 0.9

    from chimera_trainer.finetune_train import training_stream
    from chimera_trainer.config import TrainConfig

    cfg = TrainConfig(crop_size=32, resize_scale=(128, 32))
    model = build_model("chimera:tiny/chimera-tiny/random")
    stream = training_stream([item], ["background", *CLASSES], cfg, model)
    for position in range(6):
        _, label = stream[(0, (0, position))]
        assert set(label.unique().tolist()) <= {0, 1, 2, 3, IGNORE}
        assert (label == IGNORE).any()  # the undecided frame or padding is never a class


def test_only_project_class_names_are_embedded(base_checkpoint, tmp_path, monkeypatch):
    from chimera_engine import text

    embedded = []
    original = text.TextEncoder._encode_phrases

    def spy(self, phrases):
        embedded.extend(phrases)
        return original(self, phrases)

    monkeypatch.setattr(text.TextEncoder, "_encode_phrases", spy)
    root = tmp_path / "proj"
    make_project(root, 3, 3, model=base_checkpoint)
    finetune(_options(root, holdout=0.3))
    assert embedded and set(embedded) == {"background", *CLASSES}  # never "hexagon" / "arrow" of the base


def test_too_few_verified_images_or_an_empty_class_are_refused(base_checkpoint, tmp_path, capsys):
    root = tmp_path / "proj"
    make_project(root, 3, 2, model=base_checkpoint)
    assert train_main(["finetune", "--project", str(root), "--device", "cpu", "--progress", "none"]) == 1
    assert "too few human-verified images" in capsys.readouterr().err

    with Project.open(root) as project:
        project.classes.add("star")
        project.save_meta()
    code = train_main(["finetune", "--project", str(root), "--device", "cpu", "--progress", "none", "--min-images", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "'star'" in err and "--skip-empty-classes" in err
    assert not (root / ".chimera" / "models").exists()


def test_training_free_base_builds_a_new_chimera_seg(tmp_path):
    root = tmp_path / "proj"
    make_project(root, 3, 3, model="clip:chimera-tiny/random")
    result = finetune(_options(root, crop_size=64))
    assert result["alpha"] == 1.0 and result["alpha_rule"] == "no trained base to blend with"
    assert any("new Chimera-Seg" in note for note in result["notes"])
    model = load_model(result["checkpoint"])
    assert model.kind == "chimera-seg" and type(model.encoder.body.backbone).__name__ != ""


def _wait_for_step(proc, step: int, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("stage") == "train" and record.get("done", 0) >= step:
            return record
    raise AssertionError(f"the fine-tune never reached step {step}")


def test_a_killed_finetune_leaves_the_active_model_and_the_project_intact(base_checkpoint, tmp_path):
    root = tmp_path / "proj"
    make_project(root, 4, 4, model=base_checkpoint)
    finetune(_options(root, activate=True))
    data_dir = root / ".chimera"
    before = _project_files(data_dir)
    args = ["--project", str(root), "--device", "cpu", "--iterations", "400", "--batch-size", "2",
            "--holdout", "0.34", "--set", "checkpoint_every=1", "--set", "log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "chimera_trainer.cli", "finetune", *args, "--progress", "json"],
                            cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        _wait_for_step(proc, 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _project_files(data_dir) == before  # index (v1 active), versions, labels, project.json
    index = json.loads((data_dir / "models" / "index.json").read_text())
    assert index["active"] == "v1" and [v["name"] for v in index["versions"]] == ["v1"]
    load_model(data_dir / "models" / "v1.safetensors")
    with Project.open(root) as project:  # the app opens it as before
        assert project.load_document("img00.png").state.value == "human-verified"

    # The same command resumes where the killed run last saved.
    saved = torch.load(data_dir / "finetune-run" / "train_state.pt", weights_only=True)["step"]
    assert saved >= 1
    opts = _options(root, iterations=400, overrides=["checkpoint_every=1", "log_every=1"], stop_after=1)
    assert finetune(opts)["step"] == saved + 1


def test_ctrl_c_saves_and_exits_130(base_checkpoint, tmp_path):
    root = tmp_path / "proj"
    make_project(root, 3, 3, model=base_checkpoint)
    args = ["--project", str(root), "--device", "cpu", "--iterations", "400", "--batch-size", "2",
            "--holdout", "0.34", "--progress", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "chimera_trainer.cli", "finetune", *args], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        _wait_for_step(proc, 1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "run the same command to resume" in out
    state = torch.load(root / ".chimera" / "finetune-run" / "train_state.pt", weights_only=True)
    assert 1 <= state["step"] < 400
    assert not (root / ".chimera" / "models").exists()


def test_two_gloo_processes_fine_tune_like_one(tmp_path):
    import dataclasses
    import shutil

    from chimera_engine.chimera.model import ChimeraConfig, preset
    from chimera_engine.models import chimera_model

    torch.manual_seed(5)  # no dropout: its masks are drawn per process
    body = dataclasses.replace(preset("tiny"), dropout=0.0)
    model = chimera_model(ChimeraConfig(body=body, clip="chimera-tiny/random"))
    model.inference = InferenceConfig(short_side=64, window=64, stride=48)
    base = str(save_model(model, tmp_path / "base.safetensors"))
    one, two = tmp_path / "one", tmp_path / "two"
    make_project(one, 4, 4, model=base)
    shutil.copytree(one, two)
    finetune(_options(one, iterations=3, alpha=1.0))
    args = ["finetune", "--project", str(two), "--iterations", "3", "--batch-size", "2", "--device", "cpu",
            "--holdout", "0.34", "--alpha", "1.0", "--progress", "none"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29547", "-m", "chimera_trainer.cli", *args], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_model(one / ".chimera" / "models" / "v1.safetensors").encoder.state_dict()
    b = load_model(two / ".chimera" / "models" / "v1.safetensors").encoder.state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)  # reduction order


def test_a_save_in_flight_is_waited_for_and_its_state_counts(tmp_path, monkeypatch):
    import chimera_trainer.project_data as project_data
    from chimera_trainer.project_data import ProjectDataError

    root = tmp_path / "proj"
    make_project(root, 3, 2)
    data_dir = root / ".chimera"
    staged = data_dir / "staging" / ".labels.x.tmp"
    staged.parent.mkdir(exist_ok=True)
    staged.write_bytes(b"staged")
    commit = {"entries": {"img02.png": {"state": "human-verified", "uncertainty": None}},
              "renames": [[str(staged), str(data_dir / "labels" / "img00.png.png")]], "deletes": []}
    (data_dir / "commit.json").write_text(json.dumps(commit))
    snapshot = read_snapshot(root)
    assert snapshot.verified == ["img00.png", "img01.png", "img02.png"]  # img02 only in commit.json
    monkeypatch.setattr(project_data, "COMMIT_RETRIES", 2)
    monkeypatch.setattr(project_data, "COMMIT_WAIT_S", 0.01)
    with pytest.raises(ProjectDataError, match="being saved"):
        snapshot.load("img00.png")  # its labels are being renamed into place
    assert snapshot.load("img01.png").decided.all()
    staged.unlink()  # the rename happened
    assert snapshot.load("img00.png").decided.all()


def test_without_base_it_starts_from_the_projects_current_model(tmp_path):
    """The active version when there is one (what the app runs), else project.json's model."""
    from types import SimpleNamespace

    from chimera_engine.formats.model_versions import add_version, models_dir, set_active
    from chimera_trainer.finetune import FinetuneOptions, _base_name

    snapshot = SimpleNamespace(model="shapes-chimera", data_dir=tmp_path)
    opts = FinetuneOptions(project=tmp_path)
    assert _base_name(opts, snapshot) == "shapes-chimera"

    def write(name, checkpoint, metrics):
        checkpoint.write_bytes(b"weights")
        metrics.write_text("{}")
        return {}

    add_version(models_dir(tmp_path), write)
    set_active(models_dir(tmp_path), "v1")
    assert _base_name(opts, snapshot) == str(models_dir(tmp_path) / "v1.safetensors")
    assert _base_name(FinetuneOptions(project=tmp_path, base="clip:x/y"), snapshot) == "clip:x/y"
