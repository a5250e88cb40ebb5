"""A comparison's summary: every finished run's ``metrics.json``, per model mean, spread and
confidence interval, and the tests between the models (``stats``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import stats

METRICS_FILE = "metrics.json"  # in a run folder; written when the run has finished
RECORDS = "runs"  # a published comparison folder keeps its runs' records here
SUMMARY_FIELDS = (
    "params",
    "test_loss",
    "test_acc",
    "test_ppl",
    "val_loss",
    "seconds_per_epoch",
    "seconds_per_step",
    "epochs_run",
    "best_epoch",
)


def score_of(metrics: dict) -> str:
    """The test score a run is compared by: perplexity for a language model, else accuracy."""
    return "test_ppl" if "test_ppl" in metrics else "test_acc"


def load_runs(out: Path) -> list[tuple[Path, dict]]:
    """(run folder, metrics) of every finished run in the comparison folder ``out``: its
    folders with a ``metrics.json``, or, in a published folder, its records under ``runs/``.
    The summary, the report and its curves all count these."""
    found = sorted(Path(out).glob(f"*/{METRICS_FILE}"))
    found = [p for p in found if p.parent.name != RECORDS] or sorted(
        Path(out).glob(f"{RECORDS}/*/{METRICS_FILE}"))
    runs = []
    for path in found:
        metrics = read_json(path)
        if not (isinstance(metrics, dict) and "model" in metrics):
            raise ValueError(f"{path} is not a run's metrics (expected an object naming its "
                             f"model)")
        runs.append((path.parent, metrics))
    return runs


def read_json(path: Path):
    """A run or summary file; a damaged one (or one edited by hand) is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def summarize(out: Path) -> dict:
    runs = [metrics for _, metrics in load_runs(out)]
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/{METRICS_FILE}) under {out}")
    task = runs[0]["task"]
    score = score_of(runs[0])
    by_model: dict[str, list[dict]] = {}
    for r in runs:
        by_model.setdefault(r["model"], []).append(r)
    table = {}
    for model, rs in by_model.items():
        table[model] = {"seeds": sorted(r["seed"] for r in rs), "preset": rs[0]["preset"]}
        for f in SUMMARY_FIELDS:
            values = [r[f] for r in rs if is_finite_number(r.get(f))]
            if values:
                table[model][f] = stats.describe(values)
    # the tests compare the models with two or more seeds, where at least two have them; a
    # run without a finite score or loss (one that diverged) is named, not counted
    no_score = [f"{r['model']}-seed{r['seed']}" for r in runs
                if not (is_finite_number(r.get(score)) and is_finite_number(r.get("test_loss")))]
    scored = {m: [r for r in rs if f"{m}-seed{r['seed']}" not in no_score]
              for m, rs in by_model.items()}
    repeated = [m for m, rs in scored.items() if len(rs) > 1]
    tested = repeated if len(repeated) > 1 else [m for m, rs in scored.items() if rs]
    scores = {m: [r[score] for r in scored[m]] for m in tested}
    losses = {m: [r["test_loss"] for r in scored[m]] for m in tested}
    return {
        "task": task,
        "score": score,
        "models": table,
        "tests": {
            "anova": stats.anova(scores),
            "kruskal": stats.kruskal(losses),
            "tukey": stats.tukey(scores),
            "left_out": [m for m in by_model if m not in tested and scored[m]],  # one seed
            "not_finite": no_score,
        },
    }


def is_finite_number(x) -> bool:
    """A metric that counts: a number, neither NaN nor infinite (a diverged run's are not)."""
    return isinstance(x, int | float) and math.isfinite(x)


def format_table(summary: dict) -> str:
    """A plain-text results table for the terminal."""
    score = summary["score"]
    lines = [f"{'model':<8} {'n':>2} {score:>18} {'test_loss':>16} {'params':>9} {'s/epoch':>8}"]
    for model, row in summary["models"].items():
        lines.append(
            f"{model:<8} {len(row['seeds']):>2} {format_spread(row.get(score)):>18}"
            f" {format_spread(row.get('test_loss')):>16} {_mean(row.get('params'), 0):>9}"
            f" {_mean(row.get('seconds_per_epoch'), 1):>8}"
        )
    return "\n".join(lines)


def _mean(d: dict | None, digits: int) -> str:
    return "n/a" if d is None else f"{d['mean']:.{digits}f}"


def format_spread(d: dict | None) -> str:
    """A ``stats.describe`` as mean ± std, the mean alone for one value, n/a for none."""
    if d is None:
        return "n/a"
    return f"{d['mean']:.4f}" + ("" if d["std"] is None else f" ± {d['std']:.4f}")
