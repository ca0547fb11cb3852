"""The shapes issue's closed-set control, reproducible: the shapes body trained as a plain classifier.

    python benchmarks/shapes_closed_control.py [--iterations 1500] [--batch 32] [--background ignore]

The shapes-world issue measured that the ResNet-18 DeepLabV3+ body, trained closed-set and fully
supervised on the 9 seen shapes (background ignored), reaches 60.6 % seen mIoU after 1,500 iterations
of 32 native 64 px crops, where Chimera-Seg's recipe left the same body far lower. This script trains
that control with *our* data stream (the shapes recipe's pipeline: flips and photometric distortion,
no rescale) and *our* optimiser and schedule, so the only differences from a Chimera-Seg run are the
head (a 1x1 convolution to the seen classes instead of CLIP's blocks and the frozen text classifier)
and the losses (cross-entropy only). ``--background class`` trains background as a seen class like
the Chimera-Seg recipe does; ``ignore`` (the issue's control) leaves its pixels out of the loss.

It is scored like ``shapes_probe.py``'s ``closed_set_seen``: the seen shapes' tokens of 200 images of
seed 501 (one token per 4 px, labelled by its centre pixel), the best-scoring seen shape, mIoU over
the 9 seen shapes. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import timm
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.shapes_probe import EVAL_SEED, NAMES, closed_set_seen, token_features  # noqa: E402
from chimera_engine.chimera.body import DeepLabV3PlusBody  # noqa: E402
from chimera_engine.chimera.model import preset  # noqa: E402
from chimera_trainer.bundle import SIZE, shapes_train_config  # noqa: E402
from chimera_trainer.data.datasets import build_dataset, load_info  # noqa: E402
from chimera_trainer.losses import IGNORE, seen_cross_entropy  # noqa: E402
from chimera_trainer.optim import make_optimizer  # noqa: E402
from chimera_trainer.shapes import BACKGROUND, write_dataset  # noqa: E402
from chimera_trainer.train_data import ZeroShotTrainSet, train_loader  # noqa: E402

TRAIN_SEED = 100  # shapes_zss.py's training images
CLIP_MEAN, CLIP_STD = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD  # the shapes models' too


class ClosedSetNet(nn.Module):
    """The shapes body and a 1x1 convolution to the seen classes (logits at the body's stride 4)."""

    output_stride = 4

    def __init__(self, body_preset: str, classes: int):
        super().__init__()
        self.body = DeepLabV3PlusBody(dataclasses.replace(preset(body_preset), pretrained_backbone=False))
        self.classifier = nn.Conv2d(self.body.out_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def output_texts(classes: list[str]) -> torch.Tensor:
    """``len(NAMES) x len(classes)``: each name's "text embedding" is the one-hot of the net's output for
    it, so ``closed_set_seen``'s nearest-text rule becomes the best logit among the seen shapes."""
    texts = torch.zeros(len(NAMES), len(classes))
    texts[[NAMES.index(c) for c in classes], torch.arange(len(classes))] = 1.0
    return texts


def train_control(data_root: Path, iterations: int, batch: int, lr: float, background: str, seed: int,
                  body: str = "shapes-r18") -> tuple[nn.Module, list[str]]:
    """The trained net and the names of its output classes (the seen classes, less background when
    it is ignored: then its pixels are out of the loss and it is no class at all)."""
    cfg = shapes_train_config(data_root, "shapes-tiny/random", iterations=iterations, batch_size=batch, lr=lr,
                              seed=seed, body=body)
    info = load_info("shapes", data_root / "train")
    classes = [c for c in info.seen if background == "class" or c != BACKGROUND]
    relabel = torch.full((256,), IGNORE, dtype=torch.long)  # seen-class index -> output index
    relabel[[info.seen.index(c) for c in classes]] = torch.arange(len(classes))
    torch.manual_seed(seed)
    net = ClosedSetNet(cfg.body, len(classes))
    optimizer, scheduler = make_optimizer(net, cfg.lr, 1.0, cfg.weight_decay, cfg.iterations,
                                          cfg.warmup_iterations, cfg.poly_power)
    train_set = ZeroShotTrainSet(build_dataset("shapes", data_root / "train", "train"), info, cfg.crop_size,
                                 CLIP_MEAN, CLIP_STD, cfg.resize_scale, cfg.resize_ratio)
    loader = iter(train_loader(train_set, cfg.batch_size, 0, cfg.seed, 0, 1, start=0))
    net.train()
    for _ in range(cfg.iterations):
        images, labels = next(loader)
        total, count = seen_cross_entropy(net(images), relabel[labels.long()])
        optimizer.zero_grad(set_to_none=True)
        (total / count.clamp(min=1)).backward()
        optimizer.step()
        scheduler.step()
    return net.eval(), classes


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--background", choices=("ignore", "class"), default="ignore")
    p.add_argument("--body", default="shapes-r18", help="a body preset")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", type=Path, default=None, help="also write the trained net's state_dict here")
    args = p.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "shapes"
        write_dataset(data_root / "train", args.train_images, seed=TRAIN_SEED, size=SIZE)
        net, classes = train_control(data_root, args.iterations, args.batch, args.lr, args.background, args.seed,
                                       args.body)
    train_seconds = time.perf_counter() - started
    if args.save:
        torch.save({"state_dict": net.state_dict(), "classes": classes, "body": args.body}, args.save)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    with torch.no_grad():
        logits, labels = token_features(net, mean, std, EVAL_SEED, args.val_images, "head")
    seen_shapes = sorted((c for c in classes if c != BACKGROUND), key=NAMES.index)
    score = closed_set_seen(logits, labels, output_texts(classes), seen_shapes)
    report = {"control": {**vars(args), "save": args.save and str(args.save)}, "closed_set_seen": score,
              "train_seconds": round(train_seconds, 1), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "timm": timm.__version__, "open_clip": open_clip.__version__}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
