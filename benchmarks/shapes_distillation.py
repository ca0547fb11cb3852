"""How much of the tiny CLIP's knowledge of each shape reaches a Chimera-Seg model's dense features.

    python benchmarks/shapes_distillation.py [shapes-chimera ...] [--images 300] [--out benchmarks/results/NAME.json]

Selective Global Distillation is the only path by which an unseen shape's name can reach the dense
features: it pulls the tokens most like CLIP's global embedding of the training crop (the *teacher*)
towards it. On images of **one** shape (held-out seed 424242, drawn with one object, 64 px), where the
teacher describes that shape alone, this measures per true class:

- ``teacher_names_it``: CLIP's own zero-shot choice from the teacher (13 names, background excluded
  from the choice as in the CLIP's zero-shot score) is the shape — what distillation could pass on;
- ``teacher_margin``: the teacher's cosine to its own name minus its best other shape name (how
  close a feature must get to the teacher before the name survives);
- ``region_names_it``: the mean of the model's unit features over the shape's pixels, scored against
  the 13 names as the model scores a pixel, is the shape;
- ``cos_region_teacher``: that region feature's cosine to the teacher (1: distillation complete);
- ``cos_selected_teacher``: the mean cosine to the teacher of the tokens SGD keeps at the end of
  training (the top 10 % by similarity, as ``losses.selective_global_distillation`` selects them);
- ``region_margin``: the region feature's cosine to its own name minus its best other shape name
  (against ``teacher_margin``: how much of the teacher's margin survived).

And, per model, how alike the teachers themselves are (``teachers``): the mean cosine between the
teachers of two different images of the same shape, and of two different shapes.

No PAMR, no background rule: the network's features as training left them. Prints one JSON object
with the machine and library versions; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.engine_latency import machine_facts, publish  # noqa: E402
from chimera_engine import load_segmenter  # noqa: E402
from chimera_engine.text import TextEncoder  # noqa: E402
from chimera_engine.tiling import to_tensor  # noqa: E402
from chimera_trainer.shapes.app_rule import CLASSES, HELD_OUT_SIZE  # noqa: E402
from chimera_trainer.shapes.world import SHAPE_CLASSES, sample  # noqa: E402

SEED = 424242  # the bundled-model tests' held-out seed
SELECTED_SHARE = 0.1  # SGD's keep ratio at the end of the shapes recipe (sgd_ratio_end)


def single_shape_rows(model, images: int) -> list[dict]:
    """One row per single-shape image: its class and the five measurements of the module docstring."""
    text = TextEncoder(model.clip, model.templates).encode(CLASSES).float()
    rows = []
    with torch.no_grad():
        for i in range(images):
            s = sample(SEED, i, HELD_OUT_SIZE, min_objects=1, max_objects=1)
            x = to_tensor(s.image[None], model.mean, model.std)
            teacher = F.normalize(model.clip.encode_image(x).float(), dim=-1)[0]
            features = model.encoder(x).float()  # 1 x C x h x w, unit
            tokens = features[0].flatten(1).t()  # N x C
            dense = F.interpolate(features, size=s.labels.shape, mode="bilinear", align_corners=False)
            region = F.normalize(dense[0][:, torch.from_numpy(s.labels > 0)].mean(1), dim=0)
            k = CLASSES.index(s.shapes[0].name)
            to_teacher, to_region = text @ teacher, text @ region
            others = torch.cat([to_teacher[1:k], to_teacher[k + 1:]])  # the other shapes' names
            kept = math.ceil(SELECTED_SHARE * tokens.shape[0])
            region_others = torch.cat([to_region[1:k], to_region[k + 1:]])
            rows.append({"class": s.shapes[0].name, "teacher": teacher,
                         "teacher_names_it": int(to_teacher[1:].argmax()) + 1 == k,
                         "teacher_margin": float(to_teacher[k] - others.max()),
                         "region_names_it": int(to_region.argmax()) == k,
                         "cos_region_teacher": float(region @ teacher),
                         "cos_selected_teacher": float((tokens @ teacher).topk(kept).values.mean()),
                         "region_margin": float(to_region[k] - region_others.max())})
    return rows


def teacher_similarity(rows: list[dict]) -> dict:
    """Mean cosine between the teachers of two different images: of one shape, and of two shapes."""
    teachers = torch.stack([r["teacher"] for r in rows])
    names = [r["class"] for r in rows]
    cos = teachers @ teachers.t()
    same = torch.tensor([[a == b for b in names] for a in names]) & ~torch.eye(len(rows), dtype=torch.bool)
    other = torch.tensor([[a != b for b in names] for a in names])
    mean = (lambda m: round(float(cos[m].mean()), 3) if bool(m.any()) else None)
    return {"same_shape_cos": mean(same), "other_shape_cos": mean(other)}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in SHAPE_CLASSES:
        mine = [r for r in rows if r["class"] == name]
        if mine:
            out[name] = {"images": len(mine), **{key: round(float(np.mean([r[key] for r in mine])), 3)
                                                  for key in mine[0] if key not in ("class", "teacher")}}
    return out


def measure(model_name: str, images: int) -> dict:
    model = load_segmenter(model_name, device="cpu", precision="fp32").model
    rows = single_shape_rows(model, images)
    return {**summarise(rows), "teachers": teacher_similarity(rows)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", default=["shapes-chimera"], help="model names or checkpoint paths")
    p.add_argument("--images", type=int, default=300, help="single-shape images of the held-out seed")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    report = {"machine": machine_facts(), "seed": SEED, "images": args.images,
              "models": {m: measure(m, args.images) for m in args.models}}
    return publish(report, args.out)


if __name__ == "__main__":
    main()
