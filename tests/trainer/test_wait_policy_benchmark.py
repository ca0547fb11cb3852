"""``benchmarks/wait_policy.py`` at tiny sizes: each child trains under the policy it names."""

import json

import pytest

from tests.trainer.benchmark_scripts import load_benchmark


@pytest.mark.parametrize("stage, args, variant", [
    ("clip", ["--sizes", "40", "--steps", "60", "--batch-size", "8"], "40px"),
    ("chimera", ["--steps", "8", "--skip", "3"], "64px"),
    ("infer", ["--sizes", "96", "--steps", "8", "--skip", "3"], "96px"),
])
def test_each_policy_is_in_force_in_its_child_and_timed(tmp_path, stage, args, variant):
    out = tmp_path / "policy.json"
    assert load_benchmark("wait_policy").main(["--stage", stage, "--rounds", "1", *args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["stage"] == stage and report["steps_timed"] == (10 if stage == "clip" else 5)
    assert (report.get("model") == "shapes-chimera") == (stage == "infer")
    assert set(report["variants"]) == {f"{variant}_PASSIVE", f"{variant}_ACTIVE", f"{variant}_default"}
    runs = {name.split("_")[1]: v["runs"][0] for name, v in report["variants"].items()}
    assert {policy: run["omp_wait_policy_at_start"] for policy, run in runs.items()} == {
        "PASSIVE": "PASSIVE", "ACTIVE": "ACTIVE", "default": None}
    for run in runs.values():
        assert run["seconds_per_step"] > 0 and 0 <= run["idle_share"] <= 1
        assert (run["threads"] is not None) == (stage == "infer")  # the engine's thread budget, reported
    if stage == "infer" and max(runs["PASSIVE"]["threads"]) == 1:
        return  # the budget gave torch one thread (a busy or 1-core machine): no barrier to sleep at
    # Sleeping at every barrier shows as context switches; spinning threads barely switch.
    assert runs["PASSIVE"]["sleeps_per_step"] > 5 * max(runs["ACTIVE"]["sleeps_per_step"], 1)
