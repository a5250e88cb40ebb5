"""A comparison's summary: every finished run's ``metrics.json``, per model mean, spread and
confidence interval, and the tests between the models (``stats``)."""

from __future__ import annotations

import json
from pathlib import Path

from . import stats

METRICS_FILE = "metrics.json"  # in a run folder; written when the run has finished
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
    folders with a ``metrics.json``. The summary, the report and its curves all count these."""
    return [(p.parent, read_json(p)) for p in sorted(Path(out).glob(f"*/{METRICS_FILE}"))]


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
            values = [r[f] for r in rs if r.get(f) is not None]
            if values:
                table[model][f] = stats.describe(values)
    # the tests compare the models with two or more seeds, where at least two have them
    repeated = [m for m, rs in by_model.items() if len(rs) > 1]
    tested = repeated if len(repeated) > 1 else list(by_model)
    scores = {m: [r[score] for r in by_model[m]] for m in tested}
    losses = {m: [r["test_loss"] for r in by_model[m]] for m in tested}
    return {
        "task": task,
        "score": score,
        "models": table,
        "tests": {
            "anova": stats.anova(scores),
            "kruskal": stats.kruskal(losses),
            "tukey": stats.tukey(scores),
            "left_out": [m for m in by_model if m not in tested],  # one seed each
        },
    }


def format_table(summary: dict) -> str:
    """A plain-text results table for the terminal."""
    score = summary["score"]
    lines = [f"{'model':<8} {'n':>2} {score:>18} {'test_loss':>16} {'params':>9} {'s/epoch':>8}"]
    for model, row in summary["models"].items():
        s, loss = row.get(score), row.get("test_loss")
        lines.append(
            f"{model:<8} {len(row['seeds']):>2} {s['mean']:>10.4f} ± {s['std']:<6.4f}"
            f" {loss['mean']:>8.4f} ± {loss['std']:<6.4f} {int(row['params']['mean']):>9}"
            f" {row['seconds_per_epoch']['mean']:>8.1f}"
        )
    return "\n".join(lines)
