"""``enn demo``: the whole pipeline in a few minutes on a CPU, nothing to download.

1. ``digits`` (scikit-learn's 8x8 digits): ENN, LSTM, GRU and RNN, two seeds each;
2. associative recall at a small hidden size: the ENN of the ``associative`` preset (the
   ``default`` one) and an LSTM, then the paper's cell (``paper`` preset);
then ``enn explain`` on each comparison's best ENN run and a report per comparison. ``--quick`` is a
reduced setting (under a minute) for the end-to-end test. Finished runs are reused, so a second
call trains nothing and only explains and reports again.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Part:
    """One comparison of the demo."""

    name: str  # the comparison's folder
    task: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: dict = field(default_factory=dict)
    explain: tuple[int, ...] = (0, 1, 2)
    preset: str = "default"


ASSOC_FULL = {"model.hidden_sizes": [32], "train.epochs": 5, "data.n_train": 10_000,
              "data.n_val": 1_000, "data.n_test": 2_000}
ASSOC_QUICK = {"model.hidden_sizes": [32], "train.epochs": 1, "data.n_train": 1_000,
               "data.n_val": 200, "data.n_test": 200}
FULL = (
    Part("digits", "digits", ("engram", "lstm", "gru", "rnn"), (0, 1), {"train.epochs": 30}),
    Part("assoc", "assoc", ("engram", "lstm"), (0, 1), ASSOC_FULL, preset="associative"),
    Part("assoc-paper-cell", "assoc", ("engram",), (0,), ASSOC_FULL, preset="paper"),
)
QUICK = (
    Part("digits", "digits", ("engram", "lstm"), (0, 1), {"train.epochs": 2}, explain=(0,)),
    Part("assoc", "assoc", ("engram", "lstm"), (0, 1), ASSOC_QUICK, explain=(0,),
         preset="associative"),
    Part("assoc-paper-cell", "assoc", ("engram",), (0,), ASSOC_QUICK, explain=(0,),
         preset="paper"),
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="train and compare on digits and associative recall, then report"
    )
    p.add_argument("--out", default="enn-demo", help="output folder (default ./enn-demo)")
    p.add_argument("--quick", action="store_true", help="a reduced setting (under a minute)")
    p.set_defaults(func=run_demo)


def run_part(part: Part, out: Path) -> Path:
    """Compare, explain the best ENN run, write the report; returns the report's path."""
    from ..analysis.report import best_engram_run, load_runs, write_report
    from ..analysis.summary import format_table
    from ..train.compare import compare
    from ..train.explain import explain

    summary = compare(
        part.task,
        list(part.models),
        list(part.seeds),
        out,
        preset=part.preset,
        # The demo's models are small: one thread is faster, and far faster on a busy machine.
        overrides={"train.threads": 1, **part.overrides},
    )
    print(f"\n{part.task}, {part.preset} preset ({out}):\n{format_table(summary)}")
    best = best_engram_run(summary, load_runs(out))
    if best is not None:
        explain(best[0] / "checkpoints" / "best.ckpt", list(part.explain))
    return write_report(out)


def run_demo(args: argparse.Namespace) -> int:
    from ..models import ConfigError
    from ..train.run import RunError, RunInterrupted
    from . import CLIError

    out = Path(args.out)
    start = time.perf_counter()
    try:
        reports = [run_part(part, out / part.name) for part in (QUICK if args.quick else FULL)]
    except (ConfigError, RunError) as err:
        raise CLIError(str(err)) from err
    except RunInterrupted as stop:
        print(f"enn demo: interrupted in {stop.run_dir}; run the same command again to go on "
              f"(finished runs are reused, unfinished ones resume)", file=sys.stderr)
        return 130
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; reports:")
    for path in reports:
        print(f"  {path}  ({path.with_suffix('.html')})")
    return 0
