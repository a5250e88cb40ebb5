"""End-to-end ``enn train / evaluate / compare``: tiny settings, resume after kill, DDP, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enn.cli import main
from enn.data import resolve_data_dir

TINY = ["--epochs", "2", "train.batch_size=64", "train.limit_train_batches=4"]
REAL_DATA = resolve_data_dir(None)


def has(*files: str) -> bool:
    return all((REAL_DATA / f).exists() for f in files)


def enn(*args: str) -> int:
    return main([str(a) for a in args])


def read_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_train_writes_a_complete_run_folder_and_evaluate_reproduces_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        enn(
            "train",
            "--task",
            "digits",
            "--model",
            "engram",
            "--out",
            run,
            *TINY,
            "model.hidden_sizes=16",
            "model.memory_size=8",
        )
        == 0
    )
    m = read_metrics(run)
    for key in (
        "task",
        "model",
        "preset",
        "seed",
        "params",
        "best_epoch",
        "epochs_run",
        "train_seconds",
        "seconds_per_step",
        "val_loss",
        "test_loss",
        "test_acc",
    ):
        assert key in m, key
    assert m["epochs_run"] == 2 and 0 <= m["test_acc"] <= 1 and m["params"] > 0
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "val_loss" in rows[0]
    assert (run / "checkpoints" / "best.ckpt").exists() and (
        run / "checkpoints" / "last.ckpt"
    ).exists()
    assert any((run / "tb").rglob("events.out.tfevents*"))
    assert "hidden_sizes:\n  - 16" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert enn("evaluate", "--checkpoint", run / "checkpoints" / "best.ckpt") == 0
    ev = json.loads((run / "eval.json").read_text())
    assert ev["test_acc"] == pytest.approx(m["test_acc"])
    assert ev["test_loss"] == pytest.approx(m["test_loss"], rel=1e-5)


def test_same_seed_same_result(tmp_path):
    args = ["train", "--task", "digits", "--model", "gru", *TINY, "model.hidden_sizes=16,8"]
    enn(*args, "--out", tmp_path / "a")
    enn(*args, "--out", tmp_path / "b")
    assert read_metrics(tmp_path / "a")["test_loss"] == read_metrics(tmp_path / "b")["test_loss"]


def test_assoc_task_end_to_end(tmp_path):
    run = tmp_path / "assoc"
    assert (
        enn(
            "train",
            "--task",
            "assoc",
            "--model",
            "engram",
            "--out",
            run,
            *TINY,
            "model.hidden_sizes=20",
            "data.n_train=512",
            "data.n_val=128",
            "data.n_test=128",
        )
        == 0
    )
    assert read_metrics(run)["task"] == "assoc"


@pytest.mark.skipif(not has("mnist/t10k-images-idx3-ubyte.gz"), reason="real MNIST not in data dir")
def test_mnist10k_end_to_end(tmp_path):
    run = tmp_path / "mnist"
    assert (
        enn(
            "train",
            "--task",
            "mnist10k",
            "--model",
            "lstm",
            "--out",
            run,
            "--epochs",
            "1",
            "train.limit_train_batches=3",
            "train.limit_eval_batches=2",
        )
        == 0
    )
    assert read_metrics(run)["task"] == "mnist10k"


@pytest.mark.skipif(
    not has("wikitext-103/wiki.valid.tokens"), reason="real WikiText not in data dir"
)
def test_wikitext_small_language_model_end_to_end(tmp_path):
    run = tmp_path / "engram-seed42"  # the layout of a comparison folder, for the report
    assert (
        enn(
            "train",
            "--task",
            "wikitext103-small",
            "--model",
            "engram",
            "--out",
            run,
            "--epochs",
            "1",
            "train.limit_train_batches=3",
            "train.limit_eval_batches=2",
            "model.hidden_sizes=32",
            "model.embed_dim=32",
            "model.memory_size=8",
            "data.max_vocab=2000",
        )
        == 0
    )
    m = read_metrics(run)
    assert 1 < m["test_ppl"] < 2000 * 1.5 and "test_acc" not in m
    assert enn("report", tmp_path) == 0  # the report handles token-window probes
    assert (tmp_path / "figures" / "probe_attention.png").is_file()


def test_resume_after_kill_mid_epoch_ends_like_an_unbroken_run(tmp_path):
    # one thread in both processes: torch's LayerNorm backward sums in a thread-dependent order
    args = ["train", "--task", "digits", "--model", "engram", "--epochs", "6",
            "train.batch_size=32", "model.hidden_sizes=8", "model.memory_size=4",
            "train.threads=1"]
    enn(*args, "--out", tmp_path / "unbroken")
    epoch_seconds = read_metrics(tmp_path / "unbroken")["seconds_per_epoch"]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "enn.cli", *args, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(epoch_seconds / 2)  # half-way through the next epoch, however fast they run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"
    assert enn("train", *args, "--out", killed) == 2  # unfinished run: needs --resume
    assert enn(*args, "--out", killed, "--resume") == 0
    a, b = read_metrics(tmp_path / "unbroken"), read_metrics(killed)
    assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-7)
    assert a["best_epoch"] == b["best_epoch"] and a["epochs_run"] == b["epochs_run"]


def test_two_process_ddp_on_cpu(tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "enn.cli",
        "train",
        "--task",
        "digits",
        "--model",
        "lstm",
        "--out",
        str(run),
        "--epochs",
        "1",
        "model.hidden_sizes=16,8",
        "train.devices=2",
        "train.strategy=ddp",
        "train.accelerator=cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = read_metrics(run)
    assert m["epochs_run"] == 1 and 0 <= m["test_acc"] <= 1


def test_compare_summarises_and_resumes(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--task",
        "digits",
        "--models",
        "engram,rnn",
        "--seeds",
        "0,1",
        "--out",
        out,
        "--epochs",
        "1",
        "train.limit_train_batches=2",
        "model.hidden_sizes=8",
    ]
    assert enn(*args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"engram", "rnn"}
    assert summary["models"]["rnn"]["test_acc"]["n"] == 2
    assert "statistic" in summary["tests"]["anova"] or "skipped" in summary["tests"]["anova"]
    assert (out / "summary.csv").read_text().startswith("model,n,")
    capsys.readouterr()
    assert enn(*args) == 0
    assert capsys.readouterr().err.count("done, skipped") == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "imagenet", "--model", "engram"], "unknown task 'imagenet'"),
        (["train", "--task", "digits", "--model", "transformer"], "unknown model 'transformer'"),
        (["train", "--task", "digits", "--model", "lstm", "train.epoch=1"], "unknown config field"),
        (["evaluate", "--checkpoint", "nowhere.ckpt"], "no checkpoint at nowhere.ckpt"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert enn(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_data_names_the_fetch_command(tmp_path, capsys):
    assert (
        enn(
            "train",
            "--task",
            "mnist10k",
            "--model",
            "rnn",
            "--data-dir",
            tmp_path / "empty",
            "--out",
            tmp_path / "r",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "enn data download mnist" in err and "t10k-images-idx3-ubyte.gz" in err


def test_refuses_to_overwrite_and_checks_checkpoint_task(tmp_path, capsys):
    run = tmp_path / "run"
    base = [
        "train",
        "--task",
        "digits",
        "--model",
        "rnn",
        "--out",
        run,
        "--epochs",
        "1",
        "model.hidden_sizes=8",
    ]
    assert enn(*base) == 0
    assert enn(*base) == 2
    assert "finished run; use --force" in capsys.readouterr().err
    assert enn(*base, "--force") == 0
    assert (
        enn("evaluate", "--checkpoint", run / "checkpoints" / "best.ckpt", "--task", "assoc") == 2
    )
    assert "trained on task 'digits', not 'assoc'" in capsys.readouterr().err


def test_match_params_sizes_the_baseline_to_the_enn(tmp_path):
    common = ["--task", "digits", "--epochs", "1", "train.limit_train_batches=1",
              "model.memory_size=8"]
    assert enn("train", "--model", "engram", "--out", tmp_path / "e", *common) == 0
    assert enn("train", "--model", "rnn", "--match-params", "--out", tmp_path / "r", *common) == 0
    enn_params = read_metrics(tmp_path / "e")["params"]
    assert abs(read_metrics(tmp_path / "r")["params"] - enn_params) / enn_params < 0.02
