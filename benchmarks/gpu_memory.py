"""The Triton memory kernels against the naive reference on a CUDA device.

    python -m benchmarks.gpu_memory [--shapes paper large] [--modes per_sample shared]

Per shape, trace mode and dtype: first the kernels' outputs, final trace and gradients
against the reference's (the largest differences), then forward+backward steps of both,
interleaved (triton, naive, triton, naive, ...) after a warm-up round: the median steps, the
median of the per-round ratios naive / triton, and each one's peak memory growth over a
step. Where the reference's autograd graph would not fit (large, per-sample) only the
kernels run. ``--device cpu`` runs the kernels in Triton's interpreter (TRITON_INTERPRET=1),
which checks this script, not the speed.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.bench import interleaved_times, round_ratios
from enn.cli import at_least
from enn.ops.engram.common import MemoryConfig
from enn.ops.engram.naive import naive_memory
from enn.ops.engram.triton_memory import fused_recurrent_memory

SHAPES = {"paper": (128, 28, 128, 64), "large": (256, 784, 256, 128)}  # B, T, h, N
KERNELS = {"triton": fused_recurrent_memory, "naive": naive_memory}


def step(name: str, z: torch.Tensor, M: torch.Tensor, cfg: MemoryConfig) -> list[torch.Tensor]:
    """One forward+backward: attention, recall, final trace and the gradients of z and M."""
    z.grad = M.grad = None
    if name == "naive":
        out, hT = naive_memory(z, None, z, M, 0.95, 0.05, cfg, output_final_state=True)
    else:
        out, hT = fused_recurrent_memory(z, M, 0.95, 0.05, cfg, output_final_state=True)
    (out.recall.float().sum() + out.attention.float().square().sum() + hT.sum()).backward()
    return [out.attention, out.recall, hT, z.grad, M.grad]


def peak_growth_mib(name: str, z, M, cfg, device: torch.device) -> float | None:
    """The allocator's peak over one step minus what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(name, z, M, cfg)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def bench(shape: str, mode: str, dtype: torch.dtype, repeat: int, device: torch.device
          ) -> dict:
    B, T, D, N = SHAPES[shape]
    cfg = MemoryConfig(0.5, 1 / 0.75, 0.1, None, mode == "shared")
    torch.manual_seed(0)
    z = torch.randn(B, T, D, device=device, dtype=dtype, requires_grad=True)
    M = (0.1 * torch.randn(N, D, device=device)).to(dtype).requires_grad_()
    names = ["triton"] if shape == "large" and mode == "per_sample" else list(KERNELS)
    row = f"{shape:>6} {mode:>10} {str(dtype)[6:]:>8}"
    result: dict = {"shape": shape, "mode": mode, "dtype": str(dtype)[6:]}
    if "naive" in names:  # the same results first
        fast, ref = step("triton", z, M, cfg), step("naive", z, M, cfg)
        labels = ("attention", "recall", "trace", "grad z", "grad M")
        result["max_abs_diff"] = {k: (a.float() - b.float()).abs().max().item()
                                  for k, a, b in zip(labels, fast, ref, strict=True)}
        print(f"{row}   max |triton - naive|: " + ", ".join(
            f"{k} {v:.2e}" for k, v in result["max_abs_diff"].items()), flush=True)
    times = interleaved_times({n: lambda n=n: step(n, z, M, cfg) for n in names}, repeat,
                              warmup=1, device=device)
    for name in names:
        peak = peak_growth_mib(name, z, M, cfg, device)
        result[name] = {"ms": 1e3 * statistics.median(times[name]), "peak_mib": peak}
        print(f"{row} {name:>7}: forward+backward {result[name]['ms']:8.2f} ms (median), "
              f"peak growth {'n/a' if peak is None else format(peak, '.0f')} MiB", flush=True)
    if "naive" in names:
        result["naive_over_triton"] = round_ratios(times["naive"], times["triton"])
        q = result["naive_over_triton"]
        print(f"{row}   naive / triton per round: {q['median']:.2f} [{q['q1']:.2f}, "
              f"{q['q3']:.2f}]", flush=True)
    else:
        print(f"{row}   naive: skipped (the reference's graph is tens of GB)", flush=True)
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=["per_sample", "shared"],
                        choices=["per_sample", "shared"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16", "float64"])
    parser.add_argument("--repeat", type=at_least(1), default=5)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: Triton's interpreter (set TRITON_INTERPRET=1), a check only")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    device = torch.device(args.device)
    return [bench(shape, mode, getattr(torch, dtype), args.repeat, device)
            for shape in args.shapes for mode in args.modes for dtype in args.dtypes]


if __name__ == "__main__":
    main()
