"""One training run in a run folder, and the evaluation of a saved checkpoint.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.csv`` (per epoch),
``tb/`` (TensorBoard), ``checkpoints/{last,best}.ckpt`` (atomic) and, once the run has
finished, ``metrics.json``. Its presence is what marks a run complete.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ..analysis.summary import METRICS_FILE
from ..data import get_datamodule
from ..data.atomic import atomic_write_json, atomic_write_text
from ..data.base import StreamTooShortError
from ..data.paths import DataIntegrityError
from ..models import (
    ConfigError,
    RunConfig,
    build_model,
    count_parameters,
    match_baseline_width,
    resolve,
)
from ..models.build import DataShape
from ..models.config import (
    ENGRAM_KEYS,
    apply_overrides,
    config_differences,
    format_value,
    validate,
)
from .callbacks import (
    AtomicCheckpointIO,
    BestCheckpoint,
    EpochLog,
    LastCheckpoint,
    epoch_seeded,
    monitor_for,
    summarize_epochs,
)
from .lit import LitSequenceModel


class RunError(Exception):
    """A run cannot start as asked (e.g. it would overwrite a finished run)."""


class RunInterrupted(Exception):
    """Ctrl-C stopped the run; ``last.ckpt`` holds its last complete epoch (if any)."""

    def __init__(self, run_dir: Path, epochs_done: int) -> None:
        super().__init__(f"interrupted after {epochs_done} complete epoch(s) in {run_dir}")
        self.run_dir = run_dir
        self.epochs_done = epochs_done


class _StopOnCtrlC(pl.Callback):
    """Set by the SIGINT handler; stops the run at the next batch boundary. Checkpoints are
    written whole or not at all, so ``last.ckpt`` then holds the last complete epoch."""

    def __init__(self, run_dir: Path, epoch_log: EpochLog) -> None:
        self.run_dir, self.epoch_log = run_dir, epoch_log
        self.requested = False
        self.epochs_trained: int | None = None  # set before the test, which reloads the log

    def stop(self) -> None:
        done = self.epochs_trained
        raise RunInterrupted(self.run_dir, len(self.epoch_log.rows) if done is None else done)

    def _check(self, *_args) -> None:
        if self.requested:
            self.stop()

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = _check


@contextmanager
def _ctrl_c_stops(stopper: _StopOnCtrlC):
    """The first Ctrl-C asks ``stopper`` to stop at the next batch; a second stops at once.
    (Lightning's own handling of KeyboardInterrupt exits with code 1 and says nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stopper.requested:
            stopper.stop()
        stopper.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _EarlyStopping(EarlyStopping):
    """Early stopping that stays stopped when a run that had stopped is resumed (killed
    between its last epoch and the test)."""

    def on_train_start(self, trainer, pl_module) -> None:
        if self.wait_count > 0 and self.wait_count >= self.patience:
            trainer.should_stop = True


def run_status(run_dir: Path) -> str:
    """``"done"``, ``"partial"`` (a checkpoint but no metrics) or ``"empty"``."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS_FILE).exists():
        return "done"
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        return "partial"
    return "empty"


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # a resumed run's checkpoint folder holds its checkpoints, as it should
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


def datamodule(cfg: RunConfig, data_dir: str | None, download: bool = False):
    """The task's data module for ``cfg``, set up; bad task options are a ``ConfigError``."""
    try:
        dm = get_datamodule(
            cfg.task,
            data_dir=data_dir,
            batch_size=cfg.train.batch_size,
            seed=cfg.seed,
            download=download,
            num_workers=cfg.train.num_workers,
            **cfg.data,
        )
    except (TypeError, ValueError) as err:  # unknown task option or bad option value
        raise ConfigError(f"data: {err}") from err
    dm.prepare_data()
    try:
        dm.setup()
    except DataIntegrityError:
        raise
    except ValueError as err:  # options checked against the data (sizes, splits)
        raise ConfigError(f"data: {err}") from None
    return dm


def _trainer(
    cfg: RunConfig, run_dir: Path, callbacks: list, progress: bool, kind: str
) -> pl.Trainer:
    """The Trainer; it creates nothing on disk until ``fit``. Settings Lightning refuses are a
    ``ConfigError``. Language models shard their rows themselves (``dm.shard``): Lightning's
    distributed sampler would deal whole windows out to the processes instead."""
    t = cfg.train
    try:
        return pl.Trainer(
            max_epochs=t.epochs,
            gradient_clip_val=t.clip_norm or None,
            precision=t.precision,
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            callbacks=callbacks,
            logger=TensorBoardLogger(str(run_dir), name="tb", version=""),
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_train_batches=_limit(t.limit_train_batches),
            limit_val_batches=_limit(t.limit_eval_batches),
            limit_test_batches=_limit(t.limit_test_batches),
            log_every_n_steps=10,
            default_root_dir=str(run_dir),
            use_distributed_sampler=kind != "language_model",
        )
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"train: {first}") from err


def _limit(value: float) -> float | int:
    return int(value) if value > 1 else value


def check_writable(path: str | Path, what: str, kind: str = "folder") -> None:
    """A ``RunError`` unless ``path`` can be created or written as a ``kind`` ("folder" or
    "file"): nothing on the way may be a file, an existing folder must be writable, and where
    something is to be created, the nearest existing folder must take a new file (tried with
    a temporary one, removed at once: permissions alone do not tell, e.g. for root)."""
    path = Path(path)
    if path.exists() and kind == "file" and path.is_dir():
        raise RunError(f"{what} {path} is a folder, expected a file name")
    if path.exists() and kind == "folder" and not path.is_dir():
        raise RunError(f"{what} {path} is a file, expected a folder")
    base = path if path.is_dir() else path.parent
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise RunError(f"cannot create {what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise RunError(f"cannot write {what} {path} in {base} (permission denied)")
    if base == path:
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".enn-probe-", dir=base)
    except OSError as err:
        raise RunError(f"cannot write {what} {path} in {base} ({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def saved_config(run_dir: Path) -> RunConfig:
    """The configuration a run folder was made with: its ``last.ckpt``'s, else ``config.yaml``."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if last.exists():
        return load_checkpoint_config(last)[0]
    path = Path(run_dir) / "config.yaml"
    try:
        return RunConfig.from_dict(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ConfigError, KeyError, TypeError, AttributeError) as err:
        raise RunError(f"{run_dir} holds a run without a readable config.yaml") from err


def run_differences(saved: RunConfig, cfg: RunConfig) -> list[tuple[str, Any, Any]]:
    """The differences that make ``saved`` another run than ``cfg``: a baseline's run is the
    same whatever the Engram fields, which it ignores."""
    ignored = frozenset() if cfg.model.backbone == "engram" else ENGRAM_KEYS
    return [d for d in config_differences(saved, cfg) if d[0] not in ignored]


def raises_cap(saved: RunConfig, cfg: RunConfig) -> bool:
    """Whether ``cfg`` is ``saved`` with a larger ``train.epochs`` and nothing else changed.
    No learning-rate schedule depends on the cap, so a run continued to it is a run of ``cfg``."""
    diff = run_differences(saved, cfg)
    return len(diff) == 1 and diff[0][0] == "train.epochs" and diff[0][2] > diff[0][1]


def stopped_early(run_dir: Path) -> int | None:
    """The epoch at which a finished run's early stopping ended it before its cap, else None."""
    epochs_run = json.loads((Path(run_dir) / METRICS_FILE).read_text())["epochs_run"]
    return epochs_run if epochs_run < saved_config(run_dir).train.epochs else None


def check_same_config(run_dir: Path, cfg: RunConfig, larger_cap: bool = False,
                      start_over: str = "--force to start it over") -> None:
    """A ``RunError`` naming the first differing key unless ``run_dir`` was made with ``cfg``
    (or, with ``larger_cap``, with ``cfg`` but a smaller ``train.epochs``); ``start_over``
    says how the command at hand replaces the run."""
    saved = saved_config(run_dir)
    if larger_cap and raises_cap(saved, cfg):
        return
    diff = run_differences(saved, cfg)
    if diff:
        key, saved, given = diff[0]
        raise RunError(
            f"{run_dir} holds a run made with {key}={format_value(saved)}, "
            f"not {format_value(given)}; use another folder, or {start_over}"
        )


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
                    dm = datamodule(validate(engram), data_dir)
                    shape = DataShape.of(dm)
                    try:
                        target = count_parameters(build_model(engram.model, shape))
                    except ValueError as err:
                        raise ConfigError(
                            f"--match-params sizes {model} to the ENN these options give, "
                            f"which cannot be built: {err}"
                        ) from err
                cfg.model = match_baseline_width(cfg.model, shape, target)
            cfgs.append(cfg)
    return cfgs


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    data_dir: str | None = None,
    resume: bool = False,
    force: bool = False,
    download: bool = False,
    progress: bool | None = None,
) -> dict:
    """Train, restore the best weights, test, and write the run folder; returns metrics.

    Everything is checked (the config's ranges, the folder, the data, the model, Lightning's
    settings) before anything is written: a run that cannot start leaves the disk untouched.
    ``resume`` continues the run in ``run_dir``, which must have been made with ``cfg``, or
    with ``cfg`` but fewer ``train.epochs``: a run that ended at its cap then goes on to the
    new one. Ctrl-C raises ``RunInterrupted`` at the next batch."""
    validate(cfg)
    run_dir = Path(run_dir)
    if resume and force:
        raise RunError("--resume continues a run and --force starts it over: give one of them")
    check_writable(run_dir, "run folder")
    status = run_status(run_dir)
    if status == "done" and not (resume or force):
        raise RunError(f"{run_dir} holds a finished run; use --force to overwrite it")
    if status == "partial" and not (resume or force):
        raise RunError(
            f"{run_dir} holds an unfinished run; use --resume to continue it "
            f"or --force to start over"
        )
    if resume and status == "empty":
        raise RunError(
            f"nothing to resume in {run_dir} (no checkpoints/last.ckpt); "
            f"start the run without --resume"
        )
    if resume and status == "done":
        saved = saved_config(run_dir)
        if not raises_cap(saved, cfg):
            raise RunError(f"{run_dir} holds a finished run; --resume continues one only to a "
                           f"larger train.epochs (use --force to start it over)")
        early = stopped_early(run_dir)
        if early is not None:
            raise RunError(f"{run_dir} stopped early at epoch {early} of {saved.train.epochs}; "
                           f"a larger train.epochs would end it the same way")
        if not (run_dir / "checkpoints" / "last.ckpt").exists():
            raise RunError(f"{run_dir} holds a finished run without checkpoints/last.ckpt to go "
                           f"on from (a published record?); use --force to start it over")
    elif resume:
        check_same_config(run_dir, cfg, larger_cap=True)
    progress = sys.stderr.isatty() if progress is None else progress
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _train(cfg, run_dir, data_dir, resume, force, download, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: RunConfig,
    run_dir: Path,
    data_dir: str | None,
    resume: bool,
    force: bool,
    download: bool,
    progress: bool,
) -> dict:
    _quiet_lightning()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = datamodule(cfg, data_dir, download)
    try:
        model = build_model(cfg.model, DataShape.of(dm))
    except ValueError as err:
        raise ConfigError(f"model: {err}") from err
    lit = LitSequenceModel(model, dm.kind, cfg.train, cfg.to_dict())

    epoch_log = EpochLog(run_dir / "metrics.csv")
    ckpt_dir = run_dir / "checkpoints"
    # Every end-of-epoch callback runs after the module's on_train_epoch_end (where the
    # learning rate schedule steps) and the checkpoints after early stopping: last.ckpt holds
    # the state after the whole epoch.
    best = BestCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    last = ckpt_dir / "last.ckpt"
    stop = _EarlyStopping(
        monitor="val_loss", mode="min", patience=cfg.train.patience, check_on_train_epoch_end=True
    )
    stopper = _StopOnCtrlC(run_dir, epoch_log)
    monitor = monitor_for(model, dm, run_dir)  # memory/ for ENN runs, None for baselines
    callbacks = [epoch_log, stopper, stop, best, LastCheckpoint(last)]
    callbacks += [monitor] if monitor else []
    trainer = _trainer(cfg, run_dir, callbacks, progress, dm.kind)
    if dm.kind == "language_model":
        try:
            dm.shard(trainer.global_rank, trainer.world_size)  # each process its own rows
        except StreamTooShortError as err:
            raise ConfigError(f"data: {err}") from err

    train_loader = dm.train_dataloader()
    if dm.kind == "classification":
        train_loader = epoch_seeded(train_loader, cfg.seed)
    # All checked: from here on the run folder is written, by the first process alone (the
    # other DDP processes run this command again once it launches them)
    if trainer.is_global_zero:
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume or raises_cap(saved_config(run_dir), cfg):
            atomic_write_text(
                run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False)
            )
        (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a run going on to a larger cap
    with _ctrl_c_stops(stopper):
        trainer.fit(
            lit,
            train_dataloaders=train_loader,
            val_dataloaders=dm.val_dataloader(),
            ckpt_path=str(last) if resume else None,
        )
        # Testing from the best checkpoint restores the callbacks' state too: keep the log.
        epochs = summarize_epochs(epoch_log.rows)
        stopper.epochs_trained = len(epoch_log.rows)
        # The best weights (early stopping restores them), then the test set.
        best_path = best.best_model_path or str(last)
        test_metrics = trainer.test(
            lit, dataloaders=dm.test_dataloader(), ckpt_path=best_path, verbose=False
        )[0]
    if not trainer.is_global_zero:
        return {}
    metrics = {
        "task": cfg.task,
        "model": cfg.model.backbone,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "params": count_parameters(model),
        **epochs,
        **_test_fields(dm.kind, test_metrics),
        "hidden_sizes": list(cfg.model.hidden_sizes),
    }
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def _test_fields(kind: str, test_metrics: dict) -> dict:
    loss = float(test_metrics["test_loss"])
    if kind == "language_model":
        return {"test_loss": loss, "test_ppl": float(test_metrics.get("test_ppl", math.exp(loss)))}
    return {"test_loss": loss, "test_acc": float(test_metrics["test_acc"])}


def load_checkpoint_config(checkpoint: str | Path) -> tuple[RunConfig, dict]:
    path = Path(checkpoint)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise RunError(f"{path} is not a readable checkpoint ({type(err).__name__})") from err
    if not isinstance(ckpt, dict) or not {"enn_config", "state_dict"} <= ckpt.keys():
        raise RunError(f"{path} is not an enn checkpoint (no enn_config and state_dict inside)")
    try:
        return RunConfig.from_dict(ckpt["enn_config"]), ckpt
    except (ConfigError, KeyError, TypeError, AttributeError) as err:
        raise RunError(f"{path} holds an enn_config this version cannot read ({err})") from err


def load_weights(model: torch.nn.Module, ckpt: dict, checkpoint: str | Path) -> torch.nn.Module:
    """``model`` with the weights of ``ckpt`` (the LightningModule's ``model.`` entries)."""
    prefix = "model."
    weights = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise RunError(f"{checkpoint}: its weights do not fit the model of its enn_config") from err
    return model


def evaluate(
    checkpoint: str | Path,
    data_dir: str | None = None,
    task: str | None = None,
    out: str | Path | None = None,
) -> dict:
    """Test metrics of a saved model, on the CPU in float32 over the whole test set; written to
    ``out`` (default: eval.json beside the run)."""
    cfg, ckpt = load_checkpoint_config(checkpoint)
    if task is not None and task != cfg.task:
        raise RunError(f"checkpoint {checkpoint} was trained on task {cfg.task!r}, not {task!r}")
    out = Path(out) if out else Path(checkpoint).resolve().parent.parent / "eval.json"
    check_writable(out, "metrics file", kind="file")
    _quiet_lightning()
    dm = datamodule(cfg, data_dir)
    model = load_weights(build_model(cfg.model, DataShape.of(dm)), ckpt, checkpoint)
    lit = LitSequenceModel(model, dm.kind, cfg.train, cfg.to_dict())
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    test_metrics = trainer.test(lit, dataloaders=dm.test_dataloader(), verbose=False)[0]
    metrics = {
        "task": cfg.task,
        "model": cfg.model.backbone,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "checkpoint": str(checkpoint),
        "params": count_parameters(model),
        **_test_fields(dm.kind, test_metrics),
    }
    atomic_write_json(out, metrics)
    return metrics
