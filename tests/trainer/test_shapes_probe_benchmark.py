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


def test_closed_set_seen_scores_only_seen_shape_tokens_among_seen_shapes():
    import torch

    probe = load_benchmark()
    text = torch.eye(len(probe.NAMES))  # class k's text embedding is the k-th axis
    seen = ["circle", "square"]
    circle, square, star = (probe.NAMES.index(c) for c in ("circle", "square", "star"))
    # tokens: 3 circles (one looks like a star: its nearest *seen* shape decides), 1 square taken
    # for a circle, background and an unseen star (both ignored)
    labels = torch.tensor([circle, circle, circle, square, 0, star])
    features = text[[circle, circle, star, circle, square, square]] + 0.1 * text[[circle, circle, circle, square, 0, 0]]
    result = probe.closed_set_seen(features, labels, text, seen)
    # confusion (truth x prediction): circle -> circle 3, square -> circle 1
    assert result["per_class_iou"] == {"circle": 75.0, "square": 0.0}
    assert result["mIoU"] == 37.5 and result["accuracy"] == 75.0
