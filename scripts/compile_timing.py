"""Does torch.compile (inductor) speed up the ENN classifier's training step? Measures the
first compiled step (the compile cost) and the median compiled and eager steps, interleaved in
one process, at the paper's MNIST shapes (batch 128, 28 x 28, hidden 128, memory 64).

    python scripts/compile_timing.py --trace shared [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from enn.bench import CLASSES, build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", choices=["per_sample", "shared"], default="shared")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build(f"enn_{args.trace}", 28, 128, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    compiled = torch.compile(model)
    x, y = torch.rand(128, 28, 28), torch.randint(0, CLASSES, (128,))  # (B, T, d), (B,)

    def step(m: torch.nn.Module) -> float:
        start = time.perf_counter()
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    first = step(compiled)
    for _ in range(2):
        step(compiled), step(model)
    timed = [(step(compiled), step(model)) for _ in range(args.repeats)]
    comp, eager = (1e3 * statistics.median(t) for t in zip(*timed, strict=True))
    print(f"{args.trace}: first compiled step {first:.1f} s; median of {args.repeats}, "
          f"interleaved: compiled {comp:.1f} ms, eager {eager:.1f} ms ({comp / eager:.2f}x)")


if __name__ == "__main__":
    main()
