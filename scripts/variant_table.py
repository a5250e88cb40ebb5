"""One model's test score across comparison folders that differ in one setting, against the
first folder: per-seed values, mean ± std, and each folder's difference from the first with
Welch's 95% interval, its p-value and Hedges' g. Prints a Markdown table. A folder is a
comparison's run folder or a published one (its run records under ``runs/``); the score is
the runs' test accuracy or perplexity unless ``--score`` names another metrics.json field.

    python scripts/variant_table.py runs/results/mnist-paper runs/results/mnist-recipe-*
    python scripts/variant_table.py --model engram --score test_loss BASE OTHER...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from enn.analysis.stats import describe, welch
from enn.analysis.summary import format_spread, load_runs, score_of


def finished_runs(folder: Path, model: str) -> list[tuple[Path, dict]]:
    """The finished runs ``MODEL-seedS`` of a comparison folder (or of its records), by seed."""
    runs = load_runs(folder)
    return sorted(((run, m) for run, m in runs if run.name.startswith(f"{model}-seed")),
                  key=lambda r: int(r[0].name.rsplit("-seed", 1)[1]))


def seed_scores(folder: Path, model: str, score: str | None) -> list[float]:
    """Each finished run's ``score`` (None: its test accuracy or perplexity), by seed."""
    values = []
    for run, m in finished_runs(folder, model):
        field = score or score_of(m)
        if field not in m:
            raise SystemExit(f"variant_table: {run}/metrics.json has no {field!r}; its fields: "
                             + ", ".join(sorted(m)))
        values.append(m[field])
    return values


def rows(folders: list[Path], model: str, score: str | None = None) -> list[str]:
    base = seed_scores(folders[0], model, score)
    lines = [
        f"| folder | {score or 'test score'} per seed | mean ± std | difference [Welch 95%] | p "
        "| Hedges' g |",
        "|---|---|---|---|---|---|",
    ]
    for folder in folders:
        values = seed_scores(folder, model, score)
        if not values:
            raise SystemExit(f"variant_table: no finished {model} runs in {folder}")
        d = describe(values)
        per_seed = ", ".join(f"{v:.4f}" for v in values)
        line = f"| {folder.name} | {per_seed} | {format_spread(d)} |"
        if folder == folders[0] or len(values) < 2 or len(base) < 2:
            lines.append(line + " | | |")
            continue
        w = welch(values, base)
        g = "" if w["g"] is None else f"{w['g']:+.1f} [{w['g_ci'][0]:+.1f}, {w['g_ci'][1]:+.1f}]"
        if w["p"] is None:  # no spread in either folder
            lines.append(f"{line} {w['diff']:+.4f} | | {g} |")
            continue
        p = f"{w['p']:.3f}" if w["p"] >= 0.001 else "< 0.001"
        lines.append(
            f"{line} {w['diff']:+.4f} [{w['ci'][0]:+.4f}, {w['ci'][1]:+.4f}] | {p} | {g} |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="comparison folders, the base first")
    p.add_argument("--model", default="engram")
    p.add_argument("--score", help="a metrics.json field (default: test_acc or test_ppl)")
    args = p.parse_args()
    print("\n".join(rows(args.folders, args.model, args.score)))


if __name__ == "__main__":
    main()
