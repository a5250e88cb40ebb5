"""What the encoder costs inside a training step (docs/results/speed.md, session 8): two
identical classifiers of ``enn bench``, one whose encoder is replaced by a leaf tensor (no
encoder work; the same gradients flow into it), and the LSTM, in turn (the two classifiers swap
places every round); medians and the ratio per round.

    python scripts/encoder_cost.py shared|per_sample [--repeats 61]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import enn.ops.engram.fast as fast
from enn.bench import build, keep_freed_memory, make_inputs, round_ratios, train_step


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

    with_enc = build(f"enn_{args.trace}", 28, 128, 64)
    without = build(f"enn_{args.trace}", 28, 128, 64)
    without.load_state_dict(with_enc.state_dict())
    models = {"with": with_enc, "without": without, "lstm": build("lstm", 28, 128, 64)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    x, y = make_inputs(128, 28, 28, torch.device("cpu"))
    times = {k: [] for k in models}
    for i in range(3 + args.repeats):
        for key in ("with", "without", "lstm") if i % 2 else ("without", "with", "lstm"):
            fast.encode = no_encoder if key == "without" else real_encode
            t = train_step(models[key], opts[key], x, y)
            if i >= 3:
                times[key].append(t)
    fast.encode = real_encode
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(f"{args.trace}: with the encoder {ms['with']:.1f} ms, without {ms['without']:.1f} ms, "
          f"LSTM {ms['lstm']:.1f} ms; with / without per round "
          f"{round_ratios(times['with'], times['without'])['median']:.3f}")


if __name__ == "__main__":
    main()
