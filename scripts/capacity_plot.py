"""The capacity curve of docs/results/memory.md: test accuracy over the query steps of
``mqar`` against the number of pairs, one line per model, from the runs of
``scripts/memory_evidence.sh capacity``. A point whose runs are under RUNS replaces that
point of the DEST/capacity.json already written; the others are kept, so that a curve can be
rerun or extended one point at a time.

    python scripts/capacity_plot.py runs/results docs/results/memory
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from enn.data.atomic import atomic_write_json  # noqa: E402

# the comparison folder's suffix and run name -> the line's label
LINES = {("-gated", "engram"): "ENN, default (associative, gated update)",
         ("", "engram"): "ENN, associative, residual update",
         ("-paper-cell", "engram"): "ENN, paper preset", ("", "lstm"): "LSTM", ("", "gru"): "GRU"}
KEPT = ("params", "hidden_sizes", "preset")


def collect(runs: Path) -> dict[str, dict[int, dict]]:
    """{label: {pairs: test accuracy and epochs of each seed, their mean and std, and the
    run's settings}} over every finished run."""
    seeds: dict[tuple[str, int], list[dict]] = {}
    for metrics_file in sorted(runs.glob("capacity-p*/*-seed*/metrics.json")):
        match = re.fullmatch(r"capacity-p(\d+)(.*)", metrics_file.parent.parent.name)
        model = re.sub(r"-seed\d+$", "", metrics_file.parent.name)
        label = LINES.get((match[2], model))
        if label is not None:
            seeds.setdefault((label, int(match[1])), []).append(
                json.loads(metrics_file.read_text()))
    curves: dict[str, dict[int, dict]] = {label: {} for label in LINES.values()}
    for (label, pairs), runs_ in sorted(seeds.items()):
        acc = [m["test_acc"] for m in runs_]
        curves[label][pairs] = {
            "test_acc": acc, "mean": statistics.mean(acc),
            "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "epochs_run": [m["epochs_run"] for m in runs_],
            "best_epoch": [m["best_epoch"] for m in runs_],
            **{k: runs_[0].get(k) for k in KEPT}}
    return {label: points for label, points in curves.items() if points}


def plot(curves: dict[str, dict[int, dict]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        pairs = list(points)
        seeds = max(len(points[p]["test_acc"]) for p in pairs)
        ax.errorbar(pairs, [points[p]["mean"] for p in pairs],
                    yerr=[points[p]["std"] for p in pairs], marker="o", capsize=3,
                    label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
    ax.axhline(1 / 32, color="grey", linestyle=":", label="chance (1/32)")
    ax.set_xticks(sorted({p for points in curves.values() for p in points}))
    ax.set_xlabel("key-value pairs per sequence (64 steps)")
    ax.set_ylabel("test accuracy over the queries (mean, std)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Multi-query associative recall, 60k-72k parameters each")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def merge(old: dict[str, dict[str, dict]], new: dict[str, dict[int, dict]]
          ) -> dict[str, dict[int, dict]]:
    """The points of ``old`` (as read back from capacity.json: pairs as strings) with those
    of ``new`` in their place, each line's points in order of pairs."""
    curves = {label: {int(p): point for p, point in points.items()}
              for label, points in old.items()}
    for label, points in new.items():
        curves.setdefault(label, {}).update(points)
    order = [*LINES.values(), *sorted(set(curves) - set(LINES.values()))]  # the legend's
    return {label: dict(sorted(curves[label].items())) for label in order if label in curves}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="the folder of the capacity-p* comparisons")
    p.add_argument("dest", type=Path, help="where capacity.json and capacity.png go")
    args = p.parse_args(argv)
    if not args.runs.is_dir():
        p.error(f"{args.runs} is not a folder")
    written = args.dest / "capacity.json"
    old = json.loads(written.read_text()) if written.exists() else {}
    curves = merge(old, collect(args.runs))
    if not curves:
        p.error(f"no finished capacity runs under {args.runs}")
    atomic_write_json(written, curves, sort_keys=False)  # the legend's order
    plot(curves, args.dest / "capacity.png")
    print(f"wrote {written} and {args.dest / 'capacity.png'}")


if __name__ == "__main__":
    main()
