"""Test-wide settings: no network, no display, small thread pools, tiny shared models."""

import os
import tempfile

# Before anything imports huggingface_hub or Qt: never touch the network, render offscreen.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Precision verdicts and other caches go to a fresh folder, never the user's.
os.environ["CHIMERA_CACHE_DIR"] = tempfile.mkdtemp(prefix="chimera-test-cache-")
# Recent projects and the first-run guide's marker go to a fresh folder, never the user's.
os.environ["CHIMERA_CONFIG_DIR"] = tempfile.mkdtemp(prefix="chimera-test-config-")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_CLIP = "chimera-tiny"  # resources/clip_configs/chimera-tiny.json


@pytest.fixture(scope="session")
def tiny_clip():
    """A random-weight tiny CLIP (fp32, eval). Shared: tests must not modify it."""
    from chimera_engine.clip_loading import ClipSpec, create_clip

    torch.manual_seed(0)
    return create_clip(ClipSpec(TINY_CLIP, "random"))


@pytest.fixture
def tiny_segmenter():
    """A fresh dense-CLIP segmenter on the tiny random CLIP, CPU fp32."""
    from chimera_engine import load_segmenter

    torch.manual_seed(0)
    return load_segmenter(f"clip:{TINY_CLIP}/random", device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved random-weight tiny dense-CLIP checkpoint (path as str), for CLI tests."""
    from chimera_engine.models import build_model, save_model

    torch.manual_seed(11)
    return str(save_model(build_model(f"clip:{TINY_CLIP}/random"), tmp_path_factory.mktemp("m") / "tiny.safetensors"))


@pytest.fixture
def one_torch_thread():
    """The engine gives torch fewer threads while other processes are busy (threads.py), and a matmul
    split over another number of threads rounds differently: near-tie pixels (27 of 19,200, seen
    while training runs shared the cores) can flip. Comparing two runs bit for bit needs one count,
    so request this fixture before any that builds a segmenter (which reads the count then)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
