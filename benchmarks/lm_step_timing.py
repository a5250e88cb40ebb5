"""Training-step time of the four language models at the WikiText-103-small shapes
(vocabulary 10,000, batch 128 x 32 tokens, embedding and hidden 128), interleaved in one
process, median of the timed steps and of each step over the LSTM step of its round: does
the softmax dominate, and is the ENN then as fast
as GRU/LSTM? Default preset, one thread unless --threads.

    python -m benchmarks.lm_step_timing --repeats 7 [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.bench import interleaved_times, round_ratios
from enn.cli import at_least
from enn.models import build_model, resolve
from enn.models.build import DataShape

VOCAB, BATCH, BPTT = 10_000, 128, 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=at_least(1), default=7)
    parser.add_argument("--threads", type=at_least(1), default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = DataShape("language_model", VOCAB, vocab_size=VOCAB)
    models, opts = {}, {}
    for name in ("engram", "lstm", "gru", "rnn"):
        models[name] = build_model(resolve("wikitext103-small", name).model, shape).train()
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (BATCH, BPTT))
    y = torch.randint(0, VOCAB, (BATCH, BPTT))

    def train_step(name: str) -> None:
        hidden, _ = models[name](x)
        loss = models[name].nll(hidden, y).mean()
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()

    times = interleaved_times({n: lambda n=n: train_step(n) for n in models}, args.repeats,
                              warmup=2)
    print(f"threads={args.threads} repeats={args.repeats}")
    print("| model | train ms/step (median) | x LSTM per round: median [quartiles] |")
    print("|---|---|---|")
    for name, t in times.items():
        ratio = round_ratios(t, times["lstm"])
        print(f"| {name} | {1000 * statistics.median(t):.1f} | {ratio['median']:.2f} "
              f"[{ratio['q1']:.2f}, {ratio['q3']:.2f}] |")


if __name__ == "__main__":
    main()
