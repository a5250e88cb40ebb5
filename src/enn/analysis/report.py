"""``write_report(compare_dir)``: a comparison's results, statistics, curves and memory pictures.

Everything is read from the comparison folder: ``summary.json`` (or, if it is missing or
counts other runs than the folder holds, the summary of the run folders), the finished runs'
``metrics.{json,csv}`` (``summary.load_runs``), the best ENN run's ``memory/``
(``TraceMonitor``) and ``explain/`` (``enn explain``). Writes ``report.md`` and ``report.html``
(atomically) with the pictures in ``figures/`` beside them.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.atomic import atomic_write_text
from ..models.config import PER_STEP_TASKS
from . import plots
from .memory import EXPLAIN_DIR, EXPLAIN_FILE, MEMORY_DIR, PROBE_FILE, epoch_file, read_stats
from .metrics import class_slot_usage
from .summary import format_spread, is_finite_number, load_runs, read_json, summarize

ALPHA = 0.05
FIGURES = "figures"


@dataclass
class Document:
    """A report as blocks, rendered to Markdown and to HTML."""

    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("img", (path, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                header, rows = value
                lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("\n".join(lines))
            else:
                out.append(f"![{value[1]}]({value[0]})\n\n*{value[1]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        out = [
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1250px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px}"
            "img{max-width:100%}</style></head><body>",
        ]
        for kind, value in self.blocks:
            if kind == "h":
                out.append(f"<h{value[0]}>{e(value[1])}</h{value[0]}>")
            elif kind == "p":
                out.append(f"<p>{e(value)}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                header, rows = value
                cells = "".join(f"<th>{e(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows
                )
                out.append(f"<table><tr>{cells}</tr>{body}</table>")
            else:
                out.append(
                    f"<figure><img src='{e(value[0])}' alt='{e(value[1])}'>"
                    f"<figcaption>{e(value[1])}</figcaption></figure>"
                )
        return "\n".join(out) + "\n</body></html>\n"


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    """Two significant digits, three where two would round across the 0.05 of the verdict
    beside it (0.0495 is not "0.05")."""
    if p < 1e-4:
        return f"{p:.1e}"
    text = f"{p:.2g}"
    return f"{p:.3g}" if (float(text) < ALPHA) != (p < ALPHA) else text


def load_summary(compare_dir: Path) -> dict:
    """``summary.json``, unless the finished runs in ``compare_dir`` are others than it counts
    (runs copied in after it was written): then their summary. A published folder, whose runs
    are records elsewhere, has only its ``summary.json``."""
    path = compare_dir / "summary.json"
    runs = {(m["model"], m["seed"]) for _, m in load_runs(compare_dir)}
    if path.is_file():
        summary = read_json(path)
        if not (isinstance(summary, dict) and isinstance(summary.get("models"), dict)):
            raise ValueError(f"{path} is not a comparison's summary (expected an object with "
                             f"models)")
        counted = {(model, seed) for model, row in summary["models"].items()
                   for seed in row["seeds"]}
        if not runs or runs == counted:
            return summary
    return summarize(compare_dir)


def results_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    score = summary["score"]
    header = [
        "model",
        "seeds",
        f"{score} mean ± std",
        f"{score} 95% CI",
        "test loss mean ± std",
        "parameters",
        "s / epoch",
        "epochs run",
    ]
    rows = []
    for model, row in summary["models"].items():
        s = row.get(score)
        ci = None if s is None else s["ci95"]
        interval = "n/a" if ci is None else f"[{_fmt(s['mean'] - ci)}, {_fmt(s['mean'] + ci)}]"
        params = row.get("params")
        rows.append(
            [
                model,
                ", ".join(str(x) for x in row["seeds"]),
                format_spread(s),
                interval,
                format_spread(row.get("test_loss")),
                "n/a" if params is None else f"{int(params['mean']):,}",
                _fmt(row.get("seconds_per_epoch", {}).get("mean"), 1),
                _fmt(row.get("epochs_run", {}).get("mean"), 1),
            ]
        )
    return header, rows


def tests_in_words(summary: dict) -> list[str]:
    """The statistical tests as sentences; skipped tests with their reason."""
    score = summary["score"]
    tests = summary["tests"]
    left_out = tests.get("left_out")
    lines = [f"The tests compare the models with two or more seeds; left out (one seed): "
             f"{', '.join(left_out)}."] if left_out else []
    if tests.get("not_finite"):
        lines.append(f"Runs without a finite {score} or test loss, not counted: "
                     f"{', '.join(tests['not_finite'])}.")
    for key, what in (("anova", score), ("kruskal", "test_loss")):
        t = tests[key]
        if "skipped" in t:
            lines.append(f"{t['test']} on {what}: skipped ({t['skipped']}).")
            continue
        verdict = "the models differ" if t["p"] < ALPHA else "no difference between the models"
        name = "F" if key == "anova" else "H"
        lines.append(
            f"{t['test']} on {what}: {name} = {t['statistic']:.3g}, "
            f"p = {_p(t['p'])} — {verdict} at alpha {ALPHA}."
        )
    t = tests["tukey"]
    if "skipped" in t:
        lines.append(f"{t['test']} on {score}: skipped ({t['skipped']}).")
    else:
        differ = [
            f"{p['a']} vs {p['b']} (difference {p['diff']:+.4f}, p = {_p(p['p'])})"
            for p in t["pairs"]
            if p["significant"]
        ]
        lines.append(
            f"{t['test']} on {score} (alpha {t['alpha']}): "
            + ("pairs that differ: " + "; ".join(differ) if differ else "no pair differs")
            + "."
        )
        effects = [
            f"{p['a']} - {p['b']}: {p['diff']:+.4f} [{p['ci'][0]:+.4f}, {p['ci'][1]:+.4f}], "
            + (f"g = {p['g']:+.2f} [{p['g_ci'][0]:+.2f}, {p['g_ci'][1]:+.2f}]"
               if p.get("g") is not None else "g undefined (no spread)")
            for p in t["pairs"] if "ci" in p
        ]
        if effects:
            lines.append(
                f"Differences of {score} with Tukey's simultaneous 95% intervals, and Hedges' g "
                "with its approximate 95% interval: " + "; ".join(effects) + "."
            )
    return lines


def is_record(run_dir: Path) -> bool:
    """Whether a finished run is a published record: its configuration and metrics, without
    the checkpoints and recordings that stayed on the machine that trained it."""
    return not (Path(run_dir) / "checkpoints").is_dir()


def best_engram_run(summary: dict, runs: list[tuple[Path, dict]]) -> tuple[Path, dict] | None:
    """The ENN run with the best score (highest accuracy or lowest perplexity), among the runs
    with their files where there are any (a record has no memory pictures to show)."""
    score = summary["score"]
    engram = [(d, m) for d, m in runs
              if m.get("model") == "engram" and is_finite_number(m.get(score))]
    if not engram:
        return None
    sign = 1 if score == "test_acc" else -1
    return max(engram, key=lambda r: (not is_record(r[0]), sign * r[1][score]))


def memory_section(doc: Document, run_dir: Path, task: str, figures: Path, rel: str) -> None:
    """The monitor's pictures of one run, as far as its files exist."""
    memory = run_dir / MEMORY_DIR
    rows = read_stats(memory)
    if not rows:
        doc.para(
            f"{run_dir.name} is a published record: its memory recordings stayed on the "
            "machine that trained it." if is_record(run_dir) else
            f"No memory recordings in {run_dir.name}/{MEMORY_DIR} (the run was trained "
            "without the trace monitor)."
        )
        return
    doc.image(
        f"{rel}/{plots.plot_trace_panels(memory, figures / 'trace_panels.png').name}",
        "Mean final Hebbian trace of the probe sequences after the last epoch, before "
        "training, their difference, and the trace statistics per epoch.",
    )
    header = [
        "epoch",
        "min",
        "max",
        "mean abs(H)",
        "std",
        "sparsity",
        "attention entropy",
        "effective slots",
        "top slot (share of wins)",
    ]
    table = [
        [
            str(int(r["epoch"])),
            _fmt(r["min"]),
            _fmt(r["max"]),
            _fmt(r["mean_abs"]),
            _fmt(r["std"]),
            _fmt(r["sparsity"], 3),
            _fmt(r["attention_entropy"], 3),
            _fmt(r["effective_slots"], 1),
            f"{int(r['top_slot'])} ({r['top_slot_share']:.2f})",
        ]
        for r in rows
    ]
    doc.table(header, table)
    last = int(rows[-1]["epoch"])
    with np.load(epoch_file(memory, last)) as f:
        bank, attention = f["memory"], f["attention"]
    bank_png = plots.plot_memory_bank(
        bank, figures / "memory_bank.png", f"Memory bank M after epoch {last}"
    )
    doc.image(
        f"{rel}/{bank_png.name}",
        f"The learned memory bank M after epoch {last} (slot x hidden unit).",
    )
    if not (memory / PROBE_FILE).is_file():
        return
    with np.load(memory / PROBE_FILE) as f:
        x, y = f["x"], f["y"]
    image, symbols = plots.input_view(task, x[0])
    # classification probes have one label per input, per-step tasks (mqar) a target at each
    # query step (-100 elsewhere), language-model probes a window of next tokens
    if y.ndim == 1:
        target = f"target {int(y[0])}"
    elif task in PER_STEP_TASKS:
        target = f"{int((y[0] >= 0).sum())} queries, a target at each query step"
    else:
        target = f"a window of {y.shape[1]} tokens"
    path = plots.plot_attention(
        attention[0],
        figures / "probe_attention.png",
        f"First validation (probe) input, {target}",
        image,
        symbols,
    )
    doc.image(f"{rel}/{path.name}", "Attention of the first probe input over its time steps.")
    if y.ndim == 1:
        usage = class_slot_usage(attention, y, int(y.max()) + 1)
        path = plots.plot_class_slot_usage(
            usage,
            figures / "probe_class_slot_usage.png",
            f"Class-by-slot usage over the {len(y)} probe inputs (epoch {last})",
        )
        doc.image(f"{rel}/{path.name}", "Mean attention per memory slot for each class.")


def explain_section(doc: Document, run_dir: Path, rel_run: str) -> None:
    """``enn explain``'s results of the run; a note instead where they are missing or
    unreadable (e.g. an explain killed before its atomic writes)."""
    path = run_dir / EXPLAIN_DIR / EXPLAIN_FILE
    command = f"enn explain --checkpoint {run_dir.name}/checkpoints/best.ckpt --index 0 1 2"
    if not path.is_file():
        doc.para(f"No attribution published with the record {run_dir.name}." if is_record(run_dir)
                 else f"No attribution yet: run `{command}`.")
        return
    section = Document()
    try:
        explain_blocks(section, json.loads(path.read_text()), f"{rel_run}/{EXPLAIN_DIR}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        doc.para(
            f"No attribution: {run_dir.name}/{EXPLAIN_DIR}/{EXPLAIN_FILE} is unreadable "
            f"({type(err).__name__}: {err}); run `{command}` again."
        )
        return
    doc.blocks += section.blocks


def explain_blocks(doc: Document, info: dict, folder: str) -> None:
    """The table and pictures of an ``explain.json`` (``info``), its PNGs in ``folder``."""
    doc.heading(3, "Which slots drove the decisions (attribution and ablation)")
    header = [
        "test input",
        "label",
        "predicted",
        "p(predicted)",
        "k",
        "p without top-k",
        "p without k random (mean ± std)",
        "drop top-k",
        "drop random",
    ]
    rows = [
        [
            str(r["index"]),
            str(r["label"]),
            str(r["predicted"]),
            _fmt(r["prob"], 3),
            str(r["k"]),
            _fmt(r["prob_top"], 3),
            f"{_fmt(r['prob_random'], 3)} ± {_fmt(r['prob_random_std'], 3)}",
            f"{r['drop_top']:+.4f}",
            f"{r['drop_random']:+.4f}",
        ]
        for r in info["inputs"]
    ]
    doc.table(header, rows)
    for r in info["inputs"]:
        i = r["index"]
        doc.image(f"{folder}/{r['attention_png']}", f"Attention of test input {i}.")
        doc.image(
            f"{folder}/{r['attribution_png']}",
            f"Slot attribution of test input {i}, with the ablation numbers.",
        )
    doc.image(f"{folder}/{info['usage_png']}", "Class-by-slot usage over the test set.")


def write_report(compare_dir: str | Path) -> Path:
    """Write ``report.md`` and ``report.html`` (and ``figures/``) into ``compare_dir``."""
    compare_dir = Path(compare_dir)
    summary = load_summary(compare_dir)
    runs = load_runs(compare_dir)
    figures = compare_dir / FIGURES
    task, score = summary["task"], summary["score"]
    doc = Document()
    title = f"ENN comparison on {task}"
    doc.heading(1, title)
    presets = sorted({r["preset"] for r in summary["models"].values()})
    doc.para(
        f"{len(runs)} finished runs of {len(summary['models'])} models (preset "
        f"{', '.join(presets)}), read from {compare_dir.name}/. Score: {score} on the test "
        "set; mean ± sample standard deviation over seeds and the 95% confidence interval "
        "of the mean (Student t)."
    )
    doc.heading(2, "Results")
    doc.table(*results_table(summary))
    doc.heading(2, "Statistical tests")
    doc.bullets(tests_in_words(summary))
    doc.heading(2, "Learning curves")
    curves = plots.plot_learning_curves(compare_dir, figures / "learning_curves.png")
    doc.image(f"{FIGURES}/{curves.name}", "Validation loss and score per epoch of every model.")
    doc.heading(2, "Memory of the best ENN run")
    best = best_engram_run(summary, runs)
    if best is None:
        doc.para("No finished ENN (engram) run in this comparison: no memory pictures.")
    else:
        run_dir, metrics = best
        doc.para(
            f"{run_dir.name}: {score} = {_fmt(metrics[score])}, test loss "
            f"{_fmt(metrics['test_loss'])}."
        )
        records = [d.name for d, m in runs if m.get("model") == "engram" and is_record(d)]
        if records:
            doc.para(
                f"Published records, without their recordings: {', '.join(records)} (the "
                "pictures are of the best ENN run that has them)."
            )
        memory_section(doc, run_dir, task, figures, FIGURES)
        # enn explain attributes one class decision per sequence: not next tokens, nor the
        # answers at each query step of a per-step task
        if task in PER_STEP_TASKS:
            doc.para(
                f"No attribution: `enn explain` attributes one decision per sequence, and "
                f"{task} has a target at each query step."
            )
        elif score == "test_acc":
            explain_section(doc, run_dir, run_dir.name)
    out = compare_dir / "report.md"
    atomic_write_text(out, doc.markdown())
    atomic_write_text(compare_dir / "report.html", doc.html(title))
    return out
