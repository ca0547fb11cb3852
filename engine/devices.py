"""Which device and number format to run on, and why (the app shows the reason to the user)."""

from __future__ import annotations

import dataclasses
import functools
import time

import torch


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype
    reason: str

    def describe(self) -> str:
        fmt = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")
        return f"{self.device.type.upper()} {fmt} ({self.reason})"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(requested: str = "auto") -> tuple[torch.device, str]:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    requested = str(requested).lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), f"auto: CUDA GPU {torch.cuda.get_device_name(0)}"
        if _mps_available():
            return torch.device("mps"), "auto: Apple GPU (MPS)"
        why = "no CUDA GPU visible" if torch.version.cuda else "this torch build has no CUDA support"
        return torch.device("cpu"), f"auto: {why}, using the CPU"
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible to torch")
    if device.type == "mps" and not _mps_available():
        raise RuntimeError("device 'mps' was asked for but MPS is not available")
    return device, "as requested"


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """Measured fp32/bf16 time ratio of a ViT-sized matmul on this CPU (>1 means bf16 is faster).

    CPUs with AVX512-BF16 or AMX run bf16 several times faster; others emulate it and are slower.
    Measuring once (~0.1 s) beats guessing from CPU flags.
    """
    x = torch.randn(512, 768)
    w = torch.randn(768, 3072)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = x.to(dtype), w.to(dtype)
        a @ b  # warm-up
        runs = []
        for _ in range(10):  # the fastest run: other processes only ever slow a run down
            start = time.perf_counter()
            a @ b
            runs.append(time.perf_counter() - start)
        times[dtype] = min(runs)
    return times[torch.float32] / max(times[torch.bfloat16], 1e-9)


def choose(requested_device: str = "auto", precision: str = "auto") -> DeviceChoice:
    """Resolve device and dtype. ``precision`` is ``auto``, ``fp32``, ``bf16`` or ``fp16``."""
    device, reason = resolve_device(requested_device)
    named = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision != "auto":
        if precision not in named:
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
        return DeviceChoice(device, named[precision], reason)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return DeviceChoice(device, dtype, reason)
    if device.type == "cpu":
        speedup = cpu_bf16_speedup()
        if speedup >= 1.5:
            return DeviceChoice(device, torch.bfloat16, f"{reason}; bf16 measured {speedup:.1f}x faster")
        return DeviceChoice(device, torch.float32, f"{reason}; bf16 not faster here ({speedup:.1f}x)")
    return DeviceChoice(device, torch.float32, reason)
