"""What the encoder costs inside a training step (docs/results/speed.md, session 8): two
identical classifiers of ``enn bench``, one whose encoder is replaced by a leaf tensor (no
encoder work; the same gradients flow into it), and the LSTM, in turn (the two classifiers swap
places every round); medians and the ratio per round.

    python scripts/encoder_cost.py shared|per_sample [--repeats 61]
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import contextmanager

import torch
from ab_fast_path import alternating_steps

import enn.ops.engram.fast as fast
from enn.bench import build, keep_freed_memory, round_ratios


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("trace", choices=("shared", "per_sample"))
    parser.add_argument("--repeats", type=int, default=61)
    args = parser.parse_args()
    keep_freed_memory()  # as enn bench does
    torch.manual_seed(0)
    real_encode, fixed = fast.encode, {}

    def no_encoder(x, weights, eps):
        if x.shape not in fixed:
            fixed[x.shape] = real_encode(x, weights, eps).detach().requires_grad_()
        return fixed[x.shape]

    @contextmanager
    def encoder_of(key: str):
        fast.encode = no_encoder if key == "without" else real_encode
        try:
            yield
        finally:
            fast.encode = real_encode

    with_enc = build(f"enn_{args.trace}", 28, 128, 64)
    without = build(f"enn_{args.trace}", 28, 128, 64)
    without.load_state_dict(with_enc.state_dict())
    models = {"with": with_enc, "without": without, "lstm": build("lstm", 28, 128, 64)}
    times = alternating_steps(models, encoder_of, args.repeats)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"{args.trace}: with the encoder {ms['with']:.1f} ms, without {ms['without']:.1f} ms, "
          f"LSTM {ms['lstm']:.1f} ms; with / without per round "
          f"{round_ratios(times['with'], times['without'])['median']:.3f}")


if __name__ == "__main__":
    main()
