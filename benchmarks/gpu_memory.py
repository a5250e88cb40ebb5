"""Time the Triton memory kernels against the naive reference on a CUDA device.

    python benchmarks/gpu_memory.py [--shapes paper large] [--modes per_sample shared]

Prints, per shape and trace mode, the forward and forward+backward time (median of a few
runs after a warm-up), the peak memory of forward+backward and the largest differences to
the reference (the reference is skipped where its autograd graph would not fit).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from enn.cli import at_least
from enn.ops.engram.common import MemoryConfig
from enn.ops.engram.naive import naive_memory
from enn.ops.engram.triton_memory import fused_recurrent_memory

SHAPES = {"paper": (128, 28, 128, 64), "large": (256, 784, 256, 128)}  # B, T, h, N


def timed(fn, repeat: int) -> float:
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def bench(shape: str, mode: str, dtype: torch.dtype, repeat: int) -> None:
    B, T, D, N = SHAPES[shape]
    cfg = MemoryConfig(0.5, 1 / 0.75, 0.1, None, mode == "shared")
    z = torch.randn(B, T, D, device="cuda", dtype=dtype, requires_grad=True)
    M = (0.1 * torch.randn(N, D, device="cuda")).to(dtype).requires_grad_()

    def forward(fn):
        if fn is naive_memory:
            return naive_memory(z, None, z, M, 0.95, 0.05, cfg, output_final_state=True)
        return fused_recurrent_memory(z, M, 0.95, 0.05, cfg, output_final_state=True)

    def step(fn):
        out, hT = forward(fn)
        (out.recall.float().sum() + out.attention.float().square().sum() + hT.sum()).backward()

    row = f"{shape:>6} {mode:>10} {str(dtype)[6:]:>8}"
    for name, fn in (("triton", fused_recurrent_memory), ("naive", naive_memory)):
        if fn is naive_memory and shape == "large" and mode == "per_sample":
            print(f"{row} {name:>7}: skipped (the reference's graph is tens of GB)")
            continue
        with torch.no_grad():
            t_fwd = timed(lambda fn=fn: forward(fn), repeat)
        torch.cuda.reset_peak_memory_stats()
        t_all = timed(lambda fn=fn: step(fn), repeat)
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"{row} {name:>7}: forward {1e3 * t_fwd:8.2f} ms, forward+backward "
              f"{1e3 * t_all:8.2f} ms, peak {peak:8.0f} MiB")
    if not (shape == "large" and mode == "per_sample"):
        with torch.no_grad():
            (a1, r1, _), h1 = forward(fused_recurrent_memory)
            (a2, r2, _), h2 = forward(naive_memory)
        diff = [(x.float() - y.float()).abs().max().item() for x, y in ((a1, a2), (r1, r2),
                                                                        (h1, h2))]
        print(f"{row}   max |triton - naive|: attention {diff[0]:.2e}, recall {diff[1]:.2e}, "
              f"trace {diff[2]:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=["per_sample", "shared"],
                        choices=["per_sample", "shared"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--repeat", type=at_least(1), default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    for shape in args.shapes:
        for mode in args.modes:
            for dtype in args.dtypes:
                bench(shape, mode, getattr(torch, dtype), args.repeat)


if __name__ == "__main__":
    main()
