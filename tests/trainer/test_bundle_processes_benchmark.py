"""``benchmarks/bundle_processes.py`` times both trainings as one process and as two (tiny schedules)."""

from tests.trainer.benchmark_scripts import load_benchmark


def test_both_trainings_are_timed_both_ways_and_projected():
    report = load_benchmark("bundle_processes").main(["--clip-steps", "2", "--zss-iterations", "23",
                                                      "--batch-size", "16"])
    ways = list(load_benchmark("bundle_processes").WAYS)
    for stage in ("clip", "zss"):
        assert list(report[stage]) == ways
        assert all(report[stage][way]["seconds_per_step"] > 0 for way in ways)
    assert report["bundle_steps"] == {"clip": 12000, "zss": 6000}
    assert all(report["projected_training_minutes"][way] > 0 for way in ways)
    for stage in ("clip", "zss"):
        one, two = (report[stage][way]["seconds_per_step"] for way in ways)
        assert report["speedup"][stage] == round(one / two, 2) > 0
    assert "cpu_steal_share" in report["machine_before"]


def test_the_timed_commands_choose_their_wait_policy_as_from_a_shell(monkeypatch):
    import subprocess

    bench = load_benchmark("bundle_processes")
    seen = {}

    def fake_run(cmd, env, **kw):
        seen.update(env)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what this process's chimera_engine import sets
    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    bench.run(["chimera-train"], "2")
    assert "OMP_WAIT_POLICY" not in seen and seen["OMP_NUM_THREADS"] == "2"
