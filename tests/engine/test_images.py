"""Tests of chimera_engine.images: decoding, conversion to 8-bit RGB, orientation, errors, listing."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from chimera_engine import images
from chimera_engine.errors import ChimeraError, ImageLoadError
from chimera_engine.images import IMAGE_SUFFIXES, find_images, load_image, read_image_size, to_rgb8


def _check_rgb8(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous


def _pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)


def _quadrants(height: int = 32, width: int = 48) -> np.ndarray:
    """An HxWx3 RGB pattern of flat blocks that no flip or rotation maps onto itself."""
    rgb = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 3
    rgb[:h, :w] = (255, 0, 0)
    rgb[:h, w:] = (0, 255, 0)
    rgb[h:, : 2 * w] = (0, 0, 255)
    rgb[h:, 2 * w :] = (255, 255, 0)
    return rgb


# ----------------------------------------------------------------------------- pixel formats


def test_png_keeps_exact_rgb_order(tmp_path: Path) -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out = load_image(tmp_path / "x.png")
    _check_rgb8(out, 2, 2)
    np.testing.assert_array_equal(out, rgb)


def test_gray_8bit_is_replicated(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = load_image(tmp_path / "g.png")
    _check_rgb8(out, 3, 4)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


_U16 = np.array([[0, 128, 129, 257], [32767, 32896, 65406, 65535]], np.uint16)


def test_gray_16bit_maps_full_range(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g16.png"), _U16)
    out = load_image(tmp_path / "g16.png")
    expected = np.array([[0, 0, 1, 1], [127, 128, 254, 255]], np.uint8)  # round(v / 257)
    np.testing.assert_array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))


def test_colour_16bit_maps_full_range_in_rgb_order(tmp_path: Path) -> None:
    rgb16 = np.stack([_U16, _U16[::-1], np.full_like(_U16, 514)], axis=2)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])  # cv2 writes BGR
    out = load_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out, np.rint(rgb16 / 257.0).astype(np.uint8))


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[200, 10, 30, 0], [200, 10, 30, 255], [0, 0, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # transparent -> white
    np.testing.assert_array_equal(out[0, 1], [200, 10, 30])  # opaque -> unchanged
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])  # half black over white


def test_gray_alpha_is_composited_over_white(tmp_path: Path) -> None:
    la = np.array([[[40, 0], [40, 255], [0, 128]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out[0], [[255] * 3, [40] * 3, [127] * 3])


def test_palette_png_matches_pillow(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), _pillow_rgb(tmp_path / "p.png"))


def test_cmyk_jpeg_matches_pillow(tmp_path: Path) -> None:
    cmyk = np.random.default_rng(1).integers(0, 256, (16, 24, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    _check_rgb8(out, 16, 24)
    assert np.abs(out.astype(int) - _pillow_rgb(tmp_path / "c.jpg")).max() <= 4  # lossy decoders


@pytest.mark.parametrize("channels", [1, 3])
def test_float32_tiff_is_clipped_unit_range(tmp_path: Path, channels: int) -> None:
    values = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]], np.float32)
    array = np.repeat(values[:, :, None], channels, axis=2) if channels == 3 else values
    assert cv2.imwrite(str(tmp_path / "f.tif"), array)
    out = load_image(tmp_path / "f.tif")
    expected = np.array([0, 0, 128, 255, 255, 0], np.uint8)
    np.testing.assert_array_equal(out[0], np.repeat(expected[:, None], 3, axis=1))
    assert read_image_size(tmp_path / "f.tif") == (6, 1)  # 3-channel float: Pillow cannot parse


def test_gif_loads(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (12, 18, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "g.gif")
    np.testing.assert_array_equal(load_image(tmp_path / "g.gif"), _pillow_rgb(tmp_path / "g.gif"))


def test_pillow_fallback_when_opencv_cannot_decode(tmp_path: Path, monkeypatch) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (12, 18, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "g.gif")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_quadrants()).save(tmp_path / "o6.png", exif=exif)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    np.testing.assert_array_equal(load_image(tmp_path / "g.gif"), _pillow_rgb(tmp_path / "g.gif"))
    np.testing.assert_array_equal(load_image(tmp_path / "o6.png"), _pillow_rgb(tmp_path / "o6.png"))


# ----------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_exif_transpose(
    tmp_path: Path, suffix: str, orientation: int
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{suffix}"
    options = {".jpg": {"quality": 100}, ".webp": {"lossless": True}}.get(suffix, {})
    Image.fromarray(_quadrants()).save(path, exif=exif, **options)
    out = load_image(path)
    expected = _pillow_rgb(path)
    upright_shape = (48, 32, 3) if orientation >= 5 else (32, 48, 3)
    assert out.shape == expected.shape == upright_shape
    assert out.flags.c_contiguous
    tolerance = 8 if suffix == ".jpg" else 0  # flat blocks: JPEG is near-lossless here
    assert np.abs(out.astype(int) - expected).max() <= tolerance
    assert read_image_size(path) == (upright_shape[1], upright_shape[0])


def test_rgba_tiff_is_not_premultiplied(tmp_path: Path) -> None:
    Image.fromarray(np.array([[[200, 0, 0, 255], [0, 0, 0, 0]]], np.uint8)).save(tmp_path / "a.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "a.tif")[0], [[200, 0, 0], [255] * 3])


# ----------------------------------------------------------------------------- errors


def _load_error(path: Path) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert isinstance(info.value, ChimeraError)
    assert path.name in str(info.value)
    return str(info.value)


def test_random_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(4).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert "not a decodable image" in _load_error(path)


@pytest.mark.parametrize("keep", [20, 60])  # inside the signature+IHDR; just after it
def test_truncated_png_is_refused(tmp_path: Path, keep: int) -> None:
    Image.fromarray(_quadrants()).save(tmp_path / "full.png")
    path = tmp_path / "cut.png"
    path.write_bytes((tmp_path / "full.png").read_bytes()[:keep])
    assert "not a decodable image" in _load_error(path)


def test_empty_missing_and_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    assert "file is empty" in _load_error(tmp_path / "empty.png")
    assert "no such file" in _load_error(tmp_path / "missing.png")
    assert "is a directory" in _load_error(tmp_path / "folder.png")
    with pytest.raises(ImageLoadError, match="missing.png"):
        read_image_size(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="bad.png"):
        read_image_size(tmp_path / "bad.png")


def test_non_ascii_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "données"
    folder.mkdir()
    path = folder / "ñandú_画像.png"
    Image.fromarray(_quadrants()).save(path)
    np.testing.assert_array_equal(load_image(path), _quadrants())
    assert read_image_size(str(path)) == (48, 32)


# ----------------------------------------------------------------------------- size guard


def test_big_image_loads(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    gray = np.zeros((7000, 9000), np.uint8)
    gray[-1, -1] = 255
    assert cv2.imwrite(str(path), gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert read_image_size(path) == (9000, 7000)
    out = load_image(path)
    _check_rgb8(out, 7000, 9000)
    assert out[-1, -1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_image_over_max_pixels_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(_quadrants()).save(tmp_path / "x.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # 48x32 = 1536 pixels

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded an image that is too large")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    assert "too large" in _load_error(tmp_path / "x.png")


def test_pillow_bomb_limit_is_ours_and_restored(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(_quadrants()).convert("P").save(tmp_path / "x.gif")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # someone else's, much lower, limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert load_image(tmp_path / "x.gif").shape == (32, 48, 3)
        monkeypatch.setattr(cv2, "imdecode", lambda *args: None)  # the Pillow path too
        assert load_image(tmp_path / "x.gif").shape == (32, 48, 3)
    assert Image.MAX_IMAGE_PIXELS == 100


# ----------------------------------------------------------------------------- to_rgb8


def test_to_rgb8_depths_and_layouts() -> None:
    np.testing.assert_array_equal(to_rgb8(np.array([[True, False]])), [[[255] * 3, [0] * 3]])
    int16 = np.array([[-32768, 32767]], np.int16)
    np.testing.assert_array_equal(to_rgb8(int16)[0, :, 0], [0, 255])
    floats = np.array([[np.nan, np.inf, -np.inf, 0.2]], np.float64)
    np.testing.assert_array_equal(to_rgb8(floats)[0, :, 0], [0, 255, 0, 51])
    rgb = np.array([[[1, 2, 3]]], np.uint8)
    np.testing.assert_array_equal(to_rgb8(rgb, "rgb"), rgb)
    np.testing.assert_array_equal(to_rgb8(rgb), rgb[:, :, ::-1])
    np.testing.assert_array_equal(to_rgb8(np.full((1, 1, 1), 7, np.uint8)), [[[7, 7, 7]]])
    with pytest.raises(ValueError):
        to_rgb8(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError):
        to_rgb8(rgb, "rgba")


# ----------------------------------------------------------------------------- find_images


def test_find_images_order_recursion_and_hidden(tmp_path: Path) -> None:
    for name in ["b.PNG", "a.jpg", "a/z.Tif", "a/deep/c.jpeg", "notes.txt", ".hidden.png",
                 ".chimera/masks/m.png", "a/.cache/x.png", "B/y.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()  # a folder with an image suffix is no image
    found = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "B/y.webp", "a.jpg", "a/deep/c.jpeg", "a/z.Tif", "b.PNG"]
    assert all(p.is_absolute() == tmp_path.is_absolute() for p in found)
    assert ".png" in IMAGE_SUFFIXES and all(s == s.lower() for s in IMAGE_SUFFIXES)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_find_images_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"x")
    try:
        os.symlink(tmp_path, tmp_path / "sub" / "loop", target_is_directory=True)
    except OSError:
        pytest.skip("cannot create symlinks here")
    assert [p.name for p in find_images(tmp_path)] == ["a.png"]


def test_find_images_needs_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(ImageLoadError, match="f.png"):
        find_images(tmp_path / "f.png")
    with pytest.raises(ImageLoadError, match="no such folder"):
        find_images(tmp_path / "nope")
