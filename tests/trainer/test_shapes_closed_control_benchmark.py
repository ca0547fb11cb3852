"""``benchmarks/shapes_closed_control.py`` trains the closed-set control end to end (a few iterations)."""

import torch

from tests.trainer.benchmark_scripts import load_benchmark as _load


def load_benchmark():
    return _load("shapes_closed_control")


def test_control_trains_and_reports_the_closed_set_score():
    report = load_benchmark().main(["--iterations", "3", "--batch", "4", "--train-images", "8",
                                    "--val-images", "4", "--background", "class"])
    score = report["closed_set_seen"]
    assert set(score["per_class_iou"]) == {"circle", "square", "triangle", "ring", "cross", "crescent", "diamond",
                                           "pentagon", "arrow"}  # the 9 seen shapes; background is not scored
    assert 0 <= score["mIoU"] <= 100 and 0 <= score["accuracy"] <= 100
    assert report["control"]["background"] == "class" and report["train_seconds"] > 0


def test_ignored_background_is_no_class_and_out_of_the_loss(tmp_path, monkeypatch):
    bench = load_benchmark()
    from chimera_trainer.bundle import SIZE
    from chimera_trainer.shapes import write_dataset

    write_dataset(tmp_path / "train", 4, seed=100, size=SIZE)
    calls = []
    original = bench.seen_cross_entropy

    def spy(logits, labels, *args):
        calls.append((logits.shape[1], labels.clone()))
        return original(logits, labels, *args)

    monkeypatch.setattr(bench, "seen_cross_entropy", spy)
    _, ignored = bench.train_control(tmp_path, iterations=1, batch=2, lr=1e-3, background="ignore", seed=0)
    _, trained = bench.train_control(tmp_path, iterations=1, batch=2, lr=1e-3, background="class", seed=0)
    assert "background" not in ignored and trained == ["background", *ignored]
    (outputs_ignored, labels_ignored), (outputs_trained, labels_trained) = calls
    assert (outputs_ignored, outputs_trained) == (9, 10)
    background = labels_trained == 0  # the same crops: background pixels become "ignore", the rest shift by one
    assert background.any() and (labels_ignored[background] == 255).all()
    shapes = (labels_trained != 0) & (labels_trained != 255)
    assert shapes.any() and torch.equal(labels_ignored[shapes], labels_trained[shapes] - 1)


def test_the_best_seen_logit_is_the_prediction():
    bench = load_benchmark()
    classes = ["background", "circle", "square"]
    texts = bench.output_texts(classes)
    names = bench.NAMES
    labels = torch.tensor([names.index(c) for c in ("circle", "square", "square", "background", "star")])
    logits = torch.tensor([[9.0, 2.0, 1.0],  # background wins, but among seen shapes circle is best
                           [0.0, -1.0, 3.0],
                           [0.0, 5.0, -2.0],  # a square taken for a circle
                           [5.0, 0.0, 0.0],
                           [0.0, 0.0, 9.0]])
    score = bench.closed_set_seen(logits, labels, texts, ["circle", "square"])
    assert score["per_class_iou"] == {"circle": 50.0, "square": 50.0} and score["accuracy"] == 66.7  # 2 of 3 seen-shape tokens
