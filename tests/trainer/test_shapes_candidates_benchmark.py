"""``benchmarks/shapes_candidates.py`` scores models side by side the app's way (few images)."""

import json

import pytest

from tests.trainer.benchmark_scripts import load_benchmark


def test_candidates_are_scored_on_both_seeds_without_and_with_pamr_and_on_the_demo(tmp_path):
    out = tmp_path / "candidates.json"
    report = load_benchmark("shapes_candidates").main(
        ["shapes-chimera", "shapes-clip", "--labels", "trained", "training-free", "--images", "3", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["held_out_images"] == {"424242": 3, "2718": 3}
    trained, free = report["candidates"]["trained"], report["candidates"]["training-free"]
    for scores in (trained, free):
        assert {"424242_pamr", "2718_pamr", "424242_plain", "demo"} <= set(scores)
        assert 0 <= scores["424242_pamr"]["hIoU"] <= 1
        assert scores["demo"]["shapes"] == len(scores["demo"]["per_shape"]) >= 8  # 8 images, 2+ shapes each
        world = scores["demo_world"]  # images drawn like the demo's; its first images are the demo's own
        assert world["images"] == 3 and world["shapes"] == sum(n for _, n in world["right_by_class"].values())
        assert world["shapes_right_by_majority"] == sum(r for r, _ in world["right_by_class"].values())
        first_three = [(t, p) for i, t, p in scores["demo"]["per_shape"] if i < 3]
        assert world["shapes"] == len(first_three)
        assert world["shapes_right_by_majority"] == sum(t == p for t, p in first_three)
    # The trained model leaves the demo's background unlabeled; training-free dense CLIP paints it.
    assert trained["demo"]["background_kept"] > 0.9 > free["demo"]["background_kept"], (trained["demo"], free["demo"])
    assert trained["training"]["body"] == "shapes-r18-l3" and free["training"] is None


def test_one_label_per_model():
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("shapes_candidates").main(["shapes-chimera", "--labels", "a", "b"])
    assert exit_info.value.code == 2
