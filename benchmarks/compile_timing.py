"""Does torch.compile (inductor, fullgraph=True) speed up the ENN classifier's training step?
Measures the first compiled step (the compile cost) and the median compiled and eager steps,
interleaved in one process, at the paper's MNIST shapes (batch 128, 28 x 28, hidden 128,
memory 64), and the largest difference of the compiled model's loss from eager's.

    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python -m benchmarks.compile_timing --trace shared

One torch thread unless ``--threads``; the ratio is of the two medians.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.bench import CPU, build, interleaved_ms, make_inputs, train_step
from enn.cli import at_least


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", choices=["per_sample", "shared"], default="shared")
    parser.add_argument("--repeats", type=at_least(1), default=9)
    parser.add_argument("--threads", type=at_least(1), default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(f"enn_{args.trace}", 28, 128, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    compiled = torch.compile(model, fullgraph=True)
    x, y = make_inputs(128, 28, 28, CPU)  # (B, T, d), (B,)
    first = train_step(compiled, opt, x, y)
    model.eval()  # no dropout or trace noise: the two losses must agree
    gap = (F.cross_entropy(compiled(x), y) - F.cross_entropy(model(x), y)).abs().item()
    model.train()
    ms = interleaved_ms({"compiled": lambda: train_step(compiled, opt, x, y),
                         "eager": lambda: train_step(model, opt, x, y)},
                        args.repeats, warmup=2)
    print(f"{args.trace}, {torch.get_num_threads()} thread(s): first compiled step "
          f"{first:.1f} s; median of {args.repeats}, "
          f"interleaved: compiled {ms['compiled']:.1f} ms, eager {ms['eager']:.1f} ms "
          f"({ms['compiled'] / ms['eager']:.2f}x); eval loss compiled - eager: {gap:.1e}")


if __name__ == "__main__":
    main()
