"""``benchmarks/clip_wait_policy.py`` at a tiny size: each child trains under the policy it names."""

import json

from tests.trainer.benchmark_scripts import load_benchmark


def test_each_policy_is_in_force_in_its_child_and_timed(tmp_path, capsys):
    out = tmp_path / "policy.json"
    assert load_benchmark("clip_wait_policy").main(["--sizes", "40", "--rounds", "1", "--steps", "60",
                                                    "--batch-size", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"40px_PASSIVE", "40px_ACTIVE", "40px_default"}
    runs = {name: v["runs"][0] for name, v in report["variants"].items()}
    assert runs["40px_PASSIVE"]["omp_wait_policy_at_start"] == "PASSIVE"
    assert runs["40px_ACTIVE"]["omp_wait_policy_at_start"] == "ACTIVE"
    assert runs["40px_default"]["omp_wait_policy_at_start"] is None
    for run in runs.values():
        assert run["seconds_per_step"] > 0 and 0 <= run["idle_share"] <= 1
    # Sleeping at every barrier shows as context switches; spinning threads barely switch.
    assert runs["40px_PASSIVE"]["sleeps_per_step"] > 5 * max(runs["40px_ACTIVE"]["sleeps_per_step"], 1)
