"""Precision ``auto``: decided from the CPU's capabilities, then from a cached timing of the real model."""

import json

import torch
from torch import nn

from chimera_engine import devices, precision


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


def test_cpu_without_native_bf16_runs_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "measure", lambda *a: (_ for _ in ()).throw(AssertionError("timed")))
    choice = devices.choose("cpu", "auto")
    assert choice.dtype == torch.float32 and not choice.measure_bf16
    assert "no native bf16" in choice.reason
    assert precision.settle(choice, _Encoder(), "m", (1, 3, 8, 8)) is choice


def test_native_bf16_cpu_times_the_model_once_then_reads_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CHIMERA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    choice = devices.choose("cpu", "auto")
    assert choice.measure_bf16 and choice.dtype == torch.float32
    timed = []
    real_measure = precision.measure
    monkeypatch.setattr(precision, "measure", lambda enc, shape: timed.append(shape) or real_measure(enc, shape))
    encoder = _Encoder()
    before = encoder.conv.weight.detach().clone()
    first = precision.settle(choice, encoder, "tiny", (2, 3, 16, 16))
    assert timed == [(2, 3, 16, 16)] and not first.measure_bf16
    assert torch.equal(encoder.conv.weight, before) and encoder.conv.weight.dtype == torch.float32  # timed a copy
    stored = json.loads((tmp_path / "precision.json").read_text())
    assert len(stored) == 1 and {"fp32_s", "bf16_s", "speedup"} <= set(next(iter(stored.values())))
    for _ in range(3):  # deterministic: the cached verdict, never a new timing
        again = precision.settle(choice, encoder, "tiny", (2, 3, 16, 16))
        assert again.dtype == first.dtype and "cached" in again.reason
    assert len(timed) == 1
    precision.settle(choice, encoder, "tiny", (4, 3, 16, 16))  # another batch shape is another verdict
    assert len(timed) == 2


def test_cached_verdict_picks_the_format(monkeypatch, tmp_path):
    monkeypatch.setenv("CHIMERA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    choice = devices.choose("cpu", "auto")
    encoder = _Encoder()
    for speedup, dtype in ((3.0, torch.bfloat16), (1.1, torch.float32)):
        key = precision.verdict_key(encoder, "m", (1, 3, 8, 8))
        (tmp_path / "precision.json").write_text(json.dumps({key: {"speedup": speedup}}))
        assert precision.settle(choice, encoder, "m", (1, 3, 8, 8)).dtype == dtype


def test_a_corrupt_cache_is_measured_again(monkeypatch, tmp_path):
    monkeypatch.setenv("CHIMERA_CACHE_DIR", str(tmp_path))
    (tmp_path / "precision.json").write_text("{not json")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "measure", lambda enc, shape: {"speedup": 0.5})
    out = precision.settle(devices.choose("cpu", "auto"), _Encoder(), "m", (1, 3, 8, 8))
    assert out.dtype == torch.float32
    assert json.loads((tmp_path / "precision.json").read_text())  # rewritten as valid JSON
