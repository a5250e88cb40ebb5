"""The trace monitor's files and statistics, and every plot as a PNG of the expected size."""

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from enn.analysis import memory, plots
from enn.models import ModelConfig, build_model
from enn.models.build import DataShape
from enn.train.callbacks import monitor_for


def png_shape(path):
    assert path.is_file() and path.stat().st_size > 0
    return mpimg.imread(path).shape[:2]  # (height, width) in pixels


def tiny_classifier(trace: str = "per_sample"):
    cfg = ModelConfig(hidden_sizes=(8,), memory_size=6, trace=trace)
    return build_model(cfg, DataShape("classification", num_classes=3, input_size=5))


@pytest.mark.parametrize("trace", ["per_sample", "shared"])
def test_record_memory_files_and_statistics(tmp_path, trace):
    model = tiny_classifier(trace)
    x = torch.rand(4, 3, 5)
    row = memory.record_memory(model, x, tmp_path, epoch=0)
    with np.load(memory.epoch_file(tmp_path, 0)) as f:
        traces, mean, bank, attention = f["trace"], f["trace_mean"], f["memory"], f["attention"]
    assert traces.shape == ((4, 6, 8) if trace == "per_sample" else (1, 6, 8))
    assert bank.shape == (6, 8) and attention.shape == (4, 3, 6)
    np.testing.assert_allclose(mean, traces.astype(np.float32).mean(0), atol=1e-4)
    h = traces.astype(float)
    assert row["max"] == pytest.approx(h.max(), abs=1e-4)
    assert row["mean_abs"] == pytest.approx(np.abs(h).mean(), abs=1e-4)
    assert row["sparsity"] == pytest.approx((np.abs(h) < 0.01).mean(), abs=0.01)
    # a second epoch appends; recording an earlier epoch again (a resumed run) replaces
    memory.record_memory(model, x, tmp_path, epoch=1)
    memory.record_memory(model, x, tmp_path, epoch=1)
    assert [r["epoch"] for r in memory.read_stats(tmp_path)] == [0, 1]
    with open(tmp_path / memory.STATS_FILE) as f:
        header, *rows = csv.reader(f)
    assert tuple(header) == memory.STAT_COLUMNS
    whole = [header.index(name) for name in memory.WHOLE_STATS]
    assert all(row[i].isdigit() for row in rows for i in whole)  # rewritten rows: 0, not 0.0


def test_monitor_statistics_on_a_known_trace(tmp_path, monkeypatch):
    """The CSV row holds the hand-computed statistics of a fixed trace and attention."""
    trace = torch.tensor([[[0.0, 0.005], [-0.02, 0.05]]])  # (T=1, N=2, h=2) shared
    attention = torch.tensor([[[0.5, 0.5]], [[1.0, 0.0]]])  # (B=2, T=1, N=2)

    class Record:
        pass

    record = Record()
    record.trace, record.attention = trace, attention
    monkeypatch.setattr(memory, "probe", lambda model, x: (None, record))
    row = memory.record_memory(tiny_classifier(), torch.zeros(2, 1, 5), tmp_path, epoch=3)
    expected = {
        "epoch": 3,
        "min": -0.02,
        "max": 0.05,
        "mean_abs": 0.01875,
        "sparsity": 0.5,
        "attention_entropy": np.log(2) / 2,
        "effective_slots": np.sqrt(2),
        "top_slot": 0,
        "top_slot_share": 1.0,
    }
    saved = memory.read_stats(tmp_path)[0]
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-9)
        assert saved[key] == pytest.approx(value, abs=1e-9)


def test_monitor_for_ignores_baselines(tmp_path):
    gru = build_model(
        ModelConfig(backbone="gru", hidden_sizes=(8,)), DataShape("classification", 3, 5)
    )
    assert monitor_for(gru, None, tmp_path) is None


def fake_memory(tmp_path):
    model = tiny_classifier()
    for epoch in range(3):
        memory.record_memory(model, torch.rand(4, 8, 5), tmp_path, epoch)
    return tmp_path


def test_trace_panels_png(tmp_path):
    path = plots.plot_trace_panels(fake_memory(tmp_path / "memory"), tmp_path / "p.png")
    assert png_shape(path) == (900, 1300)


def test_attention_pngs(tmp_path):
    a = np.random.default_rng(0).dirichlet(np.ones(6), size=8)  # (T, N)
    image, symbols = plots.input_view("digits", np.random.rand(8, 8).astype(np.float32))
    assert symbols is None and image.shape == (8, 8)
    assert png_shape(plots.plot_attention(a, tmp_path / "a.png", "t", image)) == (500, 1200)
    onehot = np.eye(37, dtype=np.float32)[[2, 27, 4, 30, 36, 36, 2]]
    image, symbols = plots.input_view("assoc", onehot)
    assert image is None and "".join(symbols) == "c1e4??c"
    assert png_shape(plots.plot_attention(a[:7], tmp_path / "b.png", "t", None, symbols)) == (
        500,
        900,
    )
    image, _ = plots.input_view("cifar10", np.random.rand(32, 96).astype(np.float32))
    assert image.shape == (32, 32, 3)
    image, _ = plots.input_view("mnist-pixel", np.random.rand(784, 1).astype(np.float32))
    assert image.shape == (28, 28)


def test_bank_usage_and_attribution_pngs(tmp_path):
    rng = np.random.default_rng(0)
    assert png_shape(plots.plot_memory_bank(rng.normal(size=(6, 8)), tmp_path / "m.png")) == (
        600,
        1000,
    )
    usage = rng.dirichlet(np.ones(6), size=3)
    assert png_shape(plots.plot_class_slot_usage(usage, tmp_path / "u.png", "t")) == (900, 1100)
    ablation = {
        "k": 2,
        "draws": 5,
        "top_slots": [1, 4],
        "prob": 0.9,
        "prob_top": 0.5,
        "prob_random": 0.85,
        "prob_random_std": 0.02,
        "drop_top": 0.4,
        "drop_random": 0.05,
    }
    path = plots.plot_attribution(rng.normal(size=6), tmp_path / "s.png", "t", ablation)
    assert png_shape(path) == (550, 1100)


def write_run(run_dir, model, seed, rows, metrics):
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (run_dir / "metrics.json").write_text(json.dumps({"model": model, "seed": seed, **metrics}))


def test_learning_curves_png(tmp_path):
    for model in ("engram", "lstm"):
        for seed, epochs in ((0, 3), (1, 4)):
            rows = [
                {"epoch": e, "val_loss": 1 / e, "val_acc": 1 - 1 / (e + 1)}
                for e in range(1, epochs + 1)
            ]
            write_run(tmp_path / f"{model}-seed{seed}", model, seed, rows, {})
    write_run(tmp_path / "gru-seed0", "gru", 0, rows, {})
    (tmp_path / "gru-seed0" / "metrics.json").unlink()  # still training: not in the report
    curves = plots.read_curves(tmp_path)
    assert sorted(curves) == ["engram", "lstm"] and len(curves["lstm"]) == 2
    assert png_shape(plots.plot_learning_curves(tmp_path, tmp_path / "c.png")) == (450, 1200)


def test_a_failed_savefig_leaves_no_partial_png(tmp_path, monkeypatch):
    """PNGs are written atomically: a savefig that dies half-way leaves the previous picture
    (and no temporary file), and the figure is closed."""
    out = tmp_path / "bank.png"
    plots.plot_memory_bank(np.eye(3), out)
    before = out.read_bytes()

    def half(fig, fname, **kwargs):
        assert kwargs["format"] == "png"  # the temporary name has no .png suffix
        with open(fname, "wb") as f:
            f.write(before[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(plots.Figure, "savefig", half)
    with pytest.raises(KeyboardInterrupt):
        plots.plot_memory_bank(np.eye(3), out)
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]
    assert plots.plt.get_fignums() == []


def test_heatmap_ticks_fall_on_whole_indices(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: figures.append(fig) or out)
    plots.plot_attention(np.full((20, 64), 1 / 64), tmp_path / "a.png", "t")
    plots.plot_memory_bank(np.zeros((64, 199)), tmp_path / "m.png")
    for fig in figures:
        fig.canvas.draw()
        ax = fig.axes[0]
        ticks = np.concatenate([ax.get_xticks(), ax.get_yticks()])
        assert np.array_equal(ticks, ticks.round()), ticks
    rows = [{"epoch": e, "val_loss": 1 / e, "val_acc": 0.5} for e in (1, 2)]
    write_run(tmp_path / "cmp" / "engram-seed0", "engram", 0, rows, {})
    plots.plot_learning_curves(tmp_path / "cmp", tmp_path / "c.png")
    figures[-1].canvas.draw()
    for ax in figures[-1].axes:  # epochs: 1 and 2, nothing between
        ticks = ax.get_xticks()
        assert np.array_equal(ticks, ticks.round()), ticks
