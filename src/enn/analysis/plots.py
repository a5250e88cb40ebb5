"""Pictures of memory, attention, attribution and training, as PNG files (matplotlib Agg).

Every function writes one titled, labelled PNG of a fixed pixel size and returns its path.
Signed values use a diverging colour map centred at 0; non-negative ones a sequential map.
``plot_trace_panels`` and ``plot_learning_curves`` read a run's or a comparison's files; the
others take arrays that ``enn explain`` and the report read from saved files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..data.atomic import atomic_path  # noqa: E402
from ..data.vocab import decode  # noqa: E402
from .memory import epoch_file, read_stats  # noqa: E402
from .summary import load_runs  # noqa: E402

DPI = 100
SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "viridis"


def _save(fig: Figure, out: str | Path) -> Path:
    """Write ``fig`` atomically as a PNG (whatever ``out``'s suffix) and close it."""
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return out


def _heatmap(
    fig: Figure,
    ax: Axes,
    values: np.ndarray,
    title: str,
    xlabel: str,
    ylabel: str,
    signed: bool,
    label: str,
    lim: float | None = None,
) -> None:
    """A heatmap of (rows, cols) with its colour bar; signed maps are centred at 0, the others
    span the data's range (attention is often close to uniform). ``lim`` fixes a signed map's
    range to [-lim, lim], to compare panels."""
    values = np.asarray(values, dtype=float)
    if signed:
        lim = lim or float(np.nanmax(np.abs(values))) or 1.0
        kwargs = {"cmap": SIGNED_CMAP, "vmin": -lim, "vmax": lim}
    else:
        kwargs = {"cmap": POSITIVE_CMAP}
    image = ax.imshow(values, aspect="auto", interpolation="nearest", **kwargs)
    for axis in (ax.xaxis, ax.yaxis):  # rows and columns are indices: no ticks between them
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, label=label)


def plot_trace_panels(memory_dir: str | Path, out: str | Path) -> Path:
    """The paper's four panels from a run's ``memory/``: the mean final trace of the probe after
    the last recorded epoch, the same before training (epoch 0), their difference (slot x
    hidden unit), and the trace statistics over epochs."""
    memory_dir = Path(memory_dir)
    rows = read_stats(memory_dir)
    if not rows:
        raise FileNotFoundError(f"no trace statistics in {memory_dir}")
    first, last = int(rows[0]["epoch"]), int(rows[-1]["epoch"])
    with np.load(epoch_file(memory_dir, first)) as f:
        initial = f["trace_mean"]  # (N, h)
    with np.load(epoch_file(memory_dir, last)) as f:
        final = f["trace_mean"]  # (N, h)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    axis_labels = ("hidden unit", "memory slot")
    lim = float(max(np.abs(final).max(), np.abs(initial).max()))  # one scale for both
    _heatmap(fig, axes[0, 0], final, f"Final trace (epoch {last})", *axis_labels, True, "H", lim)
    _heatmap(
        fig,
        axes[0, 1],
        initial,
        f"Initial trace (epoch {first}, before training)",
        *axis_labels,
        True,
        "H",
        lim,
    )
    _heatmap(
        fig,
        axes[1, 0],
        final - initial,
        f"Difference (epoch {last} - epoch {first})",
        *axis_labels,
        True,
        "ΔH",
    )
    ax = axes[1, 1]
    epochs = [r["epoch"] for r in rows]
    for key, name in (("min", "min H"), ("max", "max H"), ("mean_abs", "mean |H|")):
        ax.plot(epochs, [r[key] for r in rows], marker="o", label=name)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("trace value")
    right = ax.twinx()
    right.plot(epochs, [r["sparsity"] for r in rows], "k--", marker="s", label="sparsity")
    right.set_ylabel("sparsity: fraction of |H| < 0.01")
    right.set_ylim(0, 1.05)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=9)
    ax.set_title("Trace statistics over epochs (probe batch)")
    fig.suptitle("Hebbian trace of the probe sequences (mean over sequences)")
    return _save(fig, out)


def plot_attention(
    attention: np.ndarray,
    out: str | Path,
    title: str,
    image: np.ndarray | None = None,
    symbols: list[str] | None = None,
) -> Path:
    """Attention (T, N) of one input as time step x memory slot, beside the input: an
    ``image`` (H, W) or (H, W, 3) in [0, 1], or ``symbols`` (T,) as the time-step labels."""
    attention = np.asarray(attention, dtype=float)
    if image is None:
        fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    else:
        fig, (left, ax) = plt.subplots(
            1, 2, figsize=(12, 5), layout="constrained", gridspec_kw={"width_ratios": [1, 2.2]}
        )
        left.imshow(image, cmap="gray_r" if image.ndim == 2 else None, vmin=0, vmax=1)
        left.set_title("input (one row per time step)")
        left.set_xlabel("feature")
        left.set_ylabel("time step")
    uniform = 1 / attention.shape[1]
    _heatmap(
        fig,
        ax,
        attention,
        f"attention a_t (uniform: 1/N = {uniform:.3g})",
        "memory slot",
        "time step",
        False,
        "weight",
    )
    if symbols is not None:
        ax.set_yticks(range(len(symbols)), symbols)
        ax.set_ylabel("time step (input symbol)")
    fig.suptitle(title)
    return _save(fig, out)


def plot_memory_bank(memory: np.ndarray, out: str | Path, title: str = "Memory bank M") -> Path:
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    _heatmap(fig, ax, memory, title, "hidden unit", "memory slot", True, "M")
    return _save(fig, out)


def plot_class_slot_usage(
    usage: np.ndarray, out: str | Path, title: str, class_names: list[str] | None = None
) -> Path:
    """Mean attention per slot (columns) for the sequences of each class (rows), and the same
    minus each slot's mean over the classes (which slots are class-specific)."""
    usage = np.asarray(usage, dtype=float)
    fig, axes = plt.subplots(2, 1, figsize=(11, 9), layout="constrained")
    _heatmap(fig, axes[0], usage, "mean attention", "memory slot", "class", False, "weight")
    relative = usage - np.nanmean(usage, axis=0, keepdims=True)
    _heatmap(
        fig,
        axes[1],
        relative,
        "mean attention minus the slot's mean over classes",
        "memory slot",
        "class",
        True,
        "weight difference",
    )
    names = class_names or [str(c) for c in range(usage.shape[0])]
    for ax in axes:
        ax.set_yticks(range(usage.shape[0]), names)
    fig.suptitle(title)
    return _save(fig, out)


def plot_attribution(
    scores: np.ndarray, out: str | Path, title: str, ablation: dict | None = None
) -> Path:
    """Slot attribution as bars (red: for the class, blue: against); the ``ablation`` numbers
    (``metrics.Ablation.as_dict``) are printed under the chart and its removed slots marked."""
    scores = np.asarray(scores, dtype=float)
    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    colours = np.where(scores >= 0, "tab:red", "tab:blue")
    bars = ax.bar(np.arange(len(scores)), scores, color=colours, width=0.8)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("memory slot")
    ax.set_ylabel("attribution to the class logit")
    ax.set_xlim(-1, len(scores))
    ax.set_title(title)
    if ablation is not None:
        for slot in ablation["top_slots"]:
            bars[slot].set_edgecolor("black")
            bars[slot].set_linewidth(1.5)
        k = ablation["k"]
        text = (
            f"p(class) = {ablation['prob']:.3f};  without the top {k} slots (outlined): "
            f"{ablation['prob_top']:.3f} (drop {ablation['drop_top']:+.3f});  without {k} random "
            f"slots: {ablation['prob_random']:.3f} ± {ablation['prob_random_std']:.3f} "
            f"(drop {ablation['drop_random']:+.3f}, {ablation['draws']} draws)"
        )
        fig.text(0.5, 0.01, text, ha="center", va="bottom", fontsize=9)
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return _save(fig, out)


def read_curves(compare_dir: str | Path) -> dict[str, list[list[dict[str, float]]]]:
    """``{model: [rows of metrics.csv per seed]}`` of the finished runs (``summary.load_runs``,
    as in the report's table); a run still training has no ``metrics.json`` yet."""
    curves: dict[str, list[list[dict[str, float]]]] = {}
    for run_dir, metrics in load_runs(Path(compare_dir)):
        path = run_dir / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        if not rows:  # a header alone: no epoch to draw
            continue
        curves.setdefault(metrics["model"], []).append(rows)
    return curves


def plot_learning_curves(compare_dir: str | Path, out: str | Path) -> Path:
    """Validation loss and accuracy (or perplexity) per epoch of every model in a comparison:
    the mean over seeds, with a band from the lowest to the highest seed."""
    curves = read_curves(compare_dir)
    if not curves:
        raise FileNotFoundError(f"no finished run with a metrics.csv under {compare_dir}")
    sample = next(iter(curves.values()))[0][0]
    score = "val_acc" if "val_acc" in sample else "val_ppl"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for colour, (model, runs) in enumerate(sorted(curves.items())):
        for ax, key in zip(axes, ("val_loss", score), strict=True):
            last = max(len(r) for r in runs)
            epochs, mean, low, high = [], [], [], []
            for e in range(last):
                values = [r[e][key] for r in runs if e < len(r) and key in r[e]]
                if values:
                    epochs.append(e + 1)
                    mean.append(np.mean(values))
                    low.append(min(values))
                    high.append(max(values))
            ax.plot(epochs, mean, marker=".", color=f"C{colour}", label=f"{model} (n={len(runs)})")
            ax.fill_between(epochs, low, high, color=f"C{colour}", alpha=0.2)
    names = {
        "val_loss": "validation loss",
        "val_acc": "validation accuracy",
        "val_ppl": "validation perplexity",
    }
    for ax, key in zip(axes, ("val_loss", score), strict=True):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_ylabel(names[key])
        ax.set_title(f"{names[key]} (mean over seeds, band: min-max)")
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(f"Learning curves: {Path(compare_dir).name}")
    return _save(fig, out)


def input_view(task: str, x: np.ndarray) -> tuple[np.ndarray | None, list[str] | None]:
    """How to show one input beside its attention: (image, None) for image rows, (None,
    symbols) for associative recall, (None, None) for token ids of a language model."""
    x = np.asarray(x)
    if task == "assoc":
        return None, list(decode(x))
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        return None, None
    steps, width = x.shape
    side = int(round(np.sqrt(x.size)))
    if width == 1 and side * side == x.size:  # pixel-sequential: back to the square image
        return x.reshape(side, side), None
    if width == 3 * steps:  # RGB rows (r, g, b interleaved)
        return x.reshape(steps, steps, 3).clip(0, 1), None
    return x.clip(0, 1), None
