"""benchmarks/clip_pretrain_step.py at a tiny size: it runs both forwards and reports what it timed."""

import pytest

from tests.trainer.benchmark_scripts import importable_benchmark, load_benchmark


def test_clip_pretrain_step_benchmark_times_both_forwards():
    report = load_benchmark("clip_pretrain_step").measure(rounds=1, steps=1, batch_size=8, scenes=16)
    steps = report["seconds_per_step"]
    assert set(steps) == {"open_clip", "engine"} and all(v > 0 for v in steps.values())
    # (seconds_per_step is rounded to 0.1 ms for the report; the derived numbers come from the exact medians)
    assert report["speedup"] == pytest.approx(steps["open_clip"] / steps["engine"], rel=0.1)
    assert report["bundle_minutes"]["engine"] == pytest.approx(steps["engine"] * report["bundle_steps"] / 60, abs=0.1)
    assert set(report["optimizer_seconds_per_step"]) == set(steps) and report["machine"]["torch"]


def test_machine_facts_record_the_cpu_time_the_hypervisor_took(monkeypatch):
    # On a virtual machine the host may run other guests on our cores ("steal"): it slows every timing
    # down and no load average shows it, so benchmarks report its share over their run.
    bench = importable_benchmark("engine_latency")
    monkeypatch.setattr(bench, "_CPU_TIMES_AT_START", [100, 0, 10, 500, 0, 0, 0, 40])
    monkeypatch.setattr(bench, "_cpu_times", lambda: [400, 0, 30, 600, 0, 0, 0, 240])  # 200 of 620 ticks stolen
    assert bench.machine_facts()["cpu_steal_share"] == pytest.approx(200 / 620, abs=1e-3)
    monkeypatch.setattr(bench, "_cpu_times", lambda: None)  # no /proc/stat (macOS, Windows)
    assert bench.machine_facts()["cpu_steal_share"] is None
