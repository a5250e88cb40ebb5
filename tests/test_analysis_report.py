"""The report renders from a folder of small fake run files and shows their numbers."""

import csv
import json

import numpy as np
import pytest
import torch

from enn.analysis import memory
from enn.analysis.report import write_report
from enn.cli import main
from enn.models import ModelConfig, build_model
from enn.models.build import DataShape

ACC = {"engram": [0.9123, 0.9321], "lstm": [0.8012, 0.8210]}


def stat(mean, std, n, ci):
    return {"mean": mean, "std": std, "n": n, "ci95": ci}


def model_row(acc, loss, params, seconds, epochs) -> dict:
    return {
        "seeds": [0, 1],
        "preset": "default",
        "test_acc": stat(acc, 0.014, 2, 0.1258),
        "test_loss": stat(loss, 0.01, 2, 0.09),
        "params": stat(params, 0, 2, 0),
        "seconds_per_epoch": stat(seconds, 0.1, 2, 0.9),
        "epochs_run": stat(epochs, 0, 2, 0),
    }


def summary(tests: dict) -> dict:
    return {
        "task": "digits",
        "score": "test_acc",
        "models": {
            "engram": model_row(0.9222, 0.2345, 20826, 1.25, 4),
            "lstm": model_row(0.8111, 0.6789, 12097, 0.5, 3),
        },
        "tests": tests,
    }


TESTS = {
    "anova": {"test": "one-way ANOVA", "statistic": 62.5, "p": 0.0156},
    "kruskal": {"test": "Kruskal-Wallis", "statistic": 2.4, "p": 0.1213},
    "tukey": {
        "test": "Tukey HSD",
        "alpha": 0.05,
        "pairs": [{"a": "engram", "b": "lstm", "diff": 0.1111, "p": 0.0156, "significant": True}],
    },
}


def fake_comparison(root, tests=TESTS, with_memory=True):
    for model, accs in ACC.items():
        for seed, acc in enumerate(accs):
            run = root / f"{model}-seed{seed}"
            run.mkdir(parents=True)
            with open(run / "metrics.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["epoch", "train_loss", "train_acc", "val_loss", "val_acc"])
                for e in range(1, 4):
                    w.writerow([e, 1 / e, acc - 0.1 / e, 1.2 / e, acc - 0.05 / e])
            (run / "metrics.json").write_text(
                json.dumps(
                    {
                        "task": "digits",
                        "model": model,
                        "preset": "default",
                        "seed": seed,
                        "test_acc": acc,
                        "test_loss": 1 - acc,
                    }
                )
            )
    (root / "summary.json").write_text(json.dumps(summary(tests)))
    if with_memory:
        model = build_model(
            ModelConfig(hidden_sizes=(8,), memory_size=6), DataShape("classification", 10, 8)
        )
        memory_dir = root / "engram-seed1" / memory.MEMORY_DIR
        x, y = torch.rand(12, 8, 8), torch.arange(12) % 10
        for epoch in range(3):
            memory.record_memory(model, x, memory_dir, epoch)
        np.savez(memory_dir / memory.PROBE_FILE, x=x.numpy(), y=y.numpy())
    return root


def test_report_shows_the_numbers_of_the_run_files(tmp_path):
    path = write_report(fake_comparison(tmp_path))
    text = path.read_text()
    for expected in (
        "0.9222 ± 0.0140",
        "[0.7964, 1.0480]",
        "0.8111 ± 0.0140",
        "20,826",
        "12,097",
        "F = 62.5, p = 0.016 — the models differ at alpha 0.05",
        "H = 2.4, p = 0.12 — no difference between the models",
        "engram vs lstm (difference +0.1111, p = 0.016)",
        "engram-seed1: test_acc = 0.9321",
    ):
        assert expected in text, expected
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert figures == [
        "learning_curves.png",
        "memory_bank.png",
        "probe_attention.png",
        "probe_class_slot_usage.png",
        "trace_panels.png",
    ]
    for name in figures:
        assert f"figures/{name}" in text
    html = (tmp_path / "report.html").read_text()
    assert "<img src='figures/trace_panels.png'" in html and "0.9222 ± 0.0140" in html


def test_report_with_missing_pieces(tmp_path):
    skipped = {
        key: {"test": t["test"], "skipped": "needs at least two seeds per model"}
        for key, t in TESTS.items()
    }
    root = fake_comparison(tmp_path, skipped, with_memory=False)
    text = write_report(root).read_text()
    assert "one-way ANOVA on test_acc: skipped (needs at least two seeds per model)" in text
    assert "trained without the trace monitor" in text
    assert "enn explain --checkpoint engram-seed1/checkpoints/best.ckpt" in text


def test_report_without_engram_and_cli_errors(tmp_path, capsys):
    root = fake_comparison(tmp_path, with_memory=False)
    for run in root.glob("engram-*"):
        (run / "metrics.json").unlink()
    assert "No finished ENN (engram) run" in write_report(root).read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert main(["report", str(root)]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explain", "--checkpoint", "nope.ckpt", "--index", "0"], "no checkpoint"),
        (["explain", "--checkpoint", "x.ckpt", "--index", "0", "--k", "0"], "--k must be"),
    ],
)
def test_explain_cli_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_language_model_report_does_not_offer_enn_explain(tmp_path):
    """explain attributes class decisions: a perplexity comparison gets no hint to run it."""
    root = fake_comparison(tmp_path, with_memory=False)
    s = json.loads((root / "summary.json").read_text())
    s["task"], s["score"] = "ptb", "test_ppl"
    for row in s["models"].values():
        row["test_ppl"] = row.pop("test_acc")
    (root / "summary.json").write_text(json.dumps(s))
    for path in root.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        m["task"], m["test_ppl"] = "ptb", 100 / m.pop("test_acc")
        path.write_text(json.dumps(m))
    text = write_report(root).read_text()
    assert "engram-seed1: test_ppl" in text and "enn explain" not in text
