"""Do a Chimera-Seg model's features tell the shapes apart? A linear probe against the text classifier.

    python benchmarks/shapes_probe.py [--model shapes-chimera] [--train-images 600] [--val-images 200]

Runs the model's network on shapes-world images (64 px; probe training images of seed 500, evaluation
images of seed 501, seeds no model trains on) and takes one feature vector per head token, labelled
with the class at the token's centre. For the head's output (the unit features scored against CLIP
text) and for the body's own features (pooled to the same grid) it fits a linear classifier over all
13 classes (background and the 12 shapes, class-balanced cross-entropy, full batch Adam) and reports
per-class token accuracy on the evaluation images, beside the accuracy of the model's own rule (the
nearest text embedding of the 13 names). If the probe cannot separate two shapes either, their
features do not carry the difference: the text embeddings are not what limits the model.

It also scores the model the way the shapes issue's closed-set control was scored (a body trained
supervised on the 9 seen shapes, background ignored: 60.6 % mIoU after 1,500 iterations of 32 crops):
on the tokens of seen shapes, the nearest of the seen shapes' text embeddings, mIoU over those shapes
(``closed_set_seen``). Where that is far below the control, the body recognises shapes worse than the
same body trained closed-set on as many crops, whatever the localisation and background do. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chimera_engine.clip_loading import bundled_model_path  # noqa: E402
from chimera_engine.models import CHIMERA_SEG, load_model  # noqa: E402
from chimera_engine.text import TextEncoder  # noqa: E402
from chimera_trainer.shapes import BACKGROUND, SHAPE_CLASSES, sample  # noqa: E402

SIZE, PROBE_SEED, EVAL_SEED = 64, 500, 501
NAMES = [BACKGROUND, *SHAPE_CLASSES]


@torch.no_grad()
def token_features(net, mean, std, seed: int, images: int, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``N x C`` features of every head token of ``images`` images and ``N`` labels (centre pixel)."""
    feats, labels = [], []
    for start in range(0, images, 50):
        batch = [sample(seed, i, SIZE) for i in range(start, min(images, start + 50))]
        x = torch.tensor(np.stack([s.image for s in batch])).permute(0, 3, 1, 2).float() / 255
        x = (x - mean) / std
        grid = (SIZE // net.output_stride,) * 2
        f = net(x) if layer == "head" else F.adaptive_avg_pool2d(net.body(x), grid)
        step = SIZE // f.shape[-1]
        y = torch.tensor(np.stack([s.labels for s in batch])).long()[:, step // 2::step, step // 2::step]
        feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).float())
        labels.append(y.reshape(-1))
    return torch.cat(feats), torch.cat(labels)


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {NAMES[k]: round(float((pred[labels == k] == k).float().mean()) * 100, 1)
            for k in range(len(NAMES)) if (labels == k).any()}


def closed_set_seen(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, seen: list[str]) -> dict:
    """mIoU over the seen shapes on their own tokens, each labelled with the nearest seen shape's text."""
    index = torch.tensor([NAMES.index(c) for c in seen])
    on_seen = torch.isin(labels, index)
    truth = torch.searchsorted(index, labels[on_seen])  # NAMES order: index is sorted
    pred = (features[on_seen] @ text[index].T).argmax(1)
    k = len(seen)
    confusion = torch.bincount(truth * k + pred, minlength=k * k).reshape(k, k).double()
    iou = confusion.diag() / (confusion.sum(0) + confusion.sum(1) - confusion.diag()).clamp(min=1)
    accuracy = confusion.diag().sum() / confusion.sum()
    return {"mIoU": round(float(iou.mean()) * 100, 1), "accuracy": round(float(accuracy) * 100, 1),
            "per_class_iou": {c: round(float(v) * 100, 1) for c, v in zip(seen, iou)}}


def linear_probe(x: torch.Tensor, y: torch.Tensor, steps: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], len(NAMES), requires_grad=True)
    b = torch.zeros(len(NAMES), requires_grad=True)
    counts = torch.bincount(y, minlength=len(NAMES)).float().clamp(min=1)
    weight = (counts.sum() / counts) ** 0.5
    optimizer = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(x @ w + b, y, weight=weight / weight.mean()).backward()
        optimizer.step()
    return w.detach(), b.detach()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shapes-chimera", help="a bundled model name or a checkpoint file")
    p.add_argument("--train-images", type=int, default=600)
    p.add_argument("--val-images", type=int, default=200)
    args = p.parse_args(argv)
    path = Path(args.model) if Path(args.model).is_file() else bundled_model_path(args.model)
    model = load_model(path)
    if model.kind != CHIMERA_SEG:
        p.error(f"{args.model} is not a Chimera-Seg model")
    net = model.encoder.eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.mean, model.std))
    report = {"model": str(args.model), "torch": torch.__version__, "seen": list(model.seen_classes)}
    for layer in ("head", "body"):
        x_train, y_train = token_features(net, mean, std, PROBE_SEED, args.train_images, layer)
        x_eval, y_eval = token_features(net, mean, std, EVAL_SEED, args.val_images, layer)
        w, b = linear_probe(x_train, y_train)
        report[f"{layer}_linear_probe"] = per_class_accuracy((x_eval @ w + b).argmax(1), y_eval)
        if layer == "head":
            text = TextEncoder(model.clip, model.templates).encode(NAMES)
            report["head_text_classifier"] = per_class_accuracy((x_eval @ text.T).argmax(1), y_eval)
            seen = sorted((c for c in model.seen_classes if c != BACKGROUND), key=NAMES.index)
            report["closed_set_seen"] = closed_set_seen(x_eval, y_eval, text, seen)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
