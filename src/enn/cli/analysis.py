"""``enn report DIR`` and ``enn explain --checkpoint CKPT --index I [I ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write report.md/.html for a comparison folder")
    p.add_argument("dir", help="a comparison folder (from `enn compare`)")
    p.set_defaults(func=run_report)

    p = subparsers.add_parser(
        "explain", help="attention, slot attribution and ablation of an ENN classifier"
    )
    p.add_argument("--checkpoint", required=True, help="an ENN run's checkpoints/best.ckpt")
    p.add_argument("--index", type=int, nargs="+", required=True, help="test-set indices")
    p.add_argument("--data-dir", help="data directory (else $ENN_DATA_DIR, else the user cache)")
    p.add_argument("--out", help="output folder (default: explain/ in the run folder)")
    p.add_argument("--k", type=int, default=4, help="slots removed in the ablation (default 4)")
    p.set_defaults(func=run_explain)


def run_report(args: argparse.Namespace) -> int:
    from ..analysis.report import write_report

    if not Path(args.dir).is_dir():
        raise CLIError(f"{args.dir} is not a folder")
    try:
        path = write_report(args.dir)
    except (FileNotFoundError, ValueError) as err:  # no runs, or a damaged run file
        raise CLIError(str(err)) from err
    print(f"report: {path} (and {path.with_suffix('.html').name})")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..train.explain import ExplainError, explain
    from ..train.run import RunError

    if args.k < 1:
        raise CLIError(f"--k must be at least 1, got {args.k}")
    try:
        out = explain(args.checkpoint, args.index, args.data_dir, args.out, k=args.k)
    except (ExplainError, RunError) as err:
        raise CLIError(str(err)) from err
    print(f"explanations of test inputs {', '.join(map(str, args.index))}: {out}")
    return 0
