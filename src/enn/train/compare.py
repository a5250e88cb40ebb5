"""``enn compare``: every model x seed on one task, resumable, then summary and statistics."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

from ..analysis.report import write_report
from ..models import RunConfig, build_model, count_parameters, match_baseline_width, resolve
from ..models.build import DataShape
from ..models.config import apply_overrides, validate
from . import stats
from .callbacks import atomic_write_json, atomic_write_text
from .run import METRICS_FILE, _datamodule, check_same_config, check_writable, run_status, train

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


def run_dir_for(out: Path, model: str, seed: int) -> Path:
    return Path(out) / f"{model}-seed{seed}"


def configs_for(
    task: str,
    models: list[str],
    seeds: list[int],
    preset: str,
    overrides: dict,
    data_dir: str | None,
    match_params: bool,
) -> list[RunConfig]:
    """The resolved config of every run; with ``match_params`` baselines are resized to the
    ENN's parameter count."""
    cfgs = []
    target = None
    for model in models:
        for seed in seeds:
            cfg = validate(apply_overrides(resolve(task, model, preset, seed), overrides))
            if match_params and model != "engram":
                if target is None:
                    engram = apply_overrides(resolve(task, "engram", preset, seed), overrides)
                    dm = _datamodule(engram, data_dir)
                    shape = DataShape.of(dm)
                    target = count_parameters(build_model(engram.model, shape))
                cfg.model = match_baseline_width(cfg.model, shape, target)
            cfgs.append(cfg)
    return cfgs


def compare(
    task: str,
    models: list[str],
    seeds: list[int],
    out: str | Path,
    preset: str = "default",
    overrides: dict | None = None,
    data_dir: str | None = None,
    match_params: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Train every model x seed into ``out`` (skipping finished runs, resuming unfinished
    ones), then write the summary and the report. The runs already there must have been made
    with the requested configuration; that is checked before any training starts."""
    out = Path(out)
    check_writable(out, "comparison folder")
    cfgs = configs_for(task, models, seeds, preset, overrides or {}, data_dir, match_params)
    for cfg in cfgs:
        run_dir = run_dir_for(out, cfg.model.backbone, cfg.seed)
        check_writable(run_dir, "run folder")
        if run_status(run_dir) != "empty":
            check_same_config(run_dir, cfg)
    for cfg in cfgs:
        run_dir = run_dir_for(out, cfg.model.backbone, cfg.seed)
        status = run_status(run_dir)
        if status == "done":
            log(f"{run_dir.name}: done, skipped")
            continue
        log(f"{run_dir.name}: {'resuming' if status == 'partial' else 'training'}")
        m = train(cfg, run_dir, data_dir=data_dir, resume=status == "partial")
        score = (
            f"test_acc {m['test_acc']:.4f}" if "test_acc" in m else f"test_ppl {m['test_ppl']:.1f}"
        )
        log(f"{run_dir.name}: {score}, {m['seconds_per_epoch']:.1f} s/epoch")
    summary = summarize(out)
    write_summary(out, summary)
    write_report(out)
    return summary


def collect(out: Path) -> list[dict]:
    """The metrics of every finished run below ``out``."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob(f"*/{METRICS_FILE}"))]


def summarize(out: Path) -> dict:
    runs = collect(out)
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/{METRICS_FILE}) under {out}")
    task = runs[0]["task"]
    lm = "test_ppl" in runs[0]
    score = "test_ppl" if lm else "test_acc"
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
    scores = {m: [r[score] for r in rs] for m, rs in by_model.items()}
    losses = {m: [r["test_loss"] for r in rs] for m, rs in by_model.items()}
    return {
        "task": task,
        "score": score,
        "models": table,
        "tests": {
            "anova": stats.anova(scores),
            "kruskal": stats.kruskal(losses),
            "tukey": stats.tukey(scores),
        },
    }


def write_summary(out: Path, summary: dict) -> None:
    atomic_write_json(Path(out) / "summary.json", summary)
    buf = io.StringIO()
    writer = csv.writer(buf)
    header = ["model", "n"]
    for f in SUMMARY_FIELDS:
        header += [f"{f}_mean", f"{f}_std", f"{f}_ci95"]
    writer.writerow(header)
    for model, row in summary["models"].items():
        cells = [model, len(row["seeds"])]
        for f in SUMMARY_FIELDS:
            d = row.get(f)
            cells += [d["mean"], d["std"], d["ci95"]] if d else ["", "", ""]
        writer.writerow(cells)
    atomic_write_text(Path(out) / "summary.csv", buf.getvalue())


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
