"""The report renders from a folder of small fake run files and shows their numbers."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from enn.analysis import memory, plots
from enn.analysis.report import write_report
from enn.cli import main
from enn.models import ModelConfig, build_model
from enn.models.build import DataShape
from enn.train.explain import explain

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
            (run / "checkpoints").mkdir(parents=True)  # a run trained here, not a record
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
                        "params": 20826 if model == "engram" else 12097,
                        "seconds_per_epoch": 1.0,
                        "epochs_run": 3,
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
    # damaged files: one line naming the file, exit 2 (never a traceback)
    metrics = root / "lstm-seed0" / "metrics.json"
    good = metrics.read_text()
    for text in ("{}", "[1]"):
        metrics.write_text(text)
        assert main(["report", str(root)]) == 2
        assert f"{metrics} is not a run's metrics" in capsys.readouterr().err
    metrics.write_text(good)
    (root / "summary.json").write_text("{}")
    assert main(["report", str(root)]) == 2
    assert "summary.json is not a comparison's summary" in capsys.readouterr().err
    (root / "summary.json").unlink()  # the report summarises the runs again
    csv_file = root / "lstm-seed0" / "metrics.csv"
    csv_file.write_text(csv_file.read_text().splitlines()[0] + "\n")  # the header alone
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


class Killed(BaseException):
    """A process killed in the middle of a write."""


def kill_while_writing(monkeypatch, name: str) -> None:
    """Writing ``name`` (or a temporary file for it) with ``Path.write_text``/``write_bytes``
    stops half-way, as if the process were killed."""
    write_text, write_bytes = Path.write_text, Path.write_bytes

    def half(path, data, *args, **kwargs):
        if name not in path.name:
            writer = write_text if isinstance(data, str) else write_bytes
            return writer(path, data, *args, **kwargs)
        with open(path, "w" if isinstance(data, str) else "wb") as f:
            f.write(data[: len(data) // 2])
        raise Killed

    monkeypatch.setattr(Path, "write_text", half)
    monkeypatch.setattr(Path, "write_bytes", half)


def test_a_report_killed_while_writing_keeps_the_previous_one(tmp_path, monkeypatch):
    root = fake_comparison(tmp_path, with_memory=False)
    write_report(root)
    before = (root / "report.html").read_text()
    kill_while_writing(monkeypatch, "report.html")
    with pytest.raises(Killed):
        write_report(root)
    assert (root / "report.html").read_text() == before
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == [
        "report.html", "report.md", "summary.json"]  # no temporary file left


def test_an_explain_killed_while_writing_leaves_a_readable_explain_json(tmp_path, monkeypatch):
    run = tmp_path / "engram-seed0"
    assert main(["train", "--task", "digits", "--model", "engram", "--out", str(run),
                 "--epochs", "1", "train.batch_size=64", "train.limit_train_batches=2",
                 "model.hidden_sizes=8", "model.memory_size=4"]) == 0
    out = explain(run / "checkpoints" / "best.ckpt", [0], k=1, draws=2)
    names = sorted(p.name for p in out.iterdir())
    before = (out / memory.EXPLAIN_FILE).read_text()
    kill_while_writing(monkeypatch, memory.EXPLAIN_FILE)
    with pytest.raises(Killed):
        explain(run / "checkpoints" / "best.ckpt", [0], k=1, draws=2)
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary file left
    assert (out / memory.EXPLAIN_FILE).read_text() == before
    assert json.loads(before)["inputs"][0]["index"] == 0


def test_an_unreadable_explain_json_is_a_note_in_the_report(tmp_path, capsys):
    root = fake_comparison(tmp_path, with_memory=False)
    explain_dir = root / "engram-seed1" / memory.EXPLAIN_DIR
    explain_dir.mkdir()
    (explain_dir / memory.EXPLAIN_FILE).write_text('{"inputs": [{"index": 0, "lab')
    assert main(["report", str(root)]) == 0
    text = (root / "report.md").read_text()
    assert ("No attribution: engram-seed1/explain/explain.json is unreadable (JSONDecodeError: "
            in text)
    assert "run `enn explain --checkpoint engram-seed1/checkpoints/best.ckpt" in text
    (explain_dir / memory.EXPLAIN_FILE).write_text('{"inputs": [{"index": 0}]}')  # no label
    assert "explain.json is unreadable (KeyError: 'label')" in write_report(root).read_text()


def test_the_report_counts_the_runs_its_summary_counts(tmp_path):
    """Every folder with a metrics.json is a finished run, whatever its name: the summary, the
    report's run count and best run, and the learning curves agree."""
    root = fake_comparison(tmp_path, with_memory=False)
    (root / "summary.json").unlink()  # the report summarises the run folders
    for path in root.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        path.write_text(json.dumps({**m, "params": 100, "seconds_per_epoch": 1.0,
                                    "epochs_run": 3}))
    (root / "engram-seed1").rename(root / "engram-long")
    (root / "figures").mkdir()  # not a run
    text = write_report(root).read_text()
    assert text.count("| engram | 0, 1 |") == 1
    assert "4 finished runs of 2 models" in text
    assert "engram-long: test_acc = 0.9321" in text
    curves = plots.read_curves(root)
    assert [len(curves[m]) for m in ("engram", "lstm")] == [2, 2]


def test_an_mqar_report_describes_its_per_step_targets(tmp_path, monkeypatch):
    """MQAR has a target at each query step (-100 elsewhere): not a token window, and enn
    explain, which attributes one decision per sequence, is not offered."""
    titles = []
    plot_attention = plots.plot_attention
    monkeypatch.setattr(plots, "plot_attention",
                        lambda a, out, title, *args: titles.append(title)
                        or plot_attention(a, out, title, *args))
    root = fake_comparison(tmp_path)
    s = json.loads((root / "summary.json").read_text())
    s["task"] = "mqar"
    (root / "summary.json").write_text(json.dumps(s))
    probe = root / "engram-seed1" / memory.MEMORY_DIR / memory.PROBE_FILE
    with np.load(probe) as f:
        x = f["x"]
    y = np.full((len(x), 8), -100)
    y[:, [5, 6, 7]] = 3
    np.savez(probe, x=x, y=y)
    text = write_report(root).read_text()
    assert titles == ["First validation (probe) input, 3 queries, a target at each query step"]
    assert "enn explain --checkpoint" not in text
    assert "`enn explain` attributes one decision per sequence, and mqar has a target" in text


def test_the_report_imports_without_lightning():
    """``enn report`` needs the analysis extra only (matplotlib, SciPy), not the train one."""
    train_extra = ("lightning", "pytorch_lightning", "torchmetrics", "tensorboard", "yaml",
                   "tqdm", "sklearn")
    code = textwrap.dedent(f"""
        import sys
        sys.modules.update(dict.fromkeys({train_extra!r}))
        import enn.analysis.report, enn.analysis.plots
        from enn.cli import main
        assert main(["report", "no-such-folder"]) == 2
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "enn report: error: no-such-folder is not a folder"


def test_a_published_folder_reports_from_its_records(tmp_path, capsys):
    """A published comparison keeps its runs as records under runs/ (no checkpoints, no
    recordings): enn report reads them and says what a record lacks."""
    published = tmp_path / "cmp"
    fake_comparison(tmp_path / "local", with_memory=False)
    (published / "runs").mkdir(parents=True)
    for run in sorted((tmp_path / "local").glob("*-seed*")):
        (run / "checkpoints").rmdir()  # what collect_results publishes: no checkpoints
        run.rename(published / "runs" / run.name)
    (tmp_path / "local" / "summary.json").rename(published / "summary.json")
    assert main(["report", str(published)]) == 0
    text = (published / "report.md").read_text()
    assert "engram-seed1 is a published record: its memory recordings stayed" in text
    assert "No attribution published with the record engram-seed1" in text
    assert "enn explain --checkpoint" not in text
    assert (published / "figures" / "learning_curves.png").is_file()
