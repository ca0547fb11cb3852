"""``benchmarks/shapes_zss.py`` runs end to end (a two-iteration smoke run; no numbers are judged)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "shapes_zss.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("shapes_zss", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shapes_zss_trains_evaluates_and_tabulates(capsys):
    bench = load_benchmark()
    rows = ["dense CLIP (training-free)", "Chimera-Seg (full)", "full − SAM"]
    report = bench.main(["--quick", "--iterations", "2", "--train-images", "24", "--val-images", "6",
                         "--rows", *rows])
    assert list(report["rows"]) == rows and report["seeds"] == [0] and report["iterations"] == 2
    for row in report["rows"].values():
        assert set(row) == {"mIoU_seen", "mIoU_unseen", "hIoU"}
        assert all(0 <= v["mean"] <= 100 for v in row.values())
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in rows)


def test_shapes_zss_rejects_unknown_rows():
    with pytest.raises(SystemExit):
        load_benchmark().main(["--rows", "no such row"])
