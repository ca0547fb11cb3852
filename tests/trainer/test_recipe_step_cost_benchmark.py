"""``benchmarks/recipe_step_cost.py`` at a tiny schedule: each variant's child trains with its own keys."""

import json

import pytest

from tests.trainer.benchmark_scripts import load_benchmark


def test_each_variant_is_timed_with_its_keys_in_force(tmp_path, capsys):
    out = tmp_path / "cost.json"
    args = ["--variant", "twin_count=1", "--variant", "twin_count=2,twin_tau=0.1", "--rounds", "2",
            "--steps", "6", "--skip", "2", "--out", str(out)]
    assert load_benchmark("recipe_step_cost").main(args) == 0
    report = json.loads(out.read_text())
    # A different variant goes first each round, so a host that drifts touches both alike.
    order = [line.split(": ")[1] for line in capsys.readouterr().err.splitlines() if line.startswith("round")]
    assert order == ["twin_count=1", "twin_count=2,twin_tau=0.1", "twin_count=2,twin_tau=0.1", "twin_count=1"]
    assert report["steps_timed"] == 4 and report["rounds"] == 2 and report["machine"]["torch"]
    first, second = report["variants"]
    assert first["overrides"] == {"twin_count": 1} and second["overrides"] == {"twin_count": 2, "twin_tau": 0.1}
    assert first["ratio_to_first"] == 1.0
    for variant in report["variants"]:
        assert len(variant["runs"]) == 2
        for run in variant["runs"]:
            # The child's training config holds the variant's values (so its data had that many twins).
            assert run["overrides_in_force"] == variant["overrides"]
            assert run["omp_wait_policy_at_start"] == "ACTIVE" and run["seconds_per_step"] > 0
        assert variant["recipe_minutes_at_this_rate"] == pytest.approx(
            variant["median_seconds_per_step"] * report["recipe_iterations"] / 60, abs=0.06)


@pytest.mark.parametrize("variants, message", [
    (["twin_count=1"], "at least two"),
    (["twin_count=1", "twin_count=1"], "at least two"),
    (["twin_count=99", ""], "twin_count"),
    (["data_root=elsewhere", ""], "the bundle sets data_root"),
    (["no_such_key=1", ""], "no_such_key"),
])
def test_bad_variants_are_refused_before_any_run(capsys, variants, message):
    module = load_benchmark("recipe_step_cost")
    module.run_child = lambda *a, **k: pytest.fail("a child ran")
    with pytest.raises(SystemExit) as exit_:
        module.main([arg for v in variants for arg in ("--variant", v)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
