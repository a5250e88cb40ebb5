"""``enn train``, ``enn evaluate`` and ``enn compare``."""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

from . import CLIError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task", required=True, help="a task of `enn data list` (e.g. digits, mnist10k)"
    )
    p.add_argument("--preset", help="paper | default | associative (docs/training.md; "
                   "default: default)")
    p.add_argument(
        "--epochs", type=int, help="shortcut for train.epochs=N (give one of the two)"
    )
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
    p.add_argument("--seed", type=int, help=f"random seed (default {DEFAULT_SEED})")
    p.add_argument("--out", help="run folder (default runs/TASK/MODEL-PRESET-seedS)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, with its saved configuration",
    )
    p.add_argument("--force", action="store_true", help="start the run in --out over")
    p.add_argument("--download", action="store_true", help="download missing data first")
    p.set_defaults(func=run_train)

    p = subparsers.add_parser("evaluate", help="test metrics of a saved checkpoint")
    p.add_argument("--checkpoint", required=True,
                   help="a run's checkpoints/best.ckpt or last.ckpt")
    p.add_argument("--task", help="refuse a checkpoint of another task")
    p.add_argument("--data-dir", help="data directory (else $ENN_DATA_DIR, else the user cache)")
    p.add_argument("--out", help="metrics file (default: eval.json in the run folder)")
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser("compare", help="every model x seed on a task, then statistics")
    _common(p)
    p.add_argument("--models", default="engram,lstm,gru,rnn",
                   help="comma-separated models (default engram,lstm,gru,rnn)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument(
        "--out", required=True, help="comparison folder (one run folder per model x seed)"
    )
    p.set_defaults(func=run_compare)


DEFAULT_SEED = 42
DEFAULT_PRESET = "default"


def _overrides(args) -> dict:
    """The config fields the command line sets: --config's, then KEY=VALUE's (which win), then
    --epochs (which may not be given beside train.epochs=)."""
    from ..models.config import load_yaml_overrides, parse_overrides

    overrides = load_yaml_overrides(args.config) if args.config else {}
    given = parse_overrides(args.overrides)
    if args.epochs is not None and "train.epochs" in given:
        raise CLIError(
            f"the number of epochs is given twice (--epochs {args.epochs} and "
            f"train.epochs={given['train.epochs']}); give one of them"
        )
    overrides.update(given)
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    return overrides


def _names(option: str, value: str) -> list[str]:
    items = [v.strip() for v in value.split(",")]
    if not value.strip() or not all(items):
        raise CLIError(f"{option} expects a comma-separated list like a,b, got {value!r}")
    return items


def _check_names(task: str, models: list[str]) -> None:
    from ..data import TASKS
    from ..models import BACKBONES

    if task not in TASKS:
        raise CLIError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    for m in models:
        if m not in BACKBONES:
            raise CLIError(f"unknown model {m!r}; known models: {', '.join(BACKBONES)}")


def _warn_without_effect(models: list[str], args) -> None:
    """A warning for each Engram field set on the command line when no model given is an
    Engram: the baselines ignore those fields (but for --match-params, which sizes them to the
    ENN those fields give)."""
    from ..models.config import ENGRAM_KEYS, parse_overrides

    if "engram" in models or args.match_params:
        return
    for key in parse_overrides(args.overrides):
        if key in ENGRAM_KEYS:
            warnings.warn(f"{key} has no effect on {', '.join(models)} (an Engram field)",
                          stacklevel=2)


def _user_errors():
    from ..models import ConfigError
    from ..train.run import RunError

    return (ConfigError, RunError)


def _resumed_config(args, out: Path):
    """The saved run's configuration, or the same with a larger ``train.epochs`` when the
    options ask for one; every other option given that differs from it is an error."""
    from ..models.config import apply_overrides, config_differences, format_value
    from ..train.run import RunError, raises_cap, run_status, saved_config

    if run_status(out) == "empty":
        return None  # train() says why there is nothing to resume
    saved = saved_config(out)
    given = {"task": args.task, "model.backbone": args.model}
    given.update({k: v for k, v in (("preset", args.preset), ("seed", args.seed)) if v is not None})
    given.update(_overrides(args))
    requested = apply_overrides(copy.deepcopy(saved), given)
    if raises_cap(saved, requested):
        return requested
    diff = config_differences(saved, requested)
    if diff:
        key, was, now = diff[0]
        raise RunError(
            f"--resume continues the run saved in {out} with {key}={format_value(was)}, "
            f"not {format_value(now)}; leave the option out, or use --force to start over"
        )
    return saved


def run_train(args) -> int:
    from ..train.run import RunInterrupted, configs_for, train

    _check_names(args.task, [args.model])
    preset = DEFAULT_PRESET if args.preset is None else args.preset
    seed = DEFAULT_SEED if args.seed is None else args.seed
    out = Path(args.out or f"runs/{args.task}/{args.model}-{preset}-seed{seed}")
    try:
        _warn_without_effect([args.model], args)
        cfg = _resumed_config(args, out) if args.resume and not args.force else None
        if cfg is None:
            (cfg,) = configs_for(
                args.task, [args.model], [seed], preset, _overrides(args), args.data_dir,
                args.match_params,
            )
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
    except RunInterrupted as stop:
        if stop.epochs_done:
            where = f"{out / 'checkpoints' / 'last.ckpt'} holds epoch {stop.epochs_done}"
            how = f"continue with: enn train --task {cfg.task} --model {cfg.model.backbone} "
            how += f"--out {out} --resume"
        else:
            where = "no epoch was complete, so nothing was saved"
            how = "start it again with the same command"
        print(f"enn train: interrupted; {where}; {how}", file=sys.stderr)
        return 130
    if metrics:
        print(" ".join(f"{k}={v}" for k, v in metrics.items()))
        print(f"run folder: {out.resolve()}")
    return 0


def run_evaluate(args) -> int:
    from ..train.run import evaluate

    try:
        metrics = evaluate(args.checkpoint, data_dir=args.data_dir, task=args.task, out=args.out)
    except _user_errors() as err:
        raise CLIError(str(err)) from err
    print(" ".join(f"{k}={v}" for k, v in metrics.items()))
    return 0


def run_compare(args) -> int:
    from ..analysis.summary import format_table
    from ..train.compare import compare
    from ..train.run import RunInterrupted

    models = _names("--models", args.models)
    try:
        seeds = [int(s) for s in _names("--seeds", args.seeds)]
    except ValueError as err:
        raise CLIError(f"--seeds expects integers like 0,1,2, got {args.seeds!r}") from err
    _check_names(args.task, models)
    try:
        _warn_without_effect(models, args)
        summary = compare(
            args.task,
            models,
            seeds,
            args.out,
            preset=DEFAULT_PRESET if args.preset is None else args.preset,
            overrides=_overrides(args),
            data_dir=args.data_dir,
            match_params=args.match_params,
            log=lambda m: print(m, file=sys.stderr),
        )
    except _user_errors() as err:
        raise CLIError(str(err)) from err
    except RunInterrupted as stop:
        print(
            f"enn compare: interrupted in {stop.run_dir} after {stop.epochs_done} complete "
            f"epoch(s); continue with the same enn compare command (it resumes unfinished runs)",
            file=sys.stderr,
        )
        return 130
    if summary:  # empty on the other processes of a distributed run
        print(format_table(summary))
        print(f"summary: {Path(args.out).resolve() / 'summary.json'}")
    return 0
