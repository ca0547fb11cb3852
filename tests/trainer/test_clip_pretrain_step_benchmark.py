"""benchmarks/clip_pretrain_step.py at a tiny size: it runs both forwards and reports what it timed."""

import pytest

from tests.trainer.benchmark_scripts import load_benchmark


def test_clip_pretrain_step_benchmark_times_both_forwards():
    report = load_benchmark("clip_pretrain_step").measure(rounds=1, steps=1, batch_size=8, scenes=16)
    steps = report["seconds_per_step"]
    assert set(steps) == {"open_clip", "engine"} and all(v > 0 for v in steps.values())
    # (seconds_per_step is rounded to 0.1 ms for the report; the derived numbers come from the exact medians)
    assert report["speedup"] == pytest.approx(steps["open_clip"] / steps["engine"], rel=0.1)
    assert report["bundle_minutes"]["engine"] == pytest.approx(steps["engine"] * report["bundle_steps"] / 60, abs=0.1)
    assert set(report["optimizer_seconds_per_step"]) == set(steps) and report["machine"]["torch"]
