"""The fast path of an earlier commit against the current one, interleaved in one process,
same weights and inputs, paper MNIST shapes, train-mode noise: forward + backward ms (median)
of the memory pass, the hidden pass and the whole layer (from a zero state, as the layer's
default passes it).

    python scripts/ab_fast_path.py cb6e560 [--repeats 15]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from enn import Engram
from enn.ops.engram import fast as current
from enn.ops.engram.recurrent import encode

OPS = Path("src/enn/ops/engram")


def load_old(rev: str, into: Path):
    """The ops package at ``rev``, importable as ``old_engram``."""
    pkg = into / "old_engram"
    pkg.mkdir()
    listing = subprocess.run(["git", "ls-tree", "--name-only", rev, f"{OPS}/"], check=True,
                             capture_output=True, text=True).stdout.split()
    for path in listing:
        source = subprocess.run(["git", "show", f"{rev}:{path}"], check=True,
                                capture_output=True, text=True).stdout
        (pkg / Path(path).name).write_text(source)
    sys.path.insert(0, str(into))
    return importlib.import_module("old_engram.fast")


def compare(trace: str, old, rev: str, repeats: int) -> None:
    torch.manual_seed(0)
    B, T, N, h = 128, 28, 64, 128
    x = torch.rand(B, T, 28)  # (B, T, d)
    noise = 0.001 * torch.randn(T, N, h)  # (T, N, h)
    layer = Engram(28, h, batch_first=True, memory_size=N, trace=trace)
    w, hy = layer.layer_weights(0), layer.hyper
    z = encode(x, w, hy.ln_eps).detach().requires_grad_()  # (B, T, h)
    m = torch.randn_like(z).requires_grad_()
    H0 = torch.zeros((B, N, h) if trace == "per_sample" else (N, h))
    state = current.EngramState(torch.zeros(B, h), H0)

    def memory(mod) -> None:
        if trace == "shared":
            _, r, H_n = mod._memory_shared(z, w.memory, H0, noise, hy, None)
        else:
            _, r, H_n, _ = mod._memory_per_sample(z, w.memory, H0, noise, hy, None,
                                                  mod.DEFAULT_CHUNK, {})
        (r.sum() + H_n.sum()).backward()

    def hidden(mod) -> None:
        o, h_n = mod._hidden_pass(z, m, state.h, w, hy, None)
        (o.sum() + h_n.sum()).backward()

    def whole(mod) -> None:  # as the layer calls it by default: now, zeros are passed as None
        o, _, _ = mod.fast_engram(x, w, hy, None if mod is current else state, noise=noise)
        o[:, -1].sum().backward()

    for name, fn in (("memory pass", memory), ("hidden pass", hidden), ("layer", whole)):
        times: dict[str, list[float]] = {"then": [], "now": []}
        for i in range(repeats + 2):
            for key, mod in (("then", old), ("now", current)):
                start = time.perf_counter()
                fn(mod)
                if i >= 2:
                    times[key].append(time.perf_counter() - start)
        then, now = (1e3 * statistics.median(times[k]) for k in ("then", "now"))
        print(f"{trace:10s} {name:12s} {rev}: {then:6.1f} ms  now: {now:6.1f} ms  "
              f"({then / now:.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.rev, Path(tmp))
        for trace in ("shared", "per_sample"):
            compare(trace, old, args.rev, args.repeats)


if __name__ == "__main__":
    main()
