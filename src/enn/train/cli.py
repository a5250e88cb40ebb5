"""``enn train``, ``enn evaluate`` and ``enn compare``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import CLIError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", required=True, help="a task of `enn data list` (e.g. digits, mnist10k)"
    )
    p.add_argument("--preset", default="default", help="paper | default (docs/training.md)")
    p.add_argument("--epochs", type=int, help="shortcut for train.epochs=N")
    p.add_argument("--data-dir", help="data directory (else $ENN_DATA_DIR, else the user cache)")
    p.add_argument("--config", help="YAML file of config fields (nested or dotted keys)")
    p.add_argument(
        "--match-params", action="store_true", help="size baselines to the ENN's parameter count"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.lr=3e-4 model.hidden_sizes=64,64",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train one model on one task")
    _common(p)
    p.add_argument("--model", required=True, help="engram | rnn | gru | lstm")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", help="run folder (default runs/TASK/MODEL-PRESET-seedS)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run from its last checkpoint"
    )
    p.add_argument("--force", action="store_true", help="overwrite a finished run")
    p.add_argument("--download", action="store_true", help="download missing data first")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("evaluate", help="test metrics of a saved checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", help="refuse a checkpoint of another task")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="metrics file (default: eval.json in the run folder)")
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser("compare", help="every model x seed on a task, then statistics")
    _common(p)
    p.add_argument("--models", default="engram,lstm,gru,rnn")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--out", required=True, help="comparison folder (one run folder per model x seed)"
    )
    p.set_defaults(func=run_compare)


def _overrides(args) -> dict:
    from ..models.config import load_yaml_overrides, parse_overrides

    overrides = load_yaml_overrides(args.config) if args.config else {}
    overrides.update(parse_overrides(args.overrides))
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    return overrides


def _check_names(task: str, models: list[str]) -> None:
    from ..data import TASKS
    from ..models import BACKBONES

    if task not in TASKS:
        raise CLIError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    for m in models:
        if m not in BACKBONES:
            raise CLIError(f"unknown model {m!r}; known models: {', '.join(BACKBONES)}")


def _user_errors():
    from ..models import ConfigError
    from .run import RunError

    return (ConfigError, RunError)


def run_train(args) -> int:
    from .compare import configs_for
    from .run import train

    _check_names(args.task, [args.model])
    try:
        (cfg,) = configs_for(
            args.task, [args.model], [args.seed], args.preset, _overrides(args), args.data_dir,
            args.match_params,
        )
        out = args.out or f"runs/{args.task}/{args.model}-{args.preset}-seed{args.seed}"
        metrics = train(
            cfg,
            out,
            data_dir=args.data_dir,
            resume=args.resume,
            force=args.force,
            download=args.download,
        )
    except _user_errors() as err:
        raise CLIError(str(err)) from err
    if metrics:
        print(" ".join(f"{k}={v}" for k, v in metrics.items()))
        print(f"run folder: {Path(out).resolve()}")
    return 0


def run_evaluate(args) -> int:
    from .run import evaluate

    try:
        metrics = evaluate(args.checkpoint, data_dir=args.data_dir, task=args.task, out=args.out)
    except _user_errors() as err:
        raise CLIError(str(err)) from err
    print(" ".join(f"{k}={v}" for k, v in metrics.items()))
    return 0


def run_compare(args) -> int:
    from .compare import compare, format_table

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as err:
        raise CLIError(f"--seeds expects integers like 0,1,2, got {args.seeds!r}") from err
    _check_names(args.task, models)
    try:
        summary = compare(
            args.task,
            models,
            seeds,
            args.out,
            preset=args.preset,
            overrides=_overrides(args),
            data_dir=args.data_dir,
            match_params=args.match_params,
            log=lambda m: print(m, file=sys.stderr),
        )
    except _user_errors() as err:
        raise CLIError(str(err)) from err
    print(format_table(summary))
    print(f"summary: {Path(args.out).resolve() / 'summary.json'}")
    return 0
