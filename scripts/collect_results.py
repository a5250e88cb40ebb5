"""Publish comparison folders into docs/results/: recompute each run's epoch fields from its
metrics.csv (the whole epoch log), re-summarise, explain the best ENN run, rewrite the
report, copy report + figures + summaries + the runs' ``enn explain`` files, and regenerate
the overview table of docs/results/README.md (between its markers) from every published
comparison there.
Numbers come from the run files only.

A published comparison keeps each run's record (``runs/<run>/``: its configuration and
metrics, not its checkpoints). Publishing a folder first copies in the records of runs it
lacks (with their explain files), so that seeds trained later, on another machine, join
those already published.

A folder of variants (``runs/<name>/<variant>/<model>-seed<n>``, as
``scripts/memory_ablation.sh`` leaves them; no summary of its own) has only its finished
runs' records published, into ``docs/<name>/<variant>/runs/``, beside those published before;
the script that made them reads them back, so that its table covers every run made anywhere.

    python scripts/collect_results.py runs/results docs/results
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from enn.analysis.memory import EXPLAIN_DIR
from enn.analysis.report import best_engram_run, is_record, write_report
from enn.analysis.summary import METRICS_FILE, RECORDS, format_spread, load_runs, summarize
from enn.data.atomic import atomic_write_json
from enn.models.config import PER_STEP_TASKS, config_differences, format_value
from enn.train.callbacks import summarize_epochs
from enn.train.compare import write_summary
from enn.train.explain import explain
from enn.train.run import RunError, saved_config

START, END = "<!-- overview:start -->", "<!-- overview:end -->"
RECORD_FILES = ("config.yaml", METRICS_FILE, "metrics.csv")


def refresh_run_fields(run_dir: Path) -> None:
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    with open(run_dir / "metrics.csv") as f:
        metrics.update(summarize_epochs(list(csv.DictReader(f))))
    atomic_write_json(run_dir / METRICS_FILE, metrics)


class OtherRunsError(Exception):
    """The published records do not go with the local runs: made with another configuration,
    or not finished here (publishing would drop them)."""


def restore_records(compare_dir: Path, dest: Path) -> list[str]:
    """Copy the published records of the runs ``compare_dir`` lacks into it, with the files of
    ``enn explain`` published beside a record; their names. Each must have been made with
    the configuration of the local runs of its model (the seed apart): other runs under the
    same name are an ``OtherRunsError``, and so is a record whose run is here unfinished (its
    rerun not done): publishing would drop the published seed."""
    records = sorted((dest / RECORDS).glob("*-seed*"))
    unfinished = [r.name for r in records if (compare_dir / r.name).exists()
                  and not (compare_dir / r.name / METRICS_FILE).is_file()]
    if unfinished:
        raise OtherRunsError(
            f"{compare_dir.name}: {', '.join(unfinished)} published but unfinished here; "
            f"finish them (enn compare resumes them) or move them aside before publishing")
    missing = [r for r in records if not (compare_dir / r.name).exists()]
    for record in missing:  # all checked before any is copied
        model = record.name.rsplit("-seed", 1)[0]
        for local in sorted(compare_dir.glob(f"{model}-seed*/config.yaml"))[:1]:
            diff = [d for d in config_differences(saved_config(record),
                                                  saved_config(local.parent)) if d[0] != "seed"]
            if diff:
                key, was, now = diff[0]
                raise OtherRunsError(
                    f"{record} was made with {key}={format_value(was)}, {local.parent} with "
                    f"{format_value(now)}; publish {compare_dir.name} under another name")
    for record in missing:
        shutil.copytree(record, compare_dir / record.name)
        explained = dest / record.name / EXPLAIN_DIR
        if explained.is_dir():
            shutil.copytree(explained, compare_dir / record.name / EXPLAIN_DIR)
    return [r.name for r in missing]


def publish(compare_dir: Path, dest: Path) -> dict:
    restored = restore_records(compare_dir, dest)
    if restored:
        print(f"{compare_dir.name}: published records joined: {', '.join(restored)}")
    for metrics_file in compare_dir.glob("*/metrics.json"):
        refresh_run_fields(metrics_file.parent)
    summary = summarize(compare_dir)
    write_summary(compare_dir, summary)
    best = best_engram_run(summary, load_runs(compare_dir))
    # explain attributes one class decision per sequence
    classifier = summary["score"] == "test_acc" and summary["task"] not in PER_STEP_TASKS
    if (classifier and best is not None and not is_record(best[0])
            and not (best[0] / EXPLAIN_DIR).exists()):
        explain(best[0] / "checkpoints" / "best.ckpt", [0, 1, 2])
    write_report(compare_dir)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("report.md", "report.html", "summary.json", "summary.csv"):
        shutil.copy2(compare_dir / name, dest / name)
    shutil.copytree(compare_dir / "figures", dest / "figures")
    for explained in sorted(compare_dir.glob(f"*-seed*/{EXPLAIN_DIR}")):  # the best run's, and
        # those published before with their records
        shutil.copytree(explained, dest / explained.parent.name / EXPLAIN_DIR)
    copy_records(compare_dir, dest / RECORDS)
    return summary


def copy_records(folder: Path, dest: Path) -> list[str]:
    """Copy the record of each finished run ``folder/*-seed*`` into ``dest/<run>/``, replacing
    one of the same name; the runs' names."""
    names = []
    for metrics_file in sorted(folder.glob(f"*-seed*/{METRICS_FILE}")):
        record = dest / metrics_file.parent.name
        if record.exists():
            shutil.rmtree(record)
        record.mkdir(parents=True)
        for name in RECORD_FILES:
            if (metrics_file.parent / name).is_file():
                shutil.copy2(metrics_file.parent / name, record / name)
        names.append(metrics_file.parent.name)
    return names


def publish_variants(folder: Path, dest: Path) -> None:
    """The records of every finished run of a folder of variants, each variant's beside those
    published before."""
    for variant in sorted(p for p in folder.iterdir() if p.is_dir()):
        for metrics_file in variant.glob(f"*-seed*/{METRICS_FILE}"):
            refresh_run_fields(metrics_file.parent)
        names = copy_records(variant, dest / variant.name / RECORDS)
        if names:
            print(f"{folder.name}/{variant.name}: records published: {', '.join(names)}")


def overview_rows(name: str, summary: dict) -> list[str]:
    """One table row per model; n/a where no run of it has the number (all diverged)."""
    score = summary["score"]
    rows = []
    for model, row in summary["models"].items():
        scored = format_spread(row[score]) if score in row else "n/a"
        rows.append(
            f"| [{name}]({name}/report.md) | {model} | {len(row['seeds'])} | {score} "
            f"{scored} | {_mean(row, 'test_loss', '.4f')} | {_mean(row, 'params', ',.0f')} | "
            f"{_mean(row, 'seconds_per_epoch', '.1f')} |"
        )
    return rows


def _mean(row: dict, field: str, spec: str) -> str:
    return format(row[field]["mean"], spec) if field in row else "n/a"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="the folder of the comparisons to publish")
    p.add_argument("docs", type=Path, help="docs/results: where they go")
    args = p.parse_args(argv)
    runs, docs = args.runs, args.docs
    for folder in (runs, docs):
        if not folder.is_dir():
            p.error(f"{folder} is not a folder")
    readme = docs / "README.md"
    if not readme.is_file() or START not in readme.read_text():
        p.error(f"{readme} lacks the overview markers {START} ... {END}")
    lines = [
        "| comparison | model | seeds | test score (mean ± std) | test loss | parameters "
        "| s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for compare_dir in sorted(p.parent for p in runs.glob("*/summary.json")):
        try:
            publish(compare_dir, docs / compare_dir.name)
        except (OtherRunsError, RunError) as err:
            p.error(str(err))
        print(f"published {compare_dir.name}")
    for folder in sorted({p.parents[2] for p in runs.glob(f"*/*/*-seed*/{METRICS_FILE}")}):
        if not (folder / "summary.json").exists():
            publish_variants(folder, docs / folder.name)
    for summary_file in sorted(docs.glob("*/summary.json")):  # every published comparison
        lines += overview_rows(summary_file.parent.name, json.loads(summary_file.read_text()))
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n" + "\n".join(lines) + f"\n{END}{tail}")


if __name__ == "__main__":
    main()
