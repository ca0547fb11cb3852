"""Does ``chimera-train bundle`` go faster as two processes than as one on a 2-core CPU?

    python benchmarks/bundle_processes.py [--clip-steps 200] [--zss-iterations 150]

Runs each of the bundle's two trainings with the real command line, twice, one after the other:
one process with two threads (``OMP_NUM_THREADS=2``), then ``torchrun --nproc_per_node 2`` with one
thread each (each process takes half of every batch; the batch, the data and the schedule stay the
same). Measures the tiny CLIP's pre-training pace (``chimera-train shapes-clip``, its own
``images_per_s``, warm-up included) and Chimera-Seg's (``chimera-train zss`` on the shapes recipe, the
median of its ``metrics.jsonl`` after the first 20 iterations), and projects the bundle's
12,000 + 6,000 steps both ways. Prints one JSON object with the machine (its CPU steal share too:
the host of a VM may take CPU time) and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_latency import machine_facts  # noqa: E402
from chimera_trainer.bundle import SCHEDULES  # noqa: E402
from chimera_trainer.shapes import write_dataset  # noqa: E402

WAYS = {"one process, 2 threads": (1, "2"), "two processes, 1 thread each": (2, "1")}


def command(processes: int, port: int, *args: str) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "chimera_trainer.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(port), "-m", "chimera_trainer.cli", *args]


def run(cmd: list[str], threads: str) -> tuple[subprocess.CompletedProcess, float]:
    # As from a shell: without the PASSIVE wait policy this process's chimera_engine import set (until
    # stop 26 the children inherited it, and the one-process runs of results/bundle_processes.json slept
    # at every barrier), so chimera-train chooses its own.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(OMP_NUM_THREADS=threads, HF_HUB_OFFLINE="1")
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    # shapes-clip answers 3 when its accuracy is below its target, as it is after a few hundred steps
    # (torchrun reports that as its own failure, 1): a run counts when it wrote its report, checked below.
    if proc.returncode not in (0, 1, 3):
        _failed(cmd, proc)
    return proc, time.perf_counter() - started


def _failed(cmd: list[str], proc: subprocess.CompletedProcess):
    raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def clip_pace(work: Path, processes: int, threads: str, steps: int, batch: int) -> dict:
    out = work / f"clip-{processes}.safetensors"
    cmd = command(processes, 29651, "shapes-clip", "--out", str(out), "--steps", str(steps),
                  "--batch-size", str(batch), "--scenes", "4096", "--eval-every", "0")
    proc, seconds = run(cmd, threads)
    paces = [json.loads(line)["images_per_s"] for line in proc.stderr.splitlines()
             if line.startswith("{") and "images_per_s" in line]
    if not out.with_suffix(".json").is_file() or not paces:
        _failed(cmd, proc)
    return {"images_per_s": paces[-1], "seconds_per_step": round(batch / paces[-1], 4), "wall_s": round(seconds, 1)}


def zss_pace(work: Path, data: Path, processes: int, threads: str, iterations: int) -> dict:
    run_dir = work / f"zss-{processes}"
    cmd = command(processes, 29652, "zss", "--dataset", "shapes", "--data-root", str(data), "--out", str(run_dir),
                  "--iterations", str(iterations), "--quiet", "--device", "cpu", "--set", "log_every=1")
    proc, seconds = run(cmd, threads)
    if proc.returncode != 0:
        _failed(cmd, proc)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    paces = [r["images_per_s"] for r in records if r["iter"] > 20]
    batch = json.loads((run_dir / "config.json").read_text())["batch_size"]
    pace = statistics.median(paces)
    return {"images_per_s": round(pace, 2), "seconds_per_step": round(batch / pace, 4), "wall_s": round(seconds, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip-steps", type=int, default=200)
    p.add_argument("--zss-iterations", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=128, help="the CLIP's (the bundle's is 128)")
    p.add_argument("--reverse", action="store_true", help="two processes first (load that drifts hits the other way)")
    p.add_argument("--stages", nargs="+", choices=("clip", "zss"), default=["clip", "zss"])
    args = p.parse_args(argv)
    report = {"machine_before": machine_facts(), "clip": {}, "zss": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "shapes"
        write_dataset(data / "train", 512, seed=0, size=64)
        for way, (processes, threads) in (reversed if args.reverse else iter)(list(WAYS.items())):
            if "clip" in args.stages:
                report["clip"][way] = clip_pace(work, processes, threads, args.clip_steps, args.batch_size)
            if "zss" in args.stages:
                report["zss"][way] = zss_pace(work, data, processes, threads, args.zss_iterations)
    report["machine_after"] = machine_facts()
    steps = {"clip": SCHEDULES["clip_steps"][0], "zss": SCHEDULES["zss_iterations"][0]}
    report["bundle_steps"] = steps
    report["speedup"] = {stage: round(report[stage][one]["seconds_per_step"] / report[stage][two]["seconds_per_step"], 2)
                         for stage in args.stages for one, two in [list(WAYS)]}
    if len(args.stages) == 2:
        report["projected_training_minutes"] = {
            way: round(sum(steps[s] * report[s][way]["seconds_per_step"] for s in steps) / 60, 1) for way in WAYS}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
