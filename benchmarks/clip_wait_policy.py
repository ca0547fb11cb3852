"""How OpenMP's wait policy changes the tiny CLIP's training step (``chimera-train shapes-clip``).

Prints ONE JSON object on stdout. ``import chimera_engine`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the
user set it) because spinning threads slowed inference beside other busy processes
(``benchmarks/cpu_load.py``); ``chimera-train`` once inherited that and now sets ``ACTIVE`` first (this
benchmark's result). Training owns the machine, so this measures the real ``clip_pretrain.pretrain``
loop (random ``shapes-tiny``, batch 128, a small scene bank) in child processes with ``PASSIVE``, ``ACTIVE``, and
libgomp's default (the variable unset and torch loaded before ``chimera_engine`` could set it: spin a
while, then sleep), alternating the variants round by round. Per run: seconds per step between step
``--skip`` and the last, and from ``/proc/stat`` over that span the CPU shares left idle and taken by
the hypervisor (steal); the child's voluntary context switches per step say how often threads slept.
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

from benchmarks.engine_latency import machine_facts  # noqa: E402
from chimera_engine.atomic import atomic_write_json  # noqa: E402

POLICIES = ("PASSIVE", "ACTIVE", "default")

_CHILD = """
import json, os, sys, tempfile, time
policy_at_start = os.environ.get("OMP_WAIT_POLICY")  # what libgomp reads when torch loads
if {policy!r} == "default":
    import torch  # before chimera_engine: libgomp reads the (unset) variable when torch loads
sys.path.insert(0, {root!r})
from benchmarks.engine_latency import _cpu_times
from chimera_trainer.clip_pretrain import pretrain

def switches():
    with open("/proc/self/status") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))

marks = {{}}
def log(record):
    if record.get("step") in ({skip}, {steps}) and "loss" in record:
        marks[record["step"]] = (time.perf_counter(), _cpu_times(), switches())

with tempfile.TemporaryDirectory() as tmp:
    pretrain(tmp + "/clip.safetensors", steps={steps}, batch_size={batch}, scenes=16 * {batch}, workers=1,
             low_res_steps={steps} if {size} < 64 else 0, low_res_size={size}, log=log)
(t0, c0, s0), (t1, c1, s1) = marks[{skip}], marks[{steps}]
ticks = [b - a for a, b in zip(c0, c1)]
print(json.dumps({{"seconds_per_step": (t1 - t0) / ({steps} - {skip}), "idle_share": ticks[3] / sum(ticks),
                  "steal_share": ticks[7] / sum(ticks), "sleeps_per_step": (s1 - s0) / ({steps} - {skip}),
                  "omp_wait_policy_at_start": policy_at_start}}))
"""


def run_child(policy: str, size: int, steps: int, skip: int, batch: int) -> dict:
    # Each child gets its policy alone (``import chimera_engine`` above set PASSIVE in this process).
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    env.setdefault("HF_HUB_OFFLINE", "1")
    code = _CHILD.format(policy=policy, root=str(ROOT), steps=steps, skip=skip, batch=batch, size=size)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(sizes=(64,), rounds: int = 2, steps: int = 90, skip: int = 50, batch: int = 128) -> dict:

    runs: dict[str, list[dict]] = {f"{size}px_{p}": [] for size in sizes for p in POLICIES}
    for round_ in range(rounds):
        for size in sizes:
            for policy in POLICIES[round_ % 3:] + POLICIES[:round_ % 3]:  # a different one goes first each round
                result = run_child(policy, size, steps, skip, batch)
                runs[f"{size}px_{policy}"].append(result)
                print(json.dumps({"size": size, "policy": policy, **result}), file=sys.stderr, flush=True)
    summary = {name: {"median_seconds_per_step": round(statistics.median(r["seconds_per_step"] for r in results), 4),
                      "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in results]}
               for name, results in runs.items()}
    return {"batch_size": batch, "steps_timed": steps - skip, "rounds": rounds, "variants": summary,
            "machine": machine_facts()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=90)
    p.add_argument("--skip", type=int, default=50, help="steps left out of the timing (a multiple of 50)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    report = measure(tuple(args.sizes), args.rounds, args.steps, args.skip, args.batch_size)
    print(json.dumps(report, indent=1))
    if args.out:
        atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
