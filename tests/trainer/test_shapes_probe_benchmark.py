"""``benchmarks/shapes_probe.py`` probes a real Chimera-Seg model's features (the bundled one, few images)."""

import pytest

from tests.trainer.benchmark_scripts import load_benchmark as _load


def load_benchmark():
    return _load("shapes_probe")


def test_probe_reports_per_class_token_accuracy_for_head_body_and_text():
    report = load_benchmark().main(["--train-images", "40", "--val-images", "20"])
    for key in ("head_linear_probe", "body_linear_probe", "head_text_classifier"):
        assert report[key]["background"] > 50, report[key]  # background is most tokens and easy
        assert all(0 <= v <= 100 for v in report[key].values())
    assert report["head_text_classifier"]["ring"] > 20  # the shipped model finds rings (74 % on 200 images)


def test_probe_refuses_a_training_free_model():
    with pytest.raises(SystemExit):
        load_benchmark().main(["--model", "shapes-clip", "--train-images", "2", "--val-images", "2"])
