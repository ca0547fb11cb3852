"""Indexed PNG masks: palette PNGs read back as indices, 16-bit beyond 255 classes, class list."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from chimera_engine.formats.png_masks import read_index_png, write_class_list, write_index_png
from chimera_engine.formats.palette import class_color, palette


def test_voc_palette():
    assert class_color(0) == (0, 0, 0)
    assert [class_color(k) for k in (1, 2, 3, 15)] == [(128, 0, 0), (0, 128, 0), (128, 128, 0), (192, 128, 128)]
    table = palette(300)
    assert table.shape == (301, 3) and table.dtype == np.uint8
    assert all(tuple(table[k]) == class_color(k) for k in range(301))
    assert len({class_color(k) for k in range(4096)}) == 4096  # distinct colours
    with pytest.raises(ValueError):
        class_color(-1)


def test_palette_png_reads_back_as_indices_with_class_colours(tmp_path):
    lm = (np.arange(40 * 30).reshape(30, 40) % 21).astype(np.int32)
    path = tmp_path / "masks" / "a.png"
    write_index_png(path, lm)
    with Image.open(path) as image:
        assert image.mode == "P"
        pal = np.array(image.getpalette()[: 21 * 3], np.uint8).reshape(21, 3)
        rgb = np.array(image.convert("RGB"))
    assert np.array_equal(pal, palette(20))
    assert np.array_equal(rgb, palette(20)[lm])  # a viewer shows class colours
    back = read_index_png(path)
    assert back.dtype == np.uint8 and np.array_equal(back, lm)


def test_custom_colours_go_into_the_palette(tmp_path):
    colors = np.array([[0, 0, 0], [1, 2, 3], [250, 251, 252]], np.uint8)
    write_index_png(tmp_path / "c.png", np.array([[0, 1], [2, 3]], np.uint8), colors=colors)
    with Image.open(tmp_path / "c.png") as image:
        assert image.getpalette()[:12] == [0, 0, 0, 1, 2, 3, 250, 251, 252, *class_color(3)]


def test_300_classes_use_16_bit(tmp_path):
    lm = (np.arange(20 * 17).reshape(17, 20) % 301).astype(np.uint16)
    write_index_png(tmp_path / "big.png", lm)
    with Image.open(tmp_path / "big.png") as image:
        assert image.mode.startswith("I")  # 16-bit grayscale, not palette
    back = read_index_png(tmp_path / "big.png")
    assert back.dtype == np.uint16 and np.array_equal(back, lm)
    other_reader = cv2.imread(str(tmp_path / "big.png"), cv2.IMREAD_UNCHANGED)
    assert other_reader.dtype == np.uint16 and np.array_equal(other_reader, lm)  # a true 16-bit PNG


def test_num_classes_fixes_the_format_for_a_whole_dataset(tmp_path):
    small = np.ones((3, 3), np.uint8)  # values fit 8 bits, but the dataset has 300 classes
    write_index_png(tmp_path / "s.png", small, num_classes=300)
    with Image.open(tmp_path / "s.png") as image:
        assert image.mode.startswith("I")
    assert np.array_equal(read_index_png(tmp_path / "s.png"), small)
    with pytest.raises(ValueError):
        write_index_png(tmp_path / "x.png", np.full((2, 2), 256), num_classes=20)


@pytest.mark.parametrize("bad", [np.array([[-1]]), np.array([[70000]]), np.zeros((2, 2), np.float32),
                                 np.zeros((2, 2, 3), np.uint8)])
def test_rejects_bad_maps(tmp_path, bad):
    with pytest.raises(ValueError):
        write_index_png(tmp_path / "bad.png", bad)
    assert not list(tmp_path.iterdir())


def test_read_refuses_colour_masks(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="RGB"):
        read_index_png(tmp_path / "rgb.png")


def test_class_list(tmp_path):
    path = write_class_list(tmp_path / "out", ["road", "café"])
    assert path == tmp_path / "out" / "classes.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "unlabeled_index": 0,
        "classes": [{"index": 1, "name": "road", "color": [128, 0, 0]},
                    {"index": 2, "name": "café", "color": [0, 128, 0]}]}
