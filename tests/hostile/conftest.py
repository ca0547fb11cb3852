"""Shared pieces of the hostile-input corpus: a full disk on demand, crafted checkpoints, a project.

Every case builds its bad input here, in the test, from a few bytes: nothing is downloaded and no
model bigger than the tiny random CLIP (tests/conftest.py) is built.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def enospc(*_args, **_kwargs):
    """A stand-in for os.write on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_traceback(stderr: str) -> bool:
    return "Traceback (most recent call last)" not in stderr


def run_python(code: str, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter at the repository root (offline, quiet threads)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=full_env)


def console_script(name: str) -> str:
    """The installed console script (not a pyenv shim): the real entry point users run."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


# ----------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A valid tiny dense-CLIP checkpoint (random weights): the base every crafted one starts from."""
    import torch

    from chimera_engine.models import build_model, save_model

    torch.manual_seed(3)
    return save_model(build_model("clip:chimera-tiny/random"), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def craft_checkpoint(base: Path, out: Path, edit=None, tensors_edit=None, raw_meta: str | None = None) -> Path:
    """A copy of ``base`` with its metadata edited by ``edit(meta)`` (or replaced by ``raw_meta``)."""
    from safetensors.torch import load_file, save

    from chimera_engine.checkpoints import METADATA_KEY, read_metadata

    tensors = load_file(str(base))
    meta = read_metadata(base)
    if edit is not None:
        edit(meta)
    if tensors_edit is not None:
        tensors_edit(tensors)
    text = raw_meta if raw_meta is not None else json.dumps(meta)  # NaN/Infinity kept as JSON allows
    out.write_bytes(save(tensors, metadata={METADATA_KEY: text}))
    return out


class Evil:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil_pickle(path: Path, marker: Path) -> Path:
    import pickle

    path.write_bytes(pickle.dumps({"visual.proj": Evil(marker)}))
    return path


# --------------------------------------------------------------------------------------- project
def write_png(path: Path, height: int, width: int, value: int = 80) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    write_png(root / "a.png", 10, 20)
    write_png(root / "b.png", 12, 16)
    return root


def labelled(project, rel: str, value: int = 1):
    """Give ``rel`` a saved, human-verified label map (the class 'thing'): the work a hostile
    input must never destroy. Returns the labels saved."""
    from chimera_app.project import ImageState

    if project.classes.find("thing") is None:
        project.classes.add("thing")
    doc = project.load_document(rel)
    doc.labels[2:5, 3:9] = value
    doc.provenance[2:5, 3:9] = 2
    doc.state = ImageState.VERIFIED
    project.save_document(rel, doc)
    return doc.labels.copy()
