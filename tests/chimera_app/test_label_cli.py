"""chimera-label end to end: real files in, COCO + PNG masks out, checked with pycocotools."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from chimera_engine.formats.coco import validate_coco
from chimera_engine.formats.png_masks import read_index_png
from chimera_app.label_cli import main
from chimera_engine.class_names import split_class_list
from chimera_engine import load_image, load_segmenter

CLASSES = "red disc,green; grass,blue sky"


@pytest.fixture
def image_dir(tmp_path):
    root = tmp_path / "images"
    (root / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (120, 160)), ("nested/b.png", (90, 70))]:
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        img[: size[0] // 2] = (220, 20, 20)
        Image.fromarray(img).save(root / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 wide x 40 high, shown rotated: 40 wide x 80 high
    Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(root / "rotated.jpg", exif=exif)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def _run(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def test_split_class_list():
    assert split_class_list(" road, car;automobile ,,tree ") == ["road", "car;automobile", "tree"]


def test_prelabel_folder_to_coco_and_png(tmp_path, image_dir, tiny_checkpoint, one_torch_thread):
    out, masks = tmp_path / "coco.json", tmp_path / "masks"
    code, err = _run(image_dir, "--classes", CLASSES, "--model", tiny_checkpoint, "--out", out,
                     "--png-dir", masks, "--quiet", "--device", "cpu")
    assert code == 0, err
    assert "skipped corrupt.jpg" in err and "3 images" in err
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))
    data = json.loads(out.read_text())
    assert validate_coco(data, expected_classes=["red disc", "green", "blue sky"]) == []
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert [i["file_name"] for i in data["images"]] == ["a.png", "nested/b.png", "rotated.jpg"]
    ids = [a["id"] for a in data["annotations"]]
    assert min(ids) >= 1 and len(set(ids)) == len(ids)
    rotated = next(i for i in data["images"] if i["file_name"] == "rotated.jpg")
    assert (rotated["width"], rotated["height"]) == (40, 80)  # after EXIF rotation

    seg = load_segmenter(tiny_checkpoint, device="cpu", precision="auto")
    for img in data["images"]:
        png = read_index_png((masks / img["file_name"]).with_suffix(".png"))
        assert png.shape == (img["height"], img["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        rebuilt = np.zeros_like(png)
        for ann in anns:
            m = coco.annToMask(ann).astype(bool)
            assert not (rebuilt[m] > 0).any()  # class masks are disjoint
            rebuilt[m] = ann["category_id"]
        np.testing.assert_array_equal(rebuilt, png)  # COCO == PNG, bit for bit
        seg.set_image(load_image(image_dir / img["file_name"]))
        expected = seg.segment(split_class_list(CLASSES)).labels + 1
        np.testing.assert_array_equal(png, expected)  # and both are what the engine predicted

    results = [dict(a, score=1.0) for a in data["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(results), iouType="segm")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    assert json.loads((masks / "classes.json").read_text())["classes"][1]["name"] == "green"


def test_min_confidence_leaves_pixels_without_annotation(tmp_path, image_dir, tiny_checkpoint):
    out = tmp_path / "coco.json"
    code, err = _run(image_dir, "--classes", CLASSES, "--model", tiny_checkpoint, "--out", out,
                     "--min-confidence", "0.6", "--quiet", "--device", "cpu")
    assert code == 0, err
    data = json.loads(out.read_text())
    for img in data["images"]:
        area = sum(a["area"] for a in data["annotations"] if a["image_id"] == img["id"])
        assert area < img["width"] * img["height"]


@pytest.mark.parametrize("classes, message", [("road,,Road", "classes 1 and 2"), (" , ", "empty")])
def test_bad_class_names_fail_before_any_work(tmp_path, image_dir, tiny_checkpoint, classes, message):
    code, err = _run(image_dir, "--classes", classes, "--model", tiny_checkpoint, "--out", tmp_path / "c.json")
    assert code != 0 and not (tmp_path / "c.json").exists()
    assert message in err or "required" in err


def test_bad_model_and_empty_folder_are_reported(tmp_path, image_dir):
    code, err = _run(image_dir, "--classes", "a", "--model", "nosuch-model", "--out", tmp_path / "c.json")
    assert code == 1 and "unknown model" in err
    (tmp_path / "empty").mkdir()
    code, err = _run(tmp_path / "empty", "--classes", "a", "--model", "clip:chimera-tiny/random",
                     "--out", tmp_path / "c.json")
    assert code == 1 and "no images found" in err
    code, err = _run("--download", "clip:ViT-B-16/openai")
    assert code == 1 and "offline" in err


def test_png_name_collisions_are_refused(tmp_path, image_dir, tiny_checkpoint):
    Image.new("RGB", (20, 20)).save(image_dir / "a.jpg")  # a.png exists: both would write a.png
    code, err = _run(image_dir, "--classes", "x", "--model", tiny_checkpoint, "--out", tmp_path / "c.json",
                     "--png-dir", tmp_path / "m")
    assert code == 1 and "a.jpg" in err and "a.png" in err


def test_torchrun_two_processes_merge_into_the_same_file(tmp_path, image_dir, tiny_checkpoint):
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    args = [str(image_dir), "--classes", CLASSES, "--model", tiny_checkpoint, "--quiet", "--device", "cpu"]
    assert _run(*args, "--out", single)[0] == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", "-m", "chimera_app.label_cli", *args, "--out", str(double)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads(double.read_text())
    assert a["images"] == b["images"] and a["categories"] == b["categories"]
    # Each rank batches only its own images, so convolutions run on other batch shapes and kernels than the
    # single process's: near-tied pixels of a random-weight model may flip. The merge must still give every
    # image once, with the same ids, and the same labels on all but a sliver of pixels.
    for coco in (a, b):  # no annotation twice, none for an image the file does not list
        ids = [ann["id"] for ann in coco["annotations"]]
        assert len(ids) == len(set(ids))
        assert {ann["image_id"] for ann in coco["annotations"]} <= {image["id"] for image in coco["images"]}
    one, two = _label_maps(single), _label_maps(double)
    assert one.keys() == two.keys() == {image["id"] for image in a["images"]}
    for image_id, labels in one.items():
        assert (labels == two[image_id]).mean() > 0.99, image_id


def _label_maps(path):
    coco = COCO(str(path))
    maps = {}
    for image_id, image in coco.imgs.items():
        labels = np.zeros((image["height"], image["width"]), np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            labels[coco.annToMask(ann) > 0] = ann["category_id"]
        maps[image_id] = labels
    return maps


def test_training_free_options_reach_the_segmenter(tmp_path, image_dir, monkeypatch):
    import chimera_engine

    made = {}
    real = chimera_engine.load_segmenter

    def spy(name, **kwargs):
        made.update(kwargs, name=name)
        return real(name, **kwargs)

    monkeypatch.setattr(chimera_engine, "load_segmenter", spy)
    out = tmp_path / "c.json"
    code, err = _run(image_dir, "--classes", "red disc,bed", "--model", "clip:chimera-tiny/random+sclip",
                     "--out", out, "--background", "stuff", "--refine", "3", "--min-area", "0.05",
                     "--short-side", "96", "--window", "64", "--stride", "32", "--device", "cpu",
                     "--precision", "fp32", "--quiet")
    assert code == 0, err
    assert made["name"] == "clip:chimera-tiny/random+sclip"
    assert (made["refine"], made["min_area"]) == (3, 0.05)
    assert made["inference"] == {"short_side": 96, "window": 64, "stride": 32}
    assert validate_coco(json.loads(out.read_text()), expected_classes=["red disc", "bed"]) == []


def test_without_refine_the_models_own_pamr_default_applies(tmp_path, image_dir, monkeypatch):
    import chimera_engine

    made = {}
    real = chimera_engine.load_segmenter

    def spy(name, **kwargs):
        made.update(kwargs)
        segmenter = real(name, **kwargs)
        made["applied"] = segmenter.refine
        return segmenter

    monkeypatch.setattr(chimera_engine, "load_segmenter", spy)
    code, err = _run(image_dir, "--classes", "circle,star", "--model", "shapes-chimera", "--out",
                     tmp_path / "c.json", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert made["refine"] is None and made["applied"] == 10  # the bundled shapes models ask for 10 steps


@pytest.mark.parametrize("flags", [["--refine", "-1"], ["--min-area", "1.5"], ["--window", "8"],
                                   ["--window", "64", "--stride", "96"]])
def test_bad_training_free_options_are_usage_errors(tmp_path, image_dir, flags):
    with pytest.raises(SystemExit) as stop:
        _run(image_dir, "--classes", "a", "--out", tmp_path / "c.json", *flags)
    assert stop.value.code == 2


def test_class_list_errors_exit_2_and_a_non_utf8_classes_file_is_reported(tmp_path, image_dir):
    code, err = _run(image_dir, "--classes", "road,Road", "--out", tmp_path / "c.json")
    assert code == 2 and "road" in err.lower()
    bad = tmp_path / "classes.txt"
    bad.write_bytes(b"road\n\xff\xfe car\n")
    code, err = _run(image_dir, "--classes-file", bad, "--out", tmp_path / "c.json")
    assert code == 2 and "not UTF-8" in err and "Traceback" not in err


def test_a_full_png_dir_keeps_the_coco_file(tmp_path, image_dir, tiny_checkpoint, monkeypatch):
    import errno

    import chimera_app.batch_label as batch_label

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_label, "write_index_png", full_disk)
    out = tmp_path / "c.json"
    code, err = _run(image_dir, "--classes", CLASSES, "--model", tiny_checkpoint, "--out", out,
                     "--png-dir", tmp_path / "masks", "--quiet", "--device", "cpu")
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    data = json.loads(out.read_text())  # every labelled image is in the COCO file all the same
    assert len(data["images"]) == 3 and validate_coco(data, expected_classes=["red disc", "green", "blue sky"]) == []


def test_a_full_disk_for_the_coco_file_is_a_message(tmp_path, image_dir, tiny_checkpoint, monkeypatch):
    import errno

    import chimera_app.label_cli as label_cli

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(label_cli, "write_coco", full_disk)
    code, err = _run(image_dir, "--classes", CLASSES, "--model", tiny_checkpoint, "--out", tmp_path / "c.json",
                     "--quiet", "--device", "cpu")
    assert code == 1 and "No space left on device" in err and "nothing written" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_cuda_device_is_a_usage_error(tmp_path, image_dir):
    code, err = _run(image_dir, "--classes", "a", "--out", tmp_path / "c.json", "--device", "cuda")
    assert code == 2 and "no CUDA" in err


def _sigint_disguised_as(error: Exception):
    """A stand-in for library code that Ctrl+C stopped: the real SIGINT arrives, through chimera-label's
    handler, and the library reports another error (seen: torch inside safetensors' load)."""
    def stopped(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise error from None
        raise AssertionError("SIGINT did not raise")
    return stopped


def test_an_interrupt_disguised_as_a_damaged_model_is_the_interrupt(tmp_path, image_dir, tiny_checkpoint,
                                                                   monkeypatch):
    import chimera_engine
    from chimera_engine import CheckpointError

    real = chimera_engine.load_segmenter
    monkeypatch.setattr(chimera_engine, "load_segmenter",
                        _sigint_disguised_as(CheckpointError("the model file is damaged: could not determine the shape")))
    out = tmp_path / "c.json"
    code, err = _run(image_dir, "--classes", CLASSES, "--model", tiny_checkpoint, "--out", out, "--quiet",
                     "--device", "cpu")
    assert code == 130 and "interrupted; nothing written" in err and "damaged" not in err and not out.exists()
    monkeypatch.setattr(chimera_engine, "load_segmenter", real)  # the next run: a failure is a failure again
    code, err = _run(image_dir, "--classes", CLASSES, "--model", tmp_path / "absent.safetensors", "--out", out,
                     "--quiet", "--device", "cpu")
    assert code == 1 and "interrupted" not in err


def test_an_interrupt_while_encoding_is_not_an_image_failure(tmp_path, image_dir, tiny_checkpoint, monkeypatch):
    """Without the rule the Prelabeler records "skipped a.png: <the disguised error>", labels the rest and exits 0."""
    from chimera_engine.segmenter import Segmenter

    monkeypatch.setattr(Segmenter, "encode", _sigint_disguised_as(RuntimeError("could not determine the shape")))
    code, err = _run("--project", image_dir, "--classes", CLASSES, "--model", tiny_checkpoint, "--quiet",
                     "--device", "cpu")
    assert code == 130 and "interrupted; 0 images were saved" in err and "skipped" not in err, err
    # After the run, in the same process (the app's pre-labelling, a test suite), a bad image is a bad
    # image again, not a Ctrl+C: this once stopped the suite with a KeyboardInterrupt.
    monkeypatch.undo()
    from chimera_app.service.prelabel import Prelabeler

    run = Prelabeler([("corrupt.jpg", image_dir / "corrupt.jpg")], ["red disc"])
    (result,) = run.results(load_segmenter(str(tiny_checkpoint), device="cpu"))
    assert not result.ok and result.kind == "image"
