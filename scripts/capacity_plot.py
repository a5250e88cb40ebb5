"""The capacity curve of docs/results/memory.md: MQAR test accuracy against the number of pairs.

    python scripts/capacity_plot.py runs/results docs/results/memory/capacity.png

Reads the run folders that ``scripts/memory_evidence.sh capacity`` writes
(``capacity-p<P>/<model>-seed<s>`` and ``capacity-p<P>-paper-cell/engram-seed<s>``).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"engram": "ENN, associative", "engram-paper-cell": "ENN, paper's cell",
          "lstm": "LSTM", "gru": "GRU"}


def curves(root: Path) -> dict[str, dict[int, list[tuple[float, int]]]]:
    """{model: {pairs: [(test accuracy, parameters), ...]}} over the seeds found."""
    found: dict[str, dict[int, list[tuple[float, int]]]] = defaultdict(lambda: defaultdict(list))
    for metrics in sorted(root.glob("capacity-p*/*-seed*/metrics.json")):
        match = re.fullmatch(r"capacity-p(\d+)(-paper-cell)?", metrics.parent.parent.name)
        if match is None:
            continue
        m = json.loads(metrics.read_text())
        name = m["model"] + (match.group(2) or "")
        found[name][int(match.group(1))].append((m["test_acc"], m["params"]))
    return found


def main(root: str, out: str) -> None:
    data = curves(Path(root))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in LABELS.items():
        if name not in data:
            continue
        pairs = sorted(data[name])
        acc = [sum(a for a, _ in data[name][p]) / len(data[name][p]) for p in pairs]
        params = data[name][pairs[0]][0][1]
        ax.plot(pairs, acc, marker="o", label=f"{label} ({params:,} parameters)")
    ax.set_xlabel("key-value pairs per sequence (64 steps, every key queried once)")
    ax.set_ylabel("test accuracy at the query steps")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Multi-query associative recall: capacity")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
