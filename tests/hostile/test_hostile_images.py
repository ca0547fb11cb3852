"""Hostile image files and folders: refused from their header with the limit named, never decoded
into gigabytes, never a hang on a pipe, never a crash on a link loop; skipped entries are reported."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from chimera_engine import images, limits
from chimera_engine.errors import ImageLoadError
from chimera_engine.images import find_images, load_image, read_image_size
from tests.hostile.conftest import write_png


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares width x height (its pixel data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def _bmp_declaring(path: Path, width: int, height: int) -> Path:
    pixels = b"\x00" * 64
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54) + info + pixels)
    return path


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(ImageLoadError) as caught:
        load_image(path)
    message = str(caught.value)
    assert str(path.name) in message and all(w in message for w in words), message
    return message


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    def refuse(*_args):
        raise AssertionError("pixels were decoded for an image refused by its header")
    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)


def test_png_declaring_400_megapixels_is_refused_from_its_header(tmp_path, no_pixel_decoding):
    path = _png_declaring(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 200
    message = _refused(path, "too large", "400 megapixels", "limit 200")
    with pytest.raises(limits.LimitError):  # also a LimitError: callers may catch either
        load_image(path)
    assert "megapixels" in message


def test_png_with_a_side_beyond_65535_is_refused(tmp_path, no_pixel_decoding):
    _refused(_png_declaring(tmp_path / "long.png", 70000, 10), "too large", "65535")


def test_bmp_declaring_900_megapixels_is_refused(tmp_path, no_pixel_decoding):
    _refused(_bmp_declaring(tmp_path / "bomb.bmp", 30000, 30000), "too large")


def test_read_image_size_refuses_nothing_but_reads_only_the_header(tmp_path, no_pixel_decoding):
    # The size is what a caller compares with the limit; reading it never decodes a pixel.
    assert read_image_size(_png_declaring(tmp_path / "bomb.png", 20000, 20000)) == (20000, 20000)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _refused(tmp_path / "empty.png", "empty")


def test_truncated_png(tmp_path):
    good = write_png(tmp_path / "good.png", 64, 64)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_image(tmp_path / "cut.png")


def test_random_bytes_named_jpg(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    _refused(tmp_path / "noise.jpg", "not a decodable image")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("just some notes\n")
    _refused(tmp_path / "notes.png", "not a decodable image")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "folder.png").mkdir()
    _refused(tmp_path / "folder.png", "is a directory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    _refused(tmp_path / "pipe.png", "not a regular file")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        read_image_size(tmp_path / "pipe.png")


def test_missing_file(tmp_path):
    _refused(tmp_path / "nowhere.png", "no such file")


def test_image_file_beyond_the_file_size_limit(tmp_path, monkeypatch):
    path = write_png(tmp_path / "big.png", 32, 32)
    monkeypatch.setattr(images, "MAX_IMAGE_FILE_BYTES", 100)
    _refused(path, "GiB")


def _links_or_skip(make):
    try:
        make()
    except (OSError, NotImplementedError):
        pytest.skip("cannot create symbolic links here")


def test_self_link_in_the_folder_is_reported_not_fatal(tmp_path):
    write_png(tmp_path / "a.png", 4, 4)
    _links_or_skip(lambda: os.symlink("self.png", tmp_path / "self.png"))
    found = find_images(tmp_path)
    assert [p.name for p in found] == ["a.png"]
    assert len(found.skipped) == 1 and "self.png" in found.skipped[0] and "loop" in found.skipped[0]


def test_dangling_link_is_reported(tmp_path, caplog):
    write_png(tmp_path / "a.png", 4, 4)
    _links_or_skip(lambda: os.symlink(tmp_path / "gone.png", tmp_path / "b.png"))
    found = find_images(tmp_path)
    assert [p.name for p in found] == ["a.png"]
    assert "b.png" in found.skipped[0] and "broken symbolic link" in found.skipped[0]
    assert "b.png" in caplog.text  # logged: a command line shows it without asking


def test_folder_link_loop_ends(tmp_path):
    write_png(tmp_path / "sub" / "a.png", 4, 4)
    _links_or_skip(lambda: os.symlink(tmp_path, tmp_path / "sub" / "up", target_is_directory=True))
    assert [p.name for p in find_images(tmp_path)] == ["a.png"]


def test_image_folder_that_is_a_link_to_itself(tmp_path):
    _links_or_skip(lambda: os.symlink(tmp_path / "loop", tmp_path / "loop"))
    with pytest.raises(ImageLoadError, match="cannot list images"):
        find_images(tmp_path / "loop")


def test_unreadable_sub_folder_is_reported(tmp_path, monkeypatch):
    write_png(tmp_path / "a.png", 4, 4)
    write_png(tmp_path / "locked" / "b.png", 4, 4)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = find_images(tmp_path)
    assert [p.name for p in found] == ["a.png"]
    assert "locked" in found.skipped[0] and "Permission denied" in found.skipped[0]


def test_a_file_given_as_the_image_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="not a folder"):
        find_images(write_png(tmp_path / "a.png", 4, 4))


def test_a_project_names_the_links_its_folder_walk_skipped(tmp_path):
    from chimera_app.project import Project

    write_png(tmp_path / "a.png", 4, 4)
    _links_or_skip(lambda: os.symlink(tmp_path / "gone.png", tmp_path / "b.png"))
    with Project.open(tmp_path) as project:
        assert project.images() == ["a.png"]
        assert len(project.skipped_images) == 1 and "b.png" in project.skipped_images[0]


def test_training_label_declaring_400_megapixels(tmp_path, no_pixel_decoding):
    from chimera_trainer.data.datasets import read_label

    with pytest.raises(ImageLoadError, match="too large"):
        read_label(_png_declaring(tmp_path / "label.png", 20000, 20000))


def test_shapes_class_file_with_numbers_for_names(tmp_path):
    from chimera_trainer.data.datasets import DatasetLayoutError, load_info

    (tmp_path / "split.json").write_text('{"classes": [1, 2], "unseen": []}')
    with pytest.raises(DatasetLayoutError, match="class names must be text"):
        load_info("shapes", tmp_path)


def test_opencv_decode_limit_is_ours_where_the_engine_loads_it_first(tmp_path):
    # The guard for files whose header Pillow cannot read: OpenCV's own limit, which it reads once
    # when it loads. A 250 MP header must be refused by OpenCV itself, before it allocates.
    import subprocess
    import sys

    from tests.hostile.conftest import REPO

    path = _png_declaring(tmp_path / "bomb.png", 25000, 10000)
    code = ("import sys, numpy as np, chimera_engine.images, cv2\n"
            "try:\n    cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_UNCHANGED)\n"
            "except cv2.error as exc:\n    print('refused' if 'pixels' in str(exc) else exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**env, "PYTHONPATH": str(REPO)})
    assert done.stdout.strip() == "refused", done.stdout + done.stderr
