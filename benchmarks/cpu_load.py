"""Throughput under load: encode images while other processes keep the CPU busy.

Prints ONE JSON object. For each configuration (OpenMP wait policy x torch intra-op threads) a child
process encodes ``--images`` 512x512 images with ``--model`` (one ``set_image`` each, as
``chimera-label`` does), first on an otherwise idle machine, then beside ``--burners`` processes
that spin on the CPU. ``slowdown`` = loaded / idle seconds per image: it should stay near
``(burners + threads) / cores`` (a fair share), not 10x.

OpenMP's default wait policy spins at every barrier; when the cores are shared, a spinning thread
burns the time slice its partner needs to reach the barrier. ``PASSIVE`` sleeps instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(model: str, images: int, threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks.engine_latency import synthetic_image
    from chimera_engine import load_segmenter

    torch.set_num_threads(threads)
    seg = load_segmenter(model, "cpu", "fp32", cache_images=1)
    pool = [synthetic_image(512, 512, seed=i) for i in range(images + 1)]
    seg.set_image(pool[-1])  # warm-up
    start = time.perf_counter()
    for rgb in pool[:images]:
        seg.set_image(rgb)
    print(json.dumps({"seconds_per_image": (time.perf_counter() - start) / images}))


def burn() -> None:
    while True:
        pass


def run(model: str, images: int, threads: int, policy: str | None) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--child", model, str(images), str(threads)],
                         env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout)["seconds_per_image"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="clip:ViT-B-16/random+maskclip")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--burners", type=int, default=2)
    p.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    p.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    p.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    import torch

    results = []
    for policy in args.policies:
        for threads in args.threads:
            env_policy = None if policy == "default" else policy
            idle = run(args.model, args.images, threads, env_policy)
            burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)]
            for b in burners:
                b.start()
            try:
                loaded = run(args.model, args.images, threads, env_policy)
            finally:
                for b in burners:
                    b.terminate()
            results.append({"omp_wait_policy": policy, "threads": threads, "idle_s_per_image": round(idle, 3),
                            "loaded_s_per_image": round(loaded, 3), "slowdown": round(loaded / idle, 2)})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"cores": os.cpu_count(), "torch": torch.__version__, "model": args.model,
                      "burners": args.burners, "results": results}, indent=1))


if __name__ == "__main__":
    main()
