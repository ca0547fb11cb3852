"""Whether drawing the tiny CLIP's batches ahead (``prefetch``) shortens ``chimera-train shapes-clip``.

Prints ONE JSON object on stdout. It runs the real ``clip_pretrain.pretrain`` (random weights, batch
128, a small scene bank) at each image size with ``prefetch`` on and off, alternating the variants
round by round so that the host's load hits both alike. From the loop's own progress records it
takes the seconds per step between step ``--skip`` and the last (the first steps warm up), and from
``/proc/stat`` over the same span the share of CPU time left idle and taken by the hypervisor
(steal). Library versions and the machine are recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_latency import _cpu_times, machine_facts  # noqa: E402
from chimera_trainer.clip_pretrain import pretrain  # noqa: E402


def run_once(folder: Path, size: int, prefetch: bool, steps: int, skip: int, batch_size: int) -> dict:
    marks = {}

    def log(record: dict) -> None:
        if record.get("step") in (skip, steps) and "loss" in record:
            marks[record["step"]] = (time.perf_counter(), _cpu_times())

    pretrain(folder / "clip.safetensors", steps=steps, batch_size=batch_size, scenes=16 * batch_size,
             low_res_steps=steps if size < 64 else 0, low_res_size=size, prefetch=prefetch, log=log)
    (t0, cpu0), (t1, cpu1) = marks[skip], marks[steps]
    ticks = [b - a for a, b in zip(cpu0, cpu1)] if cpu0 and cpu1 else None
    return {"seconds_per_step": (t1 - t0) / (steps - skip),
            "idle_share": ticks[3] / sum(ticks) if ticks else None,
            "steal_share": ticks[7] / sum(ticks) if ticks else None}


def measure(sizes=(40, 64), rounds: int = 2, steps: int = 150, skip: int = 50, batch_size: int = 128) -> dict:
    runs = {f"{size}px_{'prefetch' if p else 'inline'}": [] for size in sizes for p in (True, False)}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for size in sizes:
                order = (True, False) if round_ % 2 == 0 else (False, True)
                for prefetch in order:
                    result = run_once(Path(tmp), size, prefetch, steps, skip, batch_size)
                    runs[f"{size}px_{'prefetch' if prefetch else 'inline'}"].append(result)
                    print(json.dumps({"size": size, "prefetch": prefetch, **result}), file=sys.stderr, flush=True)
    summary = {}
    for name, results in runs.items():
        summary[name] = {key: round(statistics.median(r[key] for r in results), 4)
                         for key in ("seconds_per_step", "idle_share", "steal_share") if results[0][key] is not None}
        summary[name]["all_seconds_per_step"] = [round(r["seconds_per_step"], 4) for r in results]
    saving = {f"{size}px": round(1 - summary[f"{size}px_prefetch"]["seconds_per_step"]
                                 / summary[f"{size}px_inline"]["seconds_per_step"], 3) for size in sizes}
    return {"batch_size": batch_size, "steps_timed": steps - skip, "rounds": rounds, "variants": summary,
            "time_saved_by_prefetch": saving, "machine": machine_facts()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[40, 64])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--skip", type=int, default=50, help="steps left out of the timing (a multiple of 50)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    report = measure(tuple(args.sizes), args.rounds, args.steps, args.skip)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
