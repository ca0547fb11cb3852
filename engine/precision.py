"""Precision ``auto`` on a CPU with native bf16: time the actual encoder once, remember the verdict.

A bare matmul says little about a whole model (layouts, attention and normalisation kernels differ
per format and per torch release), so the encoder that will run is timed on the batch shape it will
run, in fp32 and in bf16. The verdict is cached in a small JSON file keyed by the CPU, the thread
count, the library versions, the model and the batch shape: later runs on the same machine read it
and never re-time, so the same command always picks the same format and gives the same labels.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from chimera_engine.devices import DeviceChoice, cpu_description, dtype_name

BF16_MIN_SPEEDUP = 1.3  # bf16 costs some accuracy: only take it for a clear win
CACHE_ENV = "CHIMERA_CACHE_DIR"


def cache_dir() -> Path:
    """Chimera's cache folder (``$CHIMERA_CACHE_DIR``, else the platform's user cache folder)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("chimera"))


def _cache_file() -> Path:
    return cache_dir() / "precision.json"


def verdict_key(encoder: nn.Module, model_name: str, shape: tuple[int, ...]) -> str:
    import open_clip

    cpu, flags = cpu_description()
    params = sum(p.numel() for p in encoder.parameters())
    parts = [cpu, ",".join(sorted(f for f in flags if f.startswith(("avx", "amx")))),
             f"threads={torch.get_num_threads()}", f"torch={torch.__version__}",
             f"open_clip={open_clip.__version__}", model_name, type(encoder).__name__, f"params={params}",
             "x".join(map(str, shape))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    """Best effort: an unwritable cache only costs a re-measurement next time."""
    data = _read_cache()
    data[key] = entry
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


@torch.inference_mode()
def _fastest_forward(encoder: nn.Module, sample: torch.Tensor, runs: int = 2) -> float:
    encoder(sample)  # warm-up: first calls pay for allocation and kernel selection
    best = float("inf")
    for _ in range(runs):  # the fastest run: other processes only ever slow a run down
        start = time.perf_counter()
        encoder(sample)
        best = min(best, time.perf_counter() - start)
    return best


def measure(encoder: nn.Module, sample_shape: tuple[int, ...]) -> dict:
    """Time ``encoder`` (fp32, on the CPU) and a bf16 copy of it on zeros of ``sample_shape``."""
    sample = torch.zeros(sample_shape)
    fp32 = _fastest_forward(encoder, sample)
    bf16_encoder = copy.deepcopy(encoder).to(torch.bfloat16)  # a copy: fp32 weights must stay exact
    bf16 = _fastest_forward(bf16_encoder, sample.to(torch.bfloat16))
    del bf16_encoder
    return {"fp32_s": round(fp32, 5), "bf16_s": round(bf16, 5), "speedup": round(fp32 / max(bf16, 1e-9), 3),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}


def settle(choice: DeviceChoice, encoder: nn.Module, model_name: str,
           sample_shape: tuple[int, ...]) -> DeviceChoice:
    """Turn a provisional CPU choice (``measure_bf16``) into a final one; others pass through."""
    if not choice.measure_bf16:
        return choice
    key = verdict_key(encoder, model_name, sample_shape)
    entry = _read_cache().get(key)
    cached = isinstance(entry, dict) and isinstance(entry.get("speedup"), (int, float))
    if not cached:
        entry = measure(encoder, sample_shape)
        _write_cache(key, entry)
    speedup = float(entry["speedup"])
    dtype = torch.bfloat16 if speedup >= BF16_MIN_SPEEDUP else torch.float32
    how = "cached measurement" if cached else "measured"
    reason = choice.reason.replace("; bf16 to be measured on the model", "")
    return dataclasses.replace(choice, dtype=dtype, measure_bf16=False,
                               reason=f"{reason}; {dtype_name(dtype)}: bf16 {speedup:.2f}x fp32 on this "
                                      f"model ({how})")
