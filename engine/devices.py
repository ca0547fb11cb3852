"""Which device and number format to run on, and why (the app shows the reason to the user).

Precision ``auto`` is decided once per machine and model, never from a noisy timing per run:
- CUDA: bf16 where the GPU supports it, else fp16.
- CPU without native bf16 (no AVX512-BF16 / AMX in the CPU flags): fp32 at once. Such CPUs emulate
  bf16 (a 512 x 768 x 3072 matmul: 3.6 s bf16 vs 0.03 s fp32 on an AVX2 EPYC, torch 2.14.1).
- CPU with native bf16: the *actual encoder* is timed on the batch shape it will run, in both
  formats (``chimera_engine.precision``), and the verdict is cached per machine, library versions and model,
  so the same command on the same machine always runs in the same format and gives the same labels.
"""

from __future__ import annotations

import dataclasses
import functools
import platform

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    dtype: torch.dtype
    reason: str
    measure_bf16: bool = False  # dtype is provisional: time the model in bf16 before settling

    def describe(self) -> str:
        return f"{self.device.type.upper()} {dtype_name(self.dtype)} ({self.reason})"


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


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
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {requested!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is visible to torch")
    if device.type == "mps" and not _mps_available():
        raise RuntimeError("device 'mps' was asked for but MPS is not available")
    return device, "as requested"


@functools.lru_cache(maxsize=None)
def cpu_description() -> tuple[str, frozenset[str]]:
    """(model name, flags) of this machine's CPU; flags are empty where the OS does not list them."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    name = value.strip()
                elif key == "flags":
                    flags = frozenset(value.split())
                if flags and name:
                    break
    except OSError:
        pass
    return name, flags


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX); others emulate it, slowly."""
    return any(flag in cpu_description()[1] for flag in NATIVE_BF16_FLAGS)


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
        if not cpu_has_native_bf16():
            return DeviceChoice(device, torch.float32, f"{reason}; fp32: this CPU has no native bf16 "
                                                       "(no AVX512-BF16/AMX)")
        return DeviceChoice(device, torch.float32, f"{reason}; bf16 to be measured on the model",
                            measure_bf16=True)
    return DeviceChoice(device, torch.float32, reason)
