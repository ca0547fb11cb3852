"""``benchmarks/shapes_confusion.py``: where each class's pixels go, agreeing with the app-rule scores."""

import json

import pytest

from chimera_engine import load_segmenter
from chimera_trainer.shapes.app_rule import CLASSES, held_out_scores
from tests.trainer.benchmark_scripts import load_benchmark


def test_confusion_rows_match_the_app_rule_recall_and_cover_every_pixel(tmp_path):
    out = tmp_path / "confusion.json"
    report = load_benchmark("shapes_confusion").main(["shapes-chimera", "--images", "3", "--top", "13",
                                                      "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    model = report["models"]["shapes-chimera"]
    assert sum(model["pixels_labelled"].values()) == 3 * 64 * 64
    recall = held_out_scores(load_segmenter("shapes-chimera", device="cpu", precision="fp32"), 424242, 3)
    for truth, row in model["where_pixels_go"].items():
        assert set(row) <= set(CLASSES) and sum(row.values()) == pytest.approx(1, abs=0.01)
        assert row.get(truth, 0.0) == pytest.approx(recall["per_class_recall"][truth], abs=1e-3), truth
    cosine = model["text_cosine"]
    assert cosine["heart"]["star"] == cosine["star"]["heart"] and -1 <= cosine["heart"]["star"] <= 1
    assert "heart" not in cosine["heart"] and len(cosine) == 13
