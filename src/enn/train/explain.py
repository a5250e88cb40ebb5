"""``enn explain``: which memory slots drove a trained ENN classifier's decisions.

For each chosen test input: its attention map, the slot attribution of the predicted class and
the ablation check (top-k attributed slots removed vs k random ones); over the whole test set:
the class-by-slot usage. Written to ``<out>/``: ``explain.json`` (numbers and the PNGs' names),
``explain.npz`` (arrays) and the PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..analysis import plots
from ..analysis.memory import EXPLAIN_DIR, EXPLAIN_FILE
from ..analysis.metrics import ablation, class_slot_usage, find_engram, probe, slot_attribution
from ..data import get_datamodule
from ..data.atomic import atomic_save_npz, atomic_write_json
from ..models import build_model
from ..models.build import DataShape
from ..models.config import PER_STEP_TASKS
from .run import check_writable, load_checkpoint_config, load_weights

USAGE_PNG = "class_slot_usage.png"


class ExplainError(ValueError):
    """The checkpoint or the request cannot be explained (one line for the user)."""


def attention_png(index: int) -> str:
    return f"attention_test{index}.png"


def attribution_png(index: int) -> str:
    return f"attribution_test{index}.png"


def load_model(checkpoint: str | Path, data_dir: str | None = None):
    """(config, data module set up, model in eval mode with the checkpoint's weights)."""
    cfg, ckpt = load_checkpoint_config(checkpoint)
    if cfg.model.backbone != "engram":  # before any data is read
        raise ExplainError(
            f"{checkpoint} holds a {cfg.model.backbone} model; explain needs an Engram (ENN) model"
        )
    dm = get_datamodule(
        cfg.task, data_dir=data_dir, batch_size=cfg.train.batch_size, seed=cfg.seed, **cfg.data
    )
    if dm.kind != "classification":
        raise ExplainError(f"{checkpoint}: explain works on classifiers, not {dm.kind} models")
    dm.prepare_data()
    dm.setup()
    model = build_model(cfg.model, DataShape.of(dm))
    if find_engram(model) is None:
        raise ExplainError(
            f"{checkpoint} holds a {cfg.model.backbone} model; explain needs an Engram (ENN) model"
        )
    layers = find_engram(model).num_layers
    if layers != 1:
        raise ExplainError(f"{checkpoint}: explain removes slots of a one-layer ENN; this one has "
                           f"{layers} layers")
    return cfg, dm, load_weights(model, ckpt, checkpoint).eval()


@torch.no_grad()
def test_set_usage(model: nn.Module, dm, num_classes: int) -> np.ndarray:
    """(C, N): mean attention per slot per class over the test set."""
    means, labels = [], []
    for batch in dm.test_dataloader():
        _, record = probe(model, batch[0])
        means.append(record.attention.mean(1))  # (B, N)
        labels.append(batch[1])
    return class_slot_usage(torch.cat(means), torch.cat(labels), num_classes)


def explain(
    checkpoint: str | Path,
    indices: list[int],
    data_dir: str | None = None,
    out: str | Path | None = None,
    k: int = 4,
    draws: int = 20,
) -> Path:
    """Explain test inputs ``indices`` of ``checkpoint``'s model; returns the output folder
    (default: ``explain/`` in the checkpoint's run folder)."""
    cfg, dm, model = load_model(checkpoint, data_dir)
    if cfg.task in PER_STEP_TASKS:
        raise ExplainError(
            f"explain attributes one decision per sequence; task {cfg.task!r} has a target at "
            f"each query step, which it does not explain"
        )
    test = dm.test_dataloader().dataset
    bad = [i for i in indices if not 0 <= i < len(test)]
    if bad:
        raise ExplainError(
            f"test index {bad[0]} is out of range: the test set has {len(test)} "
            f"inputs (0 to {len(test) - 1})"
        )
    n_slots = find_engram(model).memory_size
    if not 1 <= k <= n_slots - 1:
        raise ExplainError(
            f"--k expects 1 to {n_slots - 1} (the model has {n_slots} memory slots and the "
            f"ablation keeps at least one), got {k}"
        )
    out = Path(out) if out else Path(checkpoint).resolve().parent.parent / EXPLAIN_DIR
    check_writable(out, "output folder")
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i in indices:
        x, y = test[i][0][None], int(test[i][1])  # (1, T, ...)
        att = slot_attribution(model, x)
        pred = int(att.target[0])
        result = ablation(model, x, att.scores[0], pred, k=k, draws=draws, seed=i)
        arrays[f"attention_{i}"] = att.attention[0].numpy()  # (T, N)
        arrays[f"scores_{i}"] = att.scores[0].numpy()  # (N,)
        entries.append(
            {
                "index": i,
                "label": y,
                "predicted": pred,
                **result.as_dict(),
                "attention_png": attention_png(i),
                "attribution_png": attribution_png(i),
            }
        )
        title = f"{cfg.task} test input {i}: label {y}, predicted {pred} (p = {result.prob:.3f})"
        image, symbols = plots.input_view(cfg.task, x[0].numpy())
        plots.plot_attention(
            arrays[f"attention_{i}"], out / attention_png(i), title, image, symbols
        )
        plots.plot_attribution(
            arrays[f"scores_{i}"],
            out / attribution_png(i),
            f"Slot attribution, {title}",
            entries[-1],
        )
    usage = test_set_usage(model, dm, dm.num_classes)
    arrays["class_slot_usage"] = usage
    plots.plot_class_slot_usage(
        usage,
        out / USAGE_PNG,
        f"Class-by-slot usage over the {cfg.task} test set (n = {len(test)})",
    )
    atomic_save_npz(out / "explain.npz", **arrays)
    summary = {
        "checkpoint": str(checkpoint),
        "task": cfg.task,
        "model": cfg.model.backbone,
        "memory_size": n_slots,
        "usage_png": USAGE_PNG,
        "inputs": entries,
    }
    atomic_write_json(out / EXPLAIN_FILE, summary, sort_keys=False)
    return out
