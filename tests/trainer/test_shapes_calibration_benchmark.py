"""``benchmarks/shapes_calibration.py`` scores the bundled Chimera-Seg at every γ (few images)."""

from tests.trainer.benchmark_scripts import load_benchmark as _load


def load_benchmark():
    return _load("shapes_calibration")


def test_calibration_reaches_scoring_and_the_held_out_seed_reports_the_chosen_gamma():
    report = load_benchmark().main(["--images", "8"])
    grid = report["choose"]["by_gamma"]
    assert set(grid) == {str(g) for g in load_benchmark().GAMMAS}
    # γ is subtracted from the seen shapes only: the largest takes seen pixels away (30 % → 21 % on 60 images)
    assert grid["0.4"]["seen_shapes"] < grid["0.0"]["seen_shapes"], grid
    assert report["held_out_at_chosen"] == report["held_out"]["by_gamma"][str(report["chosen_gamma"])]
    assert all(0 <= v <= 1 for row in grid.values() for v in row.values())


def test_pamr_scores_with_the_models_own_refinement(monkeypatch):
    bench = load_benchmark()
    asked = []
    real = bench.load_segmenter

    def spy(*args, **kwargs):
        segmenter = real(*args, **kwargs)
        segment = segmenter.segment

        def recorded(*a, **kw):
            asked.append(kw.get("refine", "absent"))
            return segment(*a, **kw)

        segmenter.segment = recorded
        return segmenter

    monkeypatch.setattr(bench, "load_segmenter", spy)
    report = bench.main(["--images", "2", "--pamr"])
    assert report["pamr"] is True and set(asked) == {None}  # None: the checkpoint's PAMR default applies
    asked.clear()
    assert bench.main(["--images", "2"])["pamr"] is False and set(asked) == {0}
