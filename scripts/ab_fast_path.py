"""The fast path of an earlier commit against the current one, interleaved in one process,
same weights and inputs, paper MNIST shapes, train-mode noise, glibc keeping freed memory
(as ``enn bench`` does): forward + backward ms (median)
of the memory pass, the hidden pass and the whole layer (from a zero state, as the layer's
default passes it). ``--steps``: whole training steps of ``enn bench``'s classifier instead,
the earlier commit's, the current one's and the LSTM's in turn, with the ratios per round.

    python scripts/ab_fast_path.py cb6e560 [--repeats 15] [--steps]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch

import enn.nn.engram
from enn import Engram
from enn.bench import (
    build,
    interleaved_ms,
    keep_freed_memory,
    make_inputs,
    pass_steps,
    round_ratios,
    train_step,
)
from enn.ops.engram import fast as current
from enn.ops.engram.recurrent import encode

OPS = Path("src/enn/ops/engram")


def load_old(rev: str, into: Path):
    """The ops package at ``rev``, importable as ``old_engram``."""
    pkg = into / "old_engram"
    pkg.mkdir()
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, f"{OPS}/"],
                             check=True, capture_output=True, text=True).stdout.split()
    for path in listing:
        source = subprocess.run(["git", "show", f"{rev}:{path}"], check=True,
                                capture_output=True, text=True).stdout
        target = pkg / Path(path).relative_to(OPS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
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
    state = current.EngramState(torch.zeros(B, h),
                                torch.zeros((B, N, h) if trace == "per_sample" else (N, h)))
    fns = {}
    for key, ops in (("then", old), ("now", current)):
        # the passes as the layer runs them: on the CPU, the native kernels where that commit
        # has them
        native = hasattr(ops, "cpu_scan") and ops.cpu_scan.usable(z)
        for part, fn in pass_steps(ops, trace, w, hy, z, m, noise, state.trace,
                                   native=native).items():
            fns[(part, key)] = fn
        # the whole layer as it is called by default: now, zeros are passed as None
        fns[("layer", key)] = partial(whole_layer, ops, x, w, hy,
                                      None if ops is current else state, noise)
    ms = interleaved_ms(fns, repeats, warmup=2)
    for part in ("memory pass", "hidden pass", "layer"):
        then, now = ms[(part, "then")], ms[(part, "now")]
        print(f"{trace:10s} {part:12s} {rev}: {then:6.1f} ms  now: {now:6.1f} ms  "
              f"({then / now:.2f}x)", flush=True)


@contextmanager
def layer_ops(ops):
    """The Engram layer runs ``ops.fast_engram`` inside the block."""
    saved = enn.nn.engram.fast_engram
    enn.nn.engram.fast_engram = ops.fast_engram
    try:
        yield
    finally:
        enn.nn.engram.fast_engram = saved


def alternating_steps(models: dict, variant, repeats: int, warmup: int = 3
                      ) -> dict[str, list[float]]:
    """Training steps (forward, backward, Adam) of ``enn bench``'s models on one batch at the
    paper's shapes, in turn: the first two swap places every round, the rest follow. Each step
    runs inside ``variant(key)``, a context manager. Seconds per timed step, per model."""
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    x, y = make_inputs(128, 28, 28, torch.device("cpu"))
    first, second, *rest = models
    times = {k: [] for k in models}
    for i in range(warmup + repeats):
        for key in ((first, second) if i % 2 else (second, first)) + tuple(rest):
            with variant(key):
                t = train_step(models[key], opts[key], x, y)
            if i >= warmup:
                times[key].append(t)
    return times


def compare_steps(trace: str, old, rev: str, repeats: int) -> None:
    """Training steps of two identical classifiers, one on each commit's fast path, and of
    the LSTM baseline, in turn; ratios per round, as enn bench."""
    torch.manual_seed(0)
    then = build(f"enn_{trace}", 28, 128, 64)
    now = build(f"enn_{trace}", 28, 128, 64)
    now.load_state_dict(then.state_dict())
    models = {"then": then, "now": now, "lstm": build("lstm", 28, 128, 64)}
    times = alternating_steps(models, lambda k: layer_ops(old if k == "then" else current),
                              repeats)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    gain = round_ratios(times["then"], times["now"])
    print(f"{trace:10s} step  {rev}: {ms['then']:5.1f} ms  now: {ms['now']:5.1f} ms  "
          f"LSTM: {ms['lstm']:5.1f} ms  then/now per round {gain['median']:.3f} "
          f"[{gain['q1']:.3f}, {gain['q3']:.3f}]  x LSTM then "
          f"{round_ratios(times['then'], times['lstm'])['median']:.3f} now "
          f"{round_ratios(times['now'], times['lstm'])['median']:.3f}", flush=True)


def whole_layer(ops, x, weights, hyper, state, noise) -> None:
    out, _, _ = ops.fast_engram(x, weights, hyper, state, noise=noise)
    out[:, -1].sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", action="store_true",
                        help="whole training steps of the classifier, against the LSTM's")
    args = parser.parse_args()
    keep_freed_memory()  # as enn bench does: no page faults from one variant's frees
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.rev, Path(tmp))
        for trace in ("shared", "per_sample"):
            (compare_steps if args.steps else compare)(trace, old, args.rev, args.repeats)


if __name__ == "__main__":
    main()
