"""``benchmarks/shapes_zss.py`` runs end to end and resumes (two-iteration smoke runs; no numbers judged)."""

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.trainer.benchmark_scripts import importable_benchmark as _importable
from tests.trainer.benchmark_scripts import load_benchmark as _load

ROOT = Path(__file__).parents[2]
TINY = ["--iterations", "2", "--train-images", "24", "--val-images", "6"]


def load_benchmark():
    return _load("shapes_zss")


def importable_benchmark():
    return _importable("shapes_zss")


def test_shapes_zss_trains_evaluates_and_tabulates(capsys):
    bench = load_benchmark()
    rows = ["dense CLIP (training-free)", "Chimera-Seg (full, CSH depth N=2)", "full − SAM"]
    report = bench.main(["--quick", *TINY, "--rows", *rows])
    assert list(report["rows"]) == rows and report["seeds"] == [0] and report["iterations"] == 2
    assert report["complete"]
    for row in report["rows"].values():
        assert {"mIoU_seen", "mIoU_seen_shapes", "mIoU_unseen", "hIoU", "background_kept"} <= set(row)
        assert all(0 <= v["mean"] <= 100 for k, v in row.items() if k != "seeds")
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in rows)


def test_runs_are_stored_one_by_one_and_resumed(tmp_path):
    bench = load_benchmark()
    results = tmp_path / "table.json"
    args = [*TINY, "--seeds", "0", "--rows", "full − SGD", "full − SAM", "--results", str(results)]
    first = bench.main([*args, "--max-runs", "1"])
    stored = json.loads(results.read_text())
    assert list(stored["runs"]) == ["full − SGD | seed 0"] and not first["complete"]
    second = bench.main(args)
    stored = json.loads(results.read_text())
    assert set(stored["runs"]) == {"full − SGD | seed 0", "full − SAM | seed 0"} and second["complete"]
    with pytest.raises(SystemExit):  # other settings are never mixed into the same table
        bench.main(["--iterations", "3", *TINY[2:], "--seeds", "0", "--rows", "full − SGD", "--results", str(results)])


def test_shapes_zss_rejects_unknown_rows():
    with pytest.raises(SystemExit):
        load_benchmark().main(["--rows", "no such row"])


def test_a_partial_table_has_every_row_once_before_any_row_twice(tmp_path):
    bench = load_benchmark()
    results = tmp_path / "table.json"
    bench.main([*TINY, "--seeds", "0", "1", "--rows", "full − SGD", "full − SAM", "--results", str(results),
                "--max-runs", "2"])
    assert list(json.loads(results.read_text())["runs"]) == ["full − SGD | seed 0", "full − SAM | seed 0"]


def test_recipe_changes_reach_training_and_are_part_of_the_settings(tmp_path, monkeypatch):
    bench = load_benchmark()
    seen = []

    class Stop(Exception):
        pass

    def fake_train(cfg, *args, **kwargs):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(bench, "train", fake_train)
    results = tmp_path / "table.json"
    with pytest.raises(Stop):
        bench.main([*TINY, "--seeds", "0", "--rows", "full − SAM", "--results", str(results),
                    "--set", "tau=0.03", "--set", "sam_weight=0.5"])
    assert seen[0].tau == 0.03 and seen[0].sam_weight == 0.0  # the row's own change wins over --set
    monkeypatch.undo()
    bench = load_benchmark()
    bench.main([*TINY, "--seeds", "0", "--rows", "full − SAM", "--results", str(results), "--set", "tau=0.03"])
    assert json.loads(results.read_text())["settings"]["recipe"]["tau"] == 0.03
    with pytest.raises(SystemExit):  # a table made with another recipe is not extended
        bench.main([*TINY, "--seeds", "0", "--rows", "full − SAM", "--results", str(results)])


def test_jobs_train_runs_in_processes_of_their_own_and_store_each(tmp_path):
    bench = importable_benchmark()
    results = tmp_path / "table.json"
    rows = ["full − SGD", "full − SAM", "CSH depth N=1"]
    report = bench.main([*TINY, "--seeds", "0", "--rows", *rows, "--results", str(results), "--jobs", "2"])
    runs = json.loads(results.read_text())["runs"]
    assert set(runs) == {f"{row} | seed 0" for row in rows} and report["complete"]
    assert all(run["jobs"] == 2 and 0 <= run["hIoU"] <= 1 for run in runs.values())


def test_a_failed_job_is_reported_and_the_other_jobs_results_are_kept(tmp_path):
    bench = importable_benchmark()
    from chimera_trainer.bundle import SIZE
    from chimera_trainer.shapes import write_dataset

    good = tmp_path / "shapes"
    write_dataset(good / "val", 4, seed=3, size=SIZE)
    clip = bench.main.__globals__["bundled_model_path"]("shapes-clip")
    dense = ("dense CLIP (training-free)", None)
    plan = [("broken", (*dense, tmp_path / "missing", f"shapes-tiny/{clip}", 0, 2, tmp_path / "w0", [])),
            ("fine", (*dense, good, f"shapes-tiny/{clip}", 0, 2, tmp_path / "w1", []))]
    recorded = {}
    with pytest.raises(SystemExit, match="broken"):
        bench.run_all(plan, 2, tmp_path, lambda key, result, seconds: recorded.setdefault(key, result))
    assert list(recorded) == ["fine"] and 0 <= recorded["fine"]["hIoU"] <= 1


def test_the_clip_is_identified_by_its_weights_not_its_metadata(tmp_path):
    """Rewriting a checkpoint's metadata (its PAMR default) keeps the stored runs; a changed weight does not."""
    import torch
    from safetensors.torch import save_file

    bench = load_benchmark()
    weights = {"proj": torch.arange(6, dtype=torch.float16).reshape(2, 3), "scale": torch.tensor(2.0)}
    save_file(weights, str(tmp_path / "a.safetensors"), metadata={"refine": "0"})
    save_file(weights, str(tmp_path / "b.safetensors"), metadata={"refine": "10"})
    save_file({**weights, "scale": torch.tensor(2.5)}, str(tmp_path / "c.safetensors"), metadata={"refine": "0"})
    digest = {name: bench.weights_digest(tmp_path / f"{name}.safetensors") for name in "abc"}
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "b.safetensors").read_bytes()
    assert digest["a"] == digest["b"] != digest["c"]


def _readme_rerun_command():
    """The README's command that reruns the committed ablation table: (git commit, path in it, argv)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"`[^`]*git show (\w+):(\S+) > (\S+) && python benchmarks/shapes_zss\.py ([^`]*)`", readme)
    assert len(found) == 1, "the README names one command that reruns the committed ablation table"
    commit, path_in_git, local_copy, args = found[0]
    argv = shlex.split(args)
    assert argv[argv.index("--clip") + 1] == f"shapes-tiny/{local_copy}"
    return commit, path_in_git, argv


def _committed_settings():
    return json.loads((ROOT / "benchmarks/results/shapes_zss.json").read_text())["settings"]


def test_the_readmes_rerun_command_resumes_the_committed_table():
    """A recipe key added later (twin_count at stop 32) silently made the README's command ask for --fresh."""
    _, _, argv = _readme_rerun_command()
    argv[argv.index("--clip") + 1] = "shapes-tiny/no-such-dir/shapes-clip.safetensors"  # the CLIP: next test
    settings = load_benchmark().settings_of(argv)
    committed = _committed_settings()
    assert set(settings) == set(committed)
    assert {k: v for k, v in settings.items() if k != "clip"} == {k: v for k, v in committed.items() if k != "clip"}


def test_the_readmes_rerun_command_names_the_committed_tables_clip(tmp_path):
    commit, path_in_git, argv = _readme_rerun_command()
    try:
        shown = subprocess.run(["git", "show", f"{commit}:{path_in_git}"], cwd=ROOT, capture_output=True)
    except FileNotFoundError:
        pytest.skip("no git to read the table's CLIP from history; the recipe half above still runs")
    if shown.returncode != 0:  # a shallow clone lacks the commit; the recipe half above still runs
        pytest.skip(f"git history without {commit}: {shown.stderr.decode(errors='replace').strip()[:200]}")
    clip = tmp_path / Path(argv[argv.index("--clip") + 1]).name
    clip.write_bytes(shown.stdout)
    argv[argv.index("--clip") + 1] = f"shapes-tiny/{clip}"
    assert load_benchmark().settings_of(argv)["clip"] == _committed_settings()["clip"]
