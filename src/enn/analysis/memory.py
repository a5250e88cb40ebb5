"""The ``memory/`` folder of a run: what memory looked like on a fixed probe batch, per epoch.

``record_memory`` runs the probe batch through the model in eval mode; during training the
``TraceMonitor`` callback (``enn.train.callbacks``) calls it before the first epoch (epoch 0,
the initial state of memory) and after every validation epoch. The folder holds:

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
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.atomic import atomic_save_npz, atomic_write_text
from .metrics import attention_stats, find_engram, probe, trace_stats

MEMORY_DIR = "memory"
EXPLAIN_DIR = "explain"  # in a run folder too: what `enn explain` writes by default
EXPLAIN_FILE = "explain.json"
STATS_FILE = "trace_stats.csv"
PROBE_FILE = "probe.npz"
WHOLE_STATS = ("epoch", "top_slot")  # rewritten as they were written, not as 20.0
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


def read_stats(memory_dir: Path) -> list[dict[str, float]]:
    """The rows of ``trace_stats.csv`` as numbers, the epoch and the top slot whole (empty if
    there is none yet)."""
    path = Path(memory_dir) / STATS_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: int(float(v)) if k in WHOLE_STATS else float(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def _write_stats(memory_dir: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=STAT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(memory_dir) / STATS_FILE, buf.getvalue())


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
    atomic_save_npz(
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


def write_probe(memory_dir: Path, x: Tensor, y: Tensor) -> None:
    """``probe.npz``: the probe batch's inputs and targets."""
    atomic_save_npz(Path(memory_dir) / PROBE_FILE, x=x.numpy(), y=y.numpy())


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
