"""``enn compare``: every model x seed on one task, resumable, then summary and statistics."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..analysis.report import is_record, write_report
from ..analysis.summary import SUMMARY_FIELDS, summarize
from ..data.atomic import atomic_write_json, atomic_write_text
from ..models.config import RunConfig, format_value
from .run import (
    RunError,
    check_same_config,
    check_writable,
    configs_for,
    raises_cap,
    run_differences,
    run_status,
    saved_config,
    stopped_early,
    train,
)


def run_dir_for(out: Path, model: str, seed: int) -> Path:
    return Path(out) / f"{model}-seed{seed}"


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
    with the requested configuration, or with fewer ``train.epochs``: finished runs that
    ended at their cap then go on to the new one, those that stopped early are kept. That is
    checked before any training starts. Under DDP only the first process summarises; the
    others return an empty dict."""
    out = Path(out)
    check_writable(out, "comparison folder")
    cfgs = configs_for(task, models, seeds, preset, overrides or {}, data_dir, match_params)
    for cfg in cfgs:
        run_dir = run_dir_for(out, cfg.model.backbone, cfg.seed)
        check_writable(run_dir, "run folder")
        if run_status(run_dir) != "empty":
            check_same_config(run_dir, cfg, larger_cap=True,
                              start_over="delete that run folder to train it anew")
    check_other_seeds(out, cfgs)
    worker = False
    for cfg in cfgs:
        run_dir = run_dir_for(out, cfg.model.backbone, cfg.seed)
        status = run_status(run_dir)
        if status == "done":
            early = stopped_early(run_dir)
            if not raises_cap(saved_config(run_dir), cfg) or early is not None:
                log(f"{run_dir.name}: done, skipped"
                    + (f" (stopped early at epoch {early})" if early is not None else ""))
                continue
            if is_record(run_dir):
                log(f"{run_dir.name}: done, skipped (a published record: no checkpoint to go "
                    "on from)")
                continue
            log(f"{run_dir.name}: going on to {cfg.train.epochs} epochs")
        else:
            log(f"{run_dir.name}: {'resuming' if status == 'partial' else 'training'}")
        m = train(cfg, run_dir, data_dir=data_dir, resume=status != "empty")
        if not m:  # a process of a distributed run other than the first: it only trains
            worker = True
            continue
        score = (
            f"test_acc {m['test_acc']:.4f}" if "test_acc" in m else f"test_ppl {m['test_ppl']:.1f}"
        )
        log(f"{run_dir.name}: {score}, {m['seconds_per_epoch']:.1f} s/epoch")
    if worker:
        return {}
    summary = summarize(out)
    write_summary(out, summary)
    write_report(out)
    return summary


def check_other_seeds(out: Path, cfgs: list[RunConfig]) -> None:
    """The summary pools every run of a model in ``out``: a ``RunError`` unless the runs of a
    requested model at other seeds were made with the same configuration (but for the seed
    and the epoch cap). Runs of other models may follow another protocol (the baselines of the
    ``paper`` preset's comparisons train with PyTorch's recipe)."""
    requested = {cfg.model.backbone: cfg for cfg in cfgs}
    asked = {run_dir_for(out, cfg.model.backbone, cfg.seed) for cfg in cfgs}
    for config_file in sorted(Path(out).glob("*/config.yaml")):
        run_dir = config_file.parent
        if run_dir in asked:
            continue
        saved = saved_config(run_dir)
        cfg = requested.get(saved.model.backbone)
        if cfg is None:
            continue
        diff = [d for d in run_differences(saved, replace(cfg, seed=saved.seed))
                if d[0] != "train.epochs"]
        if diff:
            key, was, given = diff[0]
            raise RunError(
                f"{run_dir} holds a run of {saved.model.backbone} made with "
                f"{key}={format_value(was)}, not {format_value(given)}, which the summary "
                f"would pool with these; use another folder, or delete that run folder")


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
