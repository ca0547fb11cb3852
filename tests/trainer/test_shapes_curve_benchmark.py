"""``benchmarks/shapes_curve.py`` evaluates one schedule in segments and resumes between them (tiny run)."""

import json

from tests.trainer.benchmark_scripts import load_benchmark


def test_curve_has_one_point_per_segment_of_one_schedule(tmp_path):
    bench = load_benchmark("shapes_curve")
    report = bench.main(["--iterations", "4", "--every", "2", "--work", str(tmp_path), "--train-images", "24",
                         "--val-images", "6", "--set", "batch_size=4", "--set", "checkpoint_every=100"])
    assert [p["iteration"] for p in report["curve"]] == [2, 4]
    assert report["config"]["iterations"] == 4 and report["config"]["batch_size"] == 4
    assert all(0 <= p["hIoU"] <= 100 and "background" in p["per_class_iou"] for p in report["curve"])
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in metrics if "iter" in m][-1] == 4  # one run, resumed: iterations 1-4 once
    assert json.loads((tmp_path / "curve.json").read_text())["curve"] == report["curve"]
    assert (tmp_path / "model.safetensors").is_file()
