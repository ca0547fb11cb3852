"""What one step of the tiny shapes CLIP's pre-training costs, on open_clip's path and on ours.

Prints ONE JSON object on stdout. In one process, on the same random-weight ``shapes-tiny`` model and
the same batches from a ``SceneBank``, it times a whole training step (drawing the batch, forward of
images and captions, the contrastive loss, backward, then the AdamW step, also timed apart) with

- ``open_clip``: ``model.encode_image`` / ``model.encode_text`` and torch's default AdamW (on a CPU its
  per-parameter loop) —
  the plainest run of the model;
- ``engine``: ``clip_pretrain.encode_pairs`` (the engine's block forward, captions trimmed) and
  ``optim.adamw`` (fused) — what ``chimera-train shapes-clip`` runs,

alternating the two so load from other processes hits both alike, and reports the median seconds
per step, their ratio and what that makes of the bundle's 12,000 steps. Library versions and the
machine are recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_latency import machine_facts  # noqa: E402
from chimera_engine.clip_loading import ClipSpec, create_clip, register_bundled_configs  # noqa: E402
from chimera_trainer.bundle import SCHEDULES  # noqa: E402
from chimera_trainer.clip_pretrain import SceneBank, contrastive_loss, encode_pairs  # noqa: E402
from chimera_trainer.optim import adamw  # noqa: E402


def measure(rounds: int = 5, steps: int = 4, batch_size: int = 128, scenes: int = 1024) -> dict:
    register_bundled_configs()
    torch.manual_seed(0)
    model = create_clip(ClipSpec("shapes-tiny", "random")).train()
    bank = SceneBank(0, model.visual.image_size[0], scenes, open_clip.get_tokenizer("shapes-tiny"),
                     model.context_length, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, workers=1)
    lr = 1e-6  # small: the two variants take turns on one model and should not move it far
    variants = {
        "open_clip": (lambda images, tokens: (model.encode_image(images), model.encode_text(tokens)),
                      torch.optim.AdamW(model.parameters(), lr=lr)),
        "engine": (lambda images, tokens: encode_pairs(model, images, tokens), adamw(list(model.parameters()), lr)),
    }
    times = {name: {"step": [], "optimizer": []} for name in variants}
    for round_ in range(rounds + 1):  # round 0 warms both up and is not counted
        for name, (forward, optimizer) in variants.items():
            in_optimizer, started = 0.0, time.perf_counter()
            for i in range(steps):  # the batch is drawn inside the timing, as the training loop does
                images, tokens = bank.batch(round_ * steps + i, batch_size)[:2]
                loss = contrastive_loss(*forward(images, tokens), model.logit_scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                tick = time.perf_counter()
                optimizer.step()
                in_optimizer += time.perf_counter() - tick
            if round_:
                times[name]["step"].append((time.perf_counter() - started) / steps)
                times[name]["optimizer"].append(in_optimizer / steps)
    median = {name: statistics.median(t["step"]) for name, t in times.items()}
    clip_steps = SCHEDULES["clip_steps"][0]
    return {"batch_size": batch_size, "threads": torch.get_num_threads(),
            "seconds_per_step": {k: round(v, 4) for k, v in median.items()},
            "optimizer_seconds_per_step": {k: round(statistics.median(t["optimizer"]), 4) for k, t in times.items()},
            "all_seconds_per_step": {k: [round(x, 4) for x in t["step"]] for k, t in times.items()},
            "speedup": round(median["open_clip"] / median["engine"], 3),
            "bundle_steps": clip_steps,
            "bundle_minutes": {k: round(v * clip_steps / 60, 1) for k, v in median.items()},
            "machine": machine_facts()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps per round and forward")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    report = measure(args.rounds, args.steps, args.batch_size)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
