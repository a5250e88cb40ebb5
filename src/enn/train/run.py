"""One training run in a run folder, and the evaluation of a saved checkpoint.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.csv`` (per epoch),
``tb/`` (TensorBoard), ``checkpoints/{last,best}.ckpt`` (atomic) and, once the run has
finished, ``metrics.json``. Its presence is what marks a run complete.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from ..analysis.monitor import monitor_for
from ..data import get_datamodule
from ..models import ConfigError, RunConfig, build_model, count_parameters
from ..models.build import DataShape
from .callbacks import (
    AtomicCheckpointIO,
    EpochLog,
    atomic_write_json,
    atomic_write_text,
    epoch_seeded,
    summarize_epochs,
)
from .lit import LitSequenceModel

METRICS_FILE = "metrics.json"


class RunError(Exception):
    """A run cannot start as asked (e.g. it would overwrite a finished run)."""


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


def _datamodule(cfg: RunConfig, data_dir: str | None, download: bool = False):
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
    dm.setup()
    return dm


def _trainer(cfg: RunConfig, run_dir: Path, callbacks: list, progress: bool) -> pl.Trainer:
    t = cfg.train
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
        limit_test_batches=_limit(t.limit_eval_batches),
        log_every_n_steps=10,
        default_root_dir=str(run_dir),
    )


def _limit(value: float) -> float | int:
    return int(value) if value > 1 else value


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    data_dir: str | None = None,
    resume: bool = False,
    force: bool = False,
    download: bool = False,
    progress: bool | None = None,
) -> dict:
    """Train, restore the best weights, test, and write the run folder; returns metrics."""
    run_dir = Path(run_dir)
    status = run_status(run_dir)
    if status == "done" and not force:
        raise RunError(f"{run_dir} holds a finished run; use --force to overwrite it")
    if status == "partial" and not (resume or force):
        raise RunError(
            f"{run_dir} holds an unfinished run; use --resume to continue it "
            f"or --force to start over"
        )
    if force and not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    progress = sys.stderr.isatty() if progress is None else progress
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        return _train(cfg, run_dir, data_dir, resume, download, progress)
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: RunConfig,
    run_dir: Path,
    data_dir: str | None,
    resume: bool,
    download: bool,
    progress: bool,
) -> dict:
    _quiet_lightning()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = _datamodule(cfg, data_dir, download)
    if dm.kind == "language_model" and cfg.train.devices > 1:
        raise RunError(
            "multi-process training is supported for classification tasks; "
            "language models need contiguous per-process streams (use devices=1)"
        )
    model = build_model(cfg.model, DataShape.of(dm))
    lit = LitSequenceModel(model, dm.kind, cfg.train, cfg.to_dict())
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    epoch_log = EpochLog(run_dir / "metrics.csv")
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    stop = EarlyStopping(monitor="val_loss", mode="min", patience=cfg.train.patience)
    monitor = monitor_for(model, dm, run_dir)  # memory/ for ENN runs, None for baselines
    callbacks = [epoch_log, best, stop] + ([monitor] if monitor else [])
    trainer = _trainer(cfg, run_dir, callbacks, progress)

    train_loader = dm.train_dataloader()
    if dm.kind == "classification":
        train_loader = epoch_seeded(train_loader, cfg.seed)
    last = ckpt_dir / "last.ckpt"
    trainer.fit(
        lit,
        train_dataloaders=train_loader,
        val_dataloaders=dm.val_dataloader(),
        ckpt_path=str(last) if resume and last.exists() else None,
    )
    # Testing from the best checkpoint restores the callbacks' state too: keep the full log.
    epochs = summarize_epochs(epoch_log.rows)
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
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise RunError(f"{path} is not a readable checkpoint ({type(err).__name__})") from err
    if "enn_config" not in ckpt:
        raise RunError(f"{path} is not an enn checkpoint (no enn_config inside)")
    return RunConfig.from_dict(ckpt["enn_config"]), ckpt


def evaluate(
    checkpoint: str | Path,
    data_dir: str | None = None,
    task: str | None = None,
    out: str | Path | None = None,
) -> dict:
    """Test metrics of a saved model; written to ``out`` (default: eval.json beside the run)."""
    cfg, ckpt = load_checkpoint_config(checkpoint)
    if task is not None and task != cfg.task:
        raise RunError(f"checkpoint {checkpoint} was trained on task {cfg.task!r}, not {task!r}")
    _quiet_lightning()
    dm = _datamodule(cfg, data_dir)
    model = build_model(cfg.model, DataShape.of(dm))
    lit = LitSequenceModel(model, dm.kind, cfg.train, cfg.to_dict())
    lit.load_state_dict(ckpt["state_dict"])
    cfg.train.devices, cfg.train.strategy = 1, "auto"
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
    out = Path(out) if out else Path(checkpoint).resolve().parent.parent / "eval.json"
    atomic_write_json(out, metrics)
    return metrics
