"""How OpenMP's wait policy changes a training step of ``chimera-train``: the tiny CLIP's
(``--stage clip``, ``shapes-clip``) or Chimera-Seg's (``--stage chimera``, the bundle's shapes recipe);
and the app's inference (``--stage infer``): one image encoded and labelled per step, as the app does.

Prints ONE JSON object on stdout. ``import chimera_engine`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the
user set it) because spinning threads slowed inference beside other busy processes
(``benchmarks/cpu_load.py``); ``chimera-train`` once inherited that and now sets ``ACTIVE`` first (this
benchmark's result, ``chimera_trainer/__init__.py``). Training owns the machine, so this measures the
real training loops in child processes with ``PASSIVE``, ``ACTIVE``, and libgomp's default (the variable
unset and torch loaded before ``chimera_engine`` could set it: spin a while, then sleep), alternating the
variants round by round. The CLIP stage: ``clip_pretrain.pretrain`` (random ``shapes-tiny``, batch 128, a
small scene bank) at each ``--sizes`` px; the Chimera stage: ``zss.train`` with the bundle's shapes
config (a random ``shapes-tiny`` CLIP as teacher and head, 256 training images). The inference stage:
``load_segmenter(--model)`` with the engine's own thread budget, then per step ``set_image`` of a new
shapes-world scene of ``--sizes`` px and ``segment`` of the twelve shapes with the model's defaults
(background prompts, PAMR), like the app on an idle machine (``cpu_load.py`` measures it beside busy
processes). Per run: seconds per
step between step ``--skip`` and the last, and from ``/proc/stat`` over that span the CPU shares left
idle and taken by the hypervisor (steal); the child's voluntary context switches per step say how often
threads slept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.engine_latency import machine_facts, publish  # noqa: E402
from chimera_trainer.config import DATASET_DEFAULTS  # noqa: E402

POLICIES = ("PASSIVE", "ACTIVE", "default")

_PRELUDE = """
import json, os, sys, tempfile, time
from pathlib import Path
policy_at_start = os.environ.get("OMP_WAIT_POLICY")  # what libgomp reads when torch loads
if {policy!r} == "default":
    import torch  # before chimera_engine: libgomp reads the (unset) variable when torch loads
sys.path.insert(0, {root!r})
from benchmarks.engine_latency import _cpu_times

def switches():
    with open("/proc/self/status") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))

marks, threads_used = {{}}, set()  # threads: what the engine's budget gave torch (inference only)
in_force = {{}}  # the recipe keys a Chimera child was given, as its training config read them
def mark(step):
    if step in ({skip}, {steps}):
        marks[step] = (time.perf_counter(), _cpu_times(), switches())
"""

_LOOPS = {
    "clip": """
from chimera_trainer.clip_pretrain import pretrain
with tempfile.TemporaryDirectory() as tmp:
    pretrain(tmp + "/clip.safetensors", steps={steps}, batch_size={batch}, scenes=16 * {batch}, workers=1,
             low_res_steps={steps} if {size} < 64 else 0, low_res_size={size},
             log=lambda record: mark(record.get("step")) if "loss" in record else None)
""",
    "chimera": """
from chimera_trainer import zss
from chimera_trainer.bundle import SIZE, TRAIN_SEED, shapes_train_config
from chimera_trainer.data.datasets import build_dataset, load_info
from chimera_trainer.shapes import write_dataset
logged = zss.RunDir.log
def log(self, record):  # the loop logs every step here (log_every=1)
    mark(record.get("iter"))
    return logged(self, record)
zss.RunDir.log = log
with tempfile.TemporaryDirectory() as tmp:
    cfg = shapes_train_config(Path(tmp) / "shapes", "shapes-tiny/random", iterations={steps}, seed=TRAIN_SEED,
                              log_every=1, checkpoint_every={steps}, **{overrides!r})
    in_force.update({{key: getattr(cfg, key) for key in {overrides!r}}})
    write_dataset(Path(tmp) / "shapes" / "train", 256, seed=TRAIN_SEED, size=SIZE, twins=cfg.twin_count)
    zss.train(cfg, tmp + "/run", build_dataset("shapes", Path(tmp) / "shapes" / "train", "train"),
              load_info("shapes", Path(tmp) / "shapes" / "train"), device="cpu", fresh=True, show_progress=False)
""",
    "infer": """
import torch
from chimera_engine import load_segmenter
from chimera_trainer.shapes import SHAPE_CLASSES, sample
seg = load_segmenter({model!r}, "cpu", "fp32", cache_images=1)
for step in range(1, {steps} + 1):
    seg.set_image(sample(7, step, {size}, min_objects=2).image)
    seg.segment(list(SHAPE_CLASSES))
    threads_used.add(torch.get_num_threads())
    mark(step)
""",
}

_REPORT = """
(t0, c0, s0), (t1, c1, s1) = marks[{skip}], marks[{steps}]
ticks = [b - a for a, b in zip(c0, c1)]
print(json.dumps({{"seconds_per_step": (t1 - t0) / ({steps} - {skip}), "idle_share": ticks[3] / sum(ticks),
                  "steal_share": ticks[7] / sum(ticks), "sleeps_per_step": (s1 - s0) / ({steps} - {skip}),
                  "omp_wait_policy_at_start": policy_at_start, "threads": sorted(threads_used) or None,
                  **({{"overrides_in_force": in_force}} if in_force else {{}})}}))
"""


def run_child(stage: str, policy: str, size: int, steps: int, skip: int, batch: int, model: str = "",
              overrides: dict | None = None) -> dict:
    """One child's timing. ``overrides``: keys of the shapes recipe the Chimera stage trains with instead."""
    # Each child gets its policy alone (``import chimera_engine`` above set PASSIVE in this process).
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    env.setdefault("HF_HUB_OFFLINE", "1")
    code = (_PRELUDE + _LOOPS[stage] + _REPORT).format(policy=policy, root=str(ROOT), steps=steps, skip=skip,
                                                      batch=batch, size=size, model=model,
                                                      overrides=dict(overrides or {}))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(stage: str = "clip", sizes=(64,), rounds: int = 2, steps: int = 90, skip: int = 50,
            batch: int = 128, model: str = "shapes-chimera") -> dict:
    sizes = (64,) if stage == "chimera" else sizes  # Chimera-Seg trains at the shapes world's 64 px
    runs: dict[str, list[dict]] = {f"{size}px_{p}": [] for size in sizes for p in POLICIES}
    for round_ in range(rounds):
        for size in sizes:
            for policy in POLICIES[round_ % 3:] + POLICIES[:round_ % 3]:  # a different one goes first each round
                result = run_child(stage, policy, size, steps, skip, batch, model)
                runs[f"{size}px_{policy}"].append(result)
                print(json.dumps({"size": size, "policy": policy, **result}), file=sys.stderr, flush=True)
    summary = {name: {"median_seconds_per_step": round(statistics.median(r["seconds_per_step"] for r in results), 4),
                      "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in results]}
               for name, results in runs.items()}
    batch = {"clip": batch, "chimera": DATASET_DEFAULTS["shapes"]["batch_size"], "infer": 1}[stage]
    return {"stage": stage, "batch_size": batch, "steps_timed": steps - skip, "rounds": rounds, "variants": summary,
            **({"model": model} if stage == "infer" else {}), "machine": machine_facts()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=sorted(_LOOPS), default="clip")
    p.add_argument("--sizes", type=int, nargs="+", default=[64], help="the CLIP or inference stage's image sides (px)")
    p.add_argument("--model", default="shapes-chimera", help="the inference stage's model (a model name)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=90)
    p.add_argument("--skip", type=int, default=50,
                   help="steps left out of the timing (for the CLIP stage a multiple of 50, its logging interval)")
    p.add_argument("--batch-size", type=int, default=128, help="the CLIP stage's batch (Chimera-Seg: the recipe's 16)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    report = measure(args.stage, tuple(args.sizes), args.rounds, args.steps, args.skip, args.batch_size, args.model)
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
