"""How close the engine's encoder runs to this machine's limits (the speed-of-light ratio).

Prints ONE JSON object on stdout (progress on stderr). In one process, for a model (default
``clip:ViT-B-16/random`` with each training-free method):

- ``set_image_s``: ``Segmenter.set_image`` of a 1024x768 image (resize, windows, batching, averaging);
  ``plain_forward_s``: the same windows through the same encoder one at a time as contiguous
  tensors, nothing else (the plainest possible run); ``ratio`` = set_image / plain (target <= 1.3)
  for each ``--batch-sizes`` value.
- ``gemm``: this CPU's measured matrix-multiply throughput (best of several runs of a ViT-B-sized
  ``1024 x 768 @ 768 x 3072`` product) in fp32 and bf16, GFLOP/s.
- ``vit_512``: one 512² window through the encoder: analytic FLOPs of the forward (projections, MLPs,
  attention, patch embedding), seconds, achieved GFLOP/s and its fraction of the GEMM throughput
  of the format it ran in (target >= 0.40 for ViT-B-16).

Library versions and the machine are recorded with the numbers: they drift between installs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_latency import synthetic_image  # noqa: E402
from chimera_engine import load_segmenter, tiling  # noqa: E402

RATIO_TARGET, GEMM_FRACTION_TARGET = 1.3, 0.40


def log(message: str) -> None:
    print(f"[speed_of_light] {message}", file=sys.stderr, flush=True)


def best_of(fn, runs: int) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gemm_gflops(dtype: torch.dtype, runs: int = 10) -> float:
    a, b = torch.randn(1024, 768).to(dtype), torch.randn(768, 3072).to(dtype)
    return 2 * 1024 * 768 * 3072 / best_of(lambda: a @ b, runs) / 1e9


def vit_flops(visual, height: int, width: int) -> float:
    """Multiply-adds x 2 of a ViT forward on one ``height x width`` image (all tokens, all blocks)."""
    p = visual.patch_size[0]
    tokens = 1 + (height // p) * (width // p)
    w = visual.transformer.width
    mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features
    per_block = 2 * tokens * w * (3 * w + w + 2 * mlp) + 2 * 2 * tokens * tokens * w
    embed = 2 * (tokens - 1) * 3 * p * p * w
    proj = 2 * tokens * w * visual.proj.shape[1]
    return float(len(visual.transformer.resblocks) * per_block + embed + proj)


def windows_of(seg, rgb) -> list[torch.Tensor]:
    model, stride = seg.model, seg.model.output_stride
    size = tiling.encode_size(rgb.shape[0], rgb.shape[1], model.inference, stride)
    tensor = tiling.to_tensor(tiling.resize_for_encoding(rgb, size), model.mean, model.std)
    return [tensor[:, y:y + h, x:x + w].contiguous() for y, x, h, w in tiling.windows(*size, model.inference, stride)]


def measure_model(name: str, args) -> dict:
    rgb = synthetic_image(1024, 768, seed=0)
    out = {"image": "1024x768", "by_batch_size": {}}
    for batch in args.batch_sizes:
        seg = load_segmenter(name, args.device, args.precision, batch_size=batch, cache_images=1)
        dtype = seg.device.dtype
        crops = [c.to(dtype) for c in windows_of(seg, rgb)]
        encoder = seg.model.encoder

        def plain():
            with torch.inference_mode():
                for crop in crops:
                    encoder(crop[None])

        def full():
            seg._cache.clear()
            seg.set_image(rgb)

        plain_s, set_s = best_of(plain, args.runs), best_of(full, args.runs)
        out["device"] = seg.describe()
        out["windows"] = f"{len(crops)} x {tuple(crops[0].shape[1:])}"
        out["by_batch_size"][batch] = {"set_image_s": round(set_s, 4), "plain_forward_s": round(plain_s, 4),
                                       "ratio": round(set_s / plain_s, 3), "target": RATIO_TARGET,
                                       "met": set_s / plain_s <= RATIO_TARGET}
        log(f"{name} batch {batch}: set_image {set_s:.3f} s, plain {plain_s:.3f} s, ratio {set_s / plain_s:.2f}")
    return out


def vit_512(name: str, args, gemm: dict) -> dict:
    seg = load_segmenter(name, args.device, args.precision)
    encoder, dtype = seg.model.encoder, seg.device.dtype
    x = torch.randn(1, 3, 512, 512).to(dtype)
    with torch.inference_mode():
        seconds = best_of(lambda: encoder(x), args.runs)
    flops = vit_flops(seg.model.clip.visual, 512, 512)
    achieved = flops / seconds / 1e9
    peak = gemm["bf16" if dtype == torch.bfloat16 else "fp32"]
    fraction = achieved / peak
    log(f"{name} 512²: {seconds:.3f} s, {achieved:.1f} GFLOP/s = {fraction:.2f} of GEMM")
    return {"model": name, "device": seg.describe(), "gflop": round(flops / 1e9, 2), "seconds": round(seconds, 4),
            "achieved_gflops": round(achieved, 1), "gemm_gflops": round(peak, 1), "fraction": round(fraction, 3),
            "target": GEMM_FRACTION_TARGET, "met": fraction >= GEMM_FRACTION_TARGET}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-16")
    p.add_argument("--methods", nargs="+", default=["naclip", "sclip", "clearclip", "maskclip"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    import open_clip

    gemm = {"fp32": round(gemm_gflops(torch.float32), 1), "bf16": round(gemm_gflops(torch.bfloat16, 2), 1)}
    log(f"GEMM GFLOP/s: {gemm}")
    report = {"machine": {"platform": platform.platform(), "cpu": platform.processor(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "open_clip": open_clip.__version__}, "gemm_gflops": gemm, "models": {}}
    for method in args.methods:
        name = f"clip:{args.arch}/random+{method}"
        report["models"][name] = measure_model(name, args)
    report["vit_512"] = vit_512(f"clip:{args.arch}/random+maskclip", args, gemm)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
