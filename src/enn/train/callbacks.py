"""Training plumbing: atomic checkpoints, resumable epoch log and timing, epoch-seeded shuffling,
and the memory monitor of ENN runs."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from ..analysis.memory import (
    MEMORY_DIR,
    PROBE_FILE,
    epoch_file,
    probe_batch,
    record_memory,
    write_probe,
)
from ..analysis.metrics import find_engram
from ..data.atomic import atomic_write_bytes, atomic_write_text


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file, then are renamed: a killed run leaves no corrupt one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


class BestCheckpoint(ModelCheckpoint):
    """``best.ckpt`` of a run folder that may have been moved or copied before a resume: the
    saved record of the best epoch is read relative to the folder it is in now (Lightning
    drops the best score when the folder differs, so the next epoch would count as a new
    best and the test would run on it)."""

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, under which every run's checkpoints hold this state
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict) -> None:
        saved_dir = state_dict.get("dirpath")
        if saved_dir is not None and self.dirpath is not None and saved_dir != self.dirpath:
            def here(path):
                return str(Path(self.dirpath) / Path(path).name) if path else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{k: here(state_dict.get(k))
                   for k in ("best_model_path", "kth_best_model_path", "last_model_path")},
                "best_k_models": {here(k): v for k, v in state_dict["best_k_models"].items()},
            }
        super().load_state_dict(state_dict)


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` after every epoch, written after the learning-rate schedule, early stopping
    and the best checkpoint have seen the epoch (Lightning runs checkpoint callbacks last), so
    that a resumed run continues exactly where the unbroken one would."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path)


class EpochSeededSampler(RandomSampler):
    """Shuffles by (seed, epoch) alone, so a resumed run sees the same order as an unbroken one."""

    def __init__(self, data_source, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=g).tolist())


def epoch_seeded(loader: DataLoader, seed: int) -> DataLoader:
    """The same loader, shuffled by ``EpochSeededSampler`` (only for shuffled loaders)."""
    if not isinstance(loader.sampler, RandomSampler):
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=EpochSeededSampler(loader.dataset, seed),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
        pin_memory=loader.pin_memory,
    )


class EpochLog(pl.Callback):
    """Per-epoch metrics and timing (``metrics.csv``); its state lives in checkpoints."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = Path(csv_path)
        self.rows: list[dict] = []
        self._t0 = 0.0
        self._steps0 = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._steps0 = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.split("_")[0] in ("train", "val")
        }
        row = {
            "epoch": trainer.current_epoch + 1,
            **metrics,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - self._t0,
            "steps": trainer.global_step - self._steps0,
        }
        self.rows.append(row)
        if trainer.is_global_zero:
            self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv_path, buf.getvalue())

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


def summarize_epochs(rows: list[dict]) -> dict:
    """Run-level fields of metrics.json from the epoch rows (as logged, or read from the CSV)."""
    seconds = sum(float(r["epoch_seconds"]) for r in rows)
    steps = sum(int(float(r["steps"])) for r in rows)
    scored = [r for r in rows if r.get("val_loss") not in (None, "")]
    best = min(scored, key=lambda r: float(r["val_loss"])) if scored else None
    return {
        "best_epoch": int(float(best["epoch"])) if best else None,
        "epochs_run": len(rows),
        "train_seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / max(steps, 1), 6),
        "seconds_per_epoch": round(seconds / max(len(rows), 1), 3),
        "val_loss": float(best["val_loss"]) if best else None,
    }


class TraceMonitor(pl.Callback):
    """Records the probe batch ``(x, y)`` into ``out_dir`` (``enn.analysis.memory``) before
    training and after every validation epoch.

    The model is the LightningModule's ``model`` attribute (or the module itself). Modules
    without an Engram are left alone.
    """

    def __init__(self, out_dir: str | Path, probe: tuple[Tensor, Tensor]) -> None:
        self.out_dir = Path(out_dir)
        self.x, self.y = probe

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        model = getattr(pl_module, "model", pl_module)
        if not trainer.is_global_zero or find_engram(model) is None:
            return
        if not (self.out_dir / PROBE_FILE).exists():
            write_probe(self.out_dir, self.x, self.y)
        # the trainer's input conversion (a *-true precision casts the model, not the probe)
        x = trainer.precision_plugin.convert_input(self.x.to(pl_module.device))
        record_memory(model, x, self.out_dir, epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not epoch_file(self.out_dir, 0).exists():  # a resumed run keeps its initial memory
            self._record(trainer, pl_module, 0)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, pl_module, trainer.current_epoch + 1)


def monitor_for(
    model: nn.Module, datamodule, run_dir: str | Path, probe_size: int = 64
) -> TraceMonitor | None:
    """A ``TraceMonitor`` writing to ``<run_dir>/memory`` for an Engram model, else None."""
    if find_engram(model) is None:
        return None
    return TraceMonitor(Path(run_dir) / MEMORY_DIR, probe_batch(datamodule, probe_size))
