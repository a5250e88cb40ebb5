"""Watching memory form during training: the ``TraceMonitor`` callback and its files.

Once before training (epoch 0, the initial state of memory) and after every validation epoch,
a fixed probe batch runs through the model in eval mode and the run folder's ``memory/``
receives:

- ``probe.npz``: the probe's inputs ``x`` and targets ``y`` (written once);
- ``epoch_EEE.npz``: ``trace`` (P, N, h) float16, the final Hebbian trace of every probe
  sequence (per-sample mode; (1, N, h) in shared mode: the batch's one trace),
  ``trace_mean`` (N, h), ``memory`` (N, h) the bank M, ``attention`` (P, T, N);
- ``trace_stats.csv``: one row per epoch, ``STAT_COLUMNS``.

For a stacked Engram the top layer is recorded. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn

from .metrics import attention_stats, find_engram, probe, trace_stats

MEMORY_DIR = "memory"
EXPLAIN_DIR = "explain"  # in a run folder too: what `enn explain` writes by default
EXPLAIN_FILE = "explain.json"
STATS_FILE = "trace_stats.csv"
PROBE_FILE = "probe.npz"
STAT_COLUMNS = (
    "epoch",
    "min",
    "max",
    "mean_abs",
    "std",
    "sparsity",
    "attention_entropy",
    "effective_slots",
    "top_slot",
    "top_slot_share",
)


def epoch_file(memory_dir: Path, epoch: int) -> Path:
    return Path(memory_dir) / f"epoch_{epoch:03d}.npz"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _write_atomic(path, buf.getvalue())


def read_stats(memory_dir: Path) -> list[dict[str, float]]:
    """The rows of ``trace_stats.csv`` as floats (empty if there is none yet)."""
    path = Path(memory_dir) / STATS_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_stats(memory_dir: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=STAT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(Path(memory_dir) / STATS_FILE, buf.getvalue().encode())


def record_memory(model: nn.Module, x: Tensor, memory_dir: Path, epoch: int) -> dict[str, float]:
    """Probe ``model`` on ``x`` and write epoch ``epoch``'s files; returns its statistics row."""
    engram = find_engram(model)
    if engram is None:
        raise ValueError(f"{type(model).__name__} holds no Engram layer")
    _, record = probe(model, x)
    trace = record.trace[-1] if record.trace.dim() == 3 else record.trace[:, -1]
    trace = trace.reshape(-1, *trace.shape[-2:]).float().cpu()  # (P, N, h) or (1, N, h)
    attention = record.attention.float().cpu()  # (P, T, N)
    memory = engram.layer_weights(engram.num_layers - 1).memory.detach().float().cpu()  # (N, h)
    _save_npz(
        epoch_file(memory_dir, epoch),
        trace=trace.numpy().astype(np.float16),
        trace_mean=trace.mean(0).numpy(),
        memory=memory.numpy(),
        attention=attention.numpy(),
    )
    row = {"epoch": epoch, **trace_stats(trace), **attention_stats(attention)}
    rows = [r for r in read_stats(memory_dir) if r["epoch"] < epoch] + [row]
    _write_stats(memory_dir, rows)
    return row


class TraceMonitor(pl.Callback):
    """Records the probe batch ``(x, y)`` into ``out_dir`` (see the module docstring).

    The model is the LightningModule's ``model`` attribute (or the module itself). Modules
    without an Engram are left alone.
    """

    def __init__(self, out_dir: str | Path, probe_batch: tuple[Tensor, Tensor]) -> None:
        self.out_dir = Path(out_dir)
        self.x, self.y = probe_batch

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        model = getattr(pl_module, "model", pl_module)
        if not trainer.is_global_zero or find_engram(model) is None:
            return
        if not (self.out_dir / PROBE_FILE).exists():
            _save_npz(self.out_dir / PROBE_FILE, x=self.x.numpy(), y=self.y.numpy())
        record_memory(model, self.x.to(pl_module.device), self.out_dir, epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not epoch_file(self.out_dir, 0).exists():  # a resumed run keeps its initial memory
            self._record(trainer, pl_module, 0)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, pl_module, trainer.current_epoch + 1)


def probe_batch(datamodule, size: int) -> tuple[Tensor, Tensor]:
    """The first ``size`` validation examples (the validation loader is not shuffled).

    Starting a DataLoader draws from torch's global generator: forked here, so that a run with
    the monitor trains exactly as one without."""
    xs, ys, have = [], [], 0
    with torch.random.fork_rng(devices=[]):
        for batch in datamodule.val_dataloader():
            xs.append(batch[0])
            ys.append(batch[1])
            have += len(batch[0])
            # language-model windows differ in length: their first window is the probe
            if have >= size or datamodule.kind == "language_model":
                break
    return torch.cat(xs)[:size], torch.cat(ys)[:size]


def monitor_for(
    model: nn.Module, datamodule, run_dir: str | Path, probe_size: int = 64
) -> TraceMonitor | None:
    """A ``TraceMonitor`` writing to ``<run_dir>/memory`` for an Engram model, else None."""
    if find_engram(model) is None:
        return None
    return TraceMonitor(Path(run_dir) / MEMORY_DIR, probe_batch(datamodule, probe_size))
