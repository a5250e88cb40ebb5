"""The capacity curve of docs/results/memory.md: test accuracy over the query steps of
``mqar`` against the number of pairs, one line per model, from the runs of
``scripts/memory_evidence.sh capacity``.

    python scripts/capacity_plot.py runs/results docs/results/memory
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from enn.train.callbacks import atomic_write_json  # noqa: E402

# the comparison folder's suffix and run name -> the line's label
LINES = {("", "engram"): "ENN, default (associative)",
         ("-paper-cell", "engram"): "ENN, paper preset", ("", "lstm"): "LSTM", ("", "gru"): "GRU"}
KEPT = ("test_acc", "params", "hidden_sizes", "epochs_run", "best_epoch", "seconds_per_epoch",
        "preset")


def collect(runs: Path) -> dict[str, dict[int, dict]]:
    """{label: {pairs: the run's metrics}} for every finished run."""
    curves: dict[str, dict[int, dict]] = {label: {} for label in LINES.values()}
    for metrics_file in sorted(runs.glob("capacity-p*/*-seed0/metrics.json")):
        match = re.fullmatch(r"capacity-p(\d+)(.*)", metrics_file.parent.parent.name)
        label = LINES.get((match[2], metrics_file.parent.name.removesuffix("-seed0")))
        if label is not None:
            metrics = json.loads(metrics_file.read_text())
            curves[label][int(match[1])] = {k: metrics.get(k) for k in KEPT}
    return {label: dict(sorted(points.items())) for label, points in curves.items() if points}


def plot(curves: dict[str, dict[int, dict]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        pairs = list(points)
        ax.plot(pairs, [points[p]["test_acc"] for p in pairs], marker="o", label=label)
    ax.axhline(1 / 32, color="grey", linestyle=":", label="chance (1/32)")
    ax.set_xticks(sorted({p for points in curves.values() for p in points}))
    ax.set_xlabel("key-value pairs per sequence (64 steps)")
    ax.set_ylabel("test accuracy over the queries")
    ax.set_ylim(0, 1.02)
    ax.set_title("Multi-query associative recall, about 60k parameters each")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(runs: Path, dest: Path) -> None:
    curves = collect(runs)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / "capacity.json", curves)
    plot(curves, dest / "capacity.png")
    print(f"wrote {dest / 'capacity.json'} and {dest / 'capacity.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
