"""What a change to the shapes recipe costs per Chimera-Seg training step, measured side by side.

Prints ONE JSON object on stdout. Each ``--variant`` is a set of recipe keys (``KEY=VALUE,KEY=VALUE``;
an empty string is the recipe as shipped), the same keys ``chimera-train bundle --set`` takes. Every
run is a child process training the bundle's Chimera-Seg config (``benchmarks/wait_policy.py``'s
Chimera loop: a random ``shapes-tiny`` CLIP as teacher and head, 256 training images written with the
variant's twins) under ``OMP_WAIT_POLICY=ACTIVE``, as ``chimera-train`` runs. The variants alternate,
a different one first each round, so a host that speeds up or slows down during the benchmark
touches them alike: timings of whole builds taken on different days compare the host as much as the
recipe (stop 34 read one such pair wrongly). Per variant: the median seconds per step, its ratio to
the first variant, and what that rate makes of the recipe's 6,000 iterations.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.engine_latency import machine_facts, publish  # noqa: E402
from benchmarks.wait_policy import run_child  # noqa: E402
from chimera_engine.errors import ChimeraError  # noqa: E402
from chimera_trainer.bundle import check_zss_overrides  # noqa: E402
from chimera_trainer.config import DATASET_DEFAULTS, apply_overrides  # noqa: E402


def parse_variant(text: str) -> dict:
    """``"twin_count=1,sgd_weight=3"`` → the recipe keys it sets (ConfigError before any work if invalid)."""
    overrides = apply_overrides({}, [part for part in text.split(",") if part.strip()])
    check_zss_overrides(overrides)
    return overrides


def measure(settings: dict[str, dict], rounds: int = 3, steps: int = 150, skip: int = 50) -> dict:
    """``settings``: each variant's text and the recipe keys it sets (``parse_variant``), in order."""
    variants = list(settings)
    runs: dict[str, list[dict]] = {text: [] for text in variants}
    for round_ in range(rounds):
        for text in variants[round_ % len(variants):] + variants[:round_ % len(variants)]:
            result = run_child("chimera", "ACTIVE", 64, steps, skip, 16, overrides=settings[text])
            runs[text].append(result)
            print(f"round {round_ + 1}: {text or 'the recipe'}: {result['seconds_per_step']:.4f} s/step",
                  file=sys.stderr, flush=True)
    iterations = DATASET_DEFAULTS["shapes"]["iterations"]
    medians = {text: statistics.median(r["seconds_per_step"] for r in results) for text, results in runs.items()}
    first = medians[variants[0]]
    summary = [{"variant": text or "(the recipe)", "overrides": settings[text],
                "median_seconds_per_step": round(medians[text], 4),
                "ratio_to_first": round(medians[text] / first, 3),
                "recipe_minutes_at_this_rate": round(medians[text] * iterations / 60, 1),
                "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in runs[text]]}
               for text in variants]
    return {"recipe_iterations": iterations, "batch_size": DATASET_DEFAULTS["shapes"]["batch_size"],
            "steps_timed": steps - skip, "rounds": rounds, "variants": summary, "machine": machine_facts()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", action="append", metavar="KEY=VALUE[,KEY=VALUE]",
                   help="recipe keys to time ('' = the shipped recipe); repeat, at least twice")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--skip", type=int, default=50, help="steps left out of the timing (start-up)")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    variants = args.variant or ["twin_count=1", ""]
    if len(variants) < 2 or len(set(variants)) < len(variants):
        p.error("name at least two different --variant values")
    if not 0 < args.skip < args.steps:
        p.error("--skip must be between 0 and --steps")
    settings = {}
    for text in variants:  # all refused or none, before any run
        try:
            settings[text] = parse_variant(text)
        except ChimeraError as exc:
            p.error(f"--variant {text!r}: {exc}")
    publish(measure(settings, args.rounds, args.steps, args.skip), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
