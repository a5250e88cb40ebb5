"""End-to-end ``enn train / evaluate / compare``: tiny settings, resume after kill, DDP, errors."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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


def test_the_seed_draws_the_initial_weights(tmp_path, monkeypatch):
    from enn.train import run as run_module

    initial = {}

    def recording_build(model_cfg, shape):
        model = build(model_cfg, shape)
        initial[len(initial)] = torch.cat([p.detach().flatten() for p in model.parameters()])
        return model

    build = run_module.build_model
    monkeypatch.setattr(run_module, "build_model", recording_build)
    args = ["train", "--task", "digits", "--model", "gru", "--epochs", "1",
            "train.limit_train_batches=1", "model.hidden_sizes=8,8"]
    for seed in (0, 1):  # the same seed, the same run: test_same_seed_same_result
        assert enn(*args, "--seed", seed, "--out", tmp_path / f"seed{seed}") == 0
    assert not torch.equal(initial[0], initial[1])


@pytest.mark.parametrize("precision", ["64-true", "bf16-true", "bf16-mixed"])
def test_the_engram_trains_and_is_probed_in_each_precision(tmp_path, precision):
    run = tmp_path / precision
    assert enn("train", "--task", "digits", "--model", "engram", "--out", run, *TINY,
               "model.hidden_sizes=8", "model.memory_size=4", f"train.precision={precision}") == 0
    m = read_metrics(run)
    assert all(math.isfinite(m[k]) for k in ("val_loss", "test_loss", "test_acc"))
    assert sorted(p.name for p in (run / "memory").glob("epoch_*.npz")) == [
        "epoch_000.npz", "epoch_001.npz", "epoch_002.npz"]


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
            "train.limit_test_batches=2",
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


# A run whose validation loss gets worse two epochs in a row: the learning-rate schedule
# (lr_patience 2, Keras' count) halves the rate after the second, and early stopping
# (patience 4) lets at least one epoch run at the halved rate. After the first bad epoch both
# counters stand at 1, so a resume from there must restore them as they are after that
# epoch. One thread: torch's LayerNorm backward sums in a thread-dependent order.
PLATEAU = ["--task", "digits", "--model", "engram", "--epochs", "13", "model.hidden_sizes=16",
           "model.memory_size=8", "train.batch_size=16", "train.lr=0.01", "train.lr_patience=2",
           "train.patience=4", "train.threads=1"]
TIMING = ("train_seconds", "seconds_per_step", "seconds_per_epoch")


def untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def cli_process(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "enn.cli", *map(str, args)], env=env, **kwargs)


def wait_for_epoch(run: Path, epoch: int, proc: subprocess.Popen) -> None:
    """Until last.ckpt holds ``epoch`` (1-based) or a later one; the process is left stopped
    (SIGSTOP), so that it cannot train on while the checkpoint is read: send it SIGCONT."""
    last, seen, deadline = run / "checkpoints" / "last.ckpt", None, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        stamp = last.stat().st_mtime_ns if last.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            proc.send_signal(signal.SIGSTOP)
            if torch.load(last, weights_only=False)["epoch"] + 1 >= epoch:
                return
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError(f"the run never saved epoch {epoch}")


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory) -> Path:
    """The PLATEAU run trained without a break (read only)."""
    run = tmp_path_factory.mktemp("plateau") / "unbroken"
    assert enn("train", *PLATEAU, "--out", run) == 0
    return run


@pytest.mark.slow
@pytest.mark.xdist_group("plateau_run")  # one worker, one fixture run
def test_resume_after_kill_at_a_plateau_ends_like_the_unbroken_run(plateau_run, tmp_path):
    lrs = [row.split(",")[5] for row in (plateau_run / "metrics.csv").read_text()
           .splitlines()[1:]]
    halved = lrs.index("0.005")  # the first epoch (0-based) at the halved rate
    assert 3 <= halved < len(lrs) - 1 and lrs[:halved] == ["0.01"] * halved
    # killed after the epoch before the halving: one bad epoch counted, the next one halves
    kill_at = halved - 1
    killed = tmp_path / "killed"
    proc = cli_process("train", *PLATEAU, "--out", killed, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    wait_for_epoch(killed, kill_at, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] + 1 == kill_at, "the kill came too late"
    assert ckpt["lr_schedulers"][0]["num_bad_epochs"] == 1  # after the first bad epoch
    (stopping,) = [v for k, v in ckpt["callbacks"].items() if "EarlyStopping" in k]
    assert stopping["wait_count"] == 1
    assert not (killed / "metrics.json").exists()
    assert enn("train", *PLATEAU, "--out", killed) == 2  # unfinished run: needs --resume
    # resumed in another folder (a run moved to another disk): its best epoch stays the best
    killed = killed.rename(tmp_path / "moved")
    # the saved run's configuration: --epochs, train.* and the seed are not given again
    resumed = subprocess.run(
        [sys.executable, "-m", "enn.cli", "train", "--task", "digits", "--model", "engram",
         "--out", str(killed), "--resume"],
        capture_output=True, text=True, timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "exists and is not empty" not in resumed.stderr
    assert "dirpath has changed" not in resumed.stderr
    assert untimed(read_metrics(killed)) == untimed(read_metrics(plateau_run))
    strip = [row.rsplit(",", 2)[0] for row in (killed / "metrics.csv").read_text().splitlines()]
    assert strip == [row.rsplit(",", 2)[0]
                     for row in (plateau_run / "metrics.csv").read_text().splitlines()]


@pytest.mark.slow
def test_a_moved_run_resumes_with_its_best_epoch(tmp_path):
    # validation loss best at epoch 6, worse at 7 and 8: the test runs on epoch 6's weights
    args = ["--task", "digits", "--model", "gru", "model.hidden_sizes=16,16", "train.lr=0.1",
            "train.patience=20", "train.threads=1"]
    assert main(["train", *args, "--epochs", "8", "--out", str(tmp_path / "unbroken")]) == 0
    unbroken = read_metrics(tmp_path / "unbroken")
    assert unbroken["best_epoch"] == 6 and unbroken["epochs_run"] == 8
    assert main(["train", *args, "--epochs", "6", "--out", str(tmp_path / "first")]) == 0
    moved = (tmp_path / "first").rename(tmp_path / "moved")
    assert main(["train", *args, "--epochs", "8", "--out", str(moved), "--resume"]) == 0
    assert untimed(read_metrics(moved)) == untimed(unbroken)


def snapshot(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished two-epoch ENN run (read only)."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", "--task", "digits", "--model", "engram", "--out", str(run),
                 "--seed", "3", *TINY, "model.hidden_sizes=8", "model.memory_size=4"]) == 0
    return run


@pytest.fixture
def unfinished_run(tiny_run, tmp_path) -> Path:
    run = tmp_path / "unfinished"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").unlink()  # as if killed after its last epoch
    return run


@pytest.mark.parametrize(
    "option, message",
    [
        (["--seed", "4"], "with seed=3, not 4"),
        (["train.lr=0.5"], "with train.lr=0.001, not 0.5"),
        (["--preset", "paper"], "with preset=default, not paper"),
        (["train.epochs=1"], "with train.epochs=2, not 1"),
        (["--epochs", "30", "train.lr=0.5"], "with train.epochs=2, not 30"),  # not the cap alone
        (["model.hidden_sizes=16"], "with model.hidden_sizes=8, not 16"),
        (["data.k=3"], "with data.k=null, not 3"),
    ],
)
def test_resume_refuses_options_that_differ_from_the_saved_run(
    unfinished_run, capsys, option, message
):
    before = snapshot(unfinished_run)
    args = ["train", "--task", "digits", "--model", "engram", "--out", unfinished_run]
    assert enn(*args, "--resume", *option) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "--force to start over" in err and len(err.splitlines()) == 1
    assert snapshot(unfinished_run) == before


@pytest.mark.slow
@pytest.mark.xdist_group("plateau_run")  # one worker, one fixture run
def test_a_run_at_its_cap_goes_on_to_a_larger_one_like_the_unbroken_run(plateau_run, tmp_path,
                                                                        capsys):
    short = [*PLATEAU[:4], "--epochs", "3", *PLATEAU[6:]]
    run = tmp_path / "extended"
    assert enn("train", *short, "--out", run) == 0
    assert read_metrics(run)["epochs_run"] == 3
    assert enn("train", "--task", "digits", "--model", "engram", "--out", run, "--resume",
               "--epochs", "13") == 0
    assert untimed(read_metrics(run)) == untimed(read_metrics(plateau_run))
    assert (run / "config.yaml").read_text() == (plateau_run / "config.yaml").read_text()
    strip = [row.rsplit(",", 2)[0] for row in (run / "metrics.csv").read_text().splitlines()]
    assert strip == [row.rsplit(",", 2)[0]
                     for row in (plateau_run / "metrics.csv").read_text().splitlines()]
    capsys.readouterr()
    before = snapshot(run)
    assert enn("train", "--task", "digits", "--model", "engram", "--out", run, "--resume") == 2
    assert "--resume continues one only to a larger train.epochs" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_run_that_stopped_early_is_not_continued(tiny_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    run = out / "engram-seed3"
    shutil.copytree(tiny_run, run)
    metrics = {**read_metrics(run), "epochs_run": 1}  # as if early stopping ended it
    (run / "metrics.json").write_text(json.dumps(metrics))
    before = snapshot(run)
    assert enn("train", "--task", "digits", "--model", "engram", "--out", run, "--resume",
               "--epochs", "5") == 2
    err = capsys.readouterr().err
    assert "stopped early at epoch 1 of 2; a larger train.epochs would end it the same" in err
    assert enn("compare", "--task", "digits", "--models", "engram", "--seeds", "3", "--out",
               out, "--epochs", "5", *TINY[2:], "model.hidden_sizes=8",
               "model.memory_size=4") == 0
    assert "engram-seed3: done, skipped (stopped early at epoch 1)" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_finished_run_without_its_checkpoints_is_not_continued(tiny_run, tmp_path, capsys):
    run = tmp_path / "record"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "checkpoints")  # as a published record keeps it
    before = snapshot(run)
    assert enn("train", "--task", "digits", "--model", "engram", "--out", run, "--resume",
               "--epochs", "5") == 2
    err = capsys.readouterr().err.strip()
    assert "without checkpoints/last.ckpt to go on from" in err and len(err.splitlines()) == 1
    assert snapshot(run) == before


def test_ctrl_c_in_the_test_names_the_last_epoch_not_the_restored_best(tmp_path):
    from types import SimpleNamespace

    from enn.train.run import RunInterrupted, _StopOnCtrlC

    log = SimpleNamespace(rows=[{"epoch": 1}, {"epoch": 2}])  # the best epoch's log, reloaded
    stopper = _StopOnCtrlC(tmp_path, log)
    stopper.epochs_trained = 5  # what the run trained before its test
    with pytest.raises(RunInterrupted) as stop:
        stopper.stop()
    assert stop.value.epochs_done == 5


class _Unpickled:
    """An object only a full unpickle would build (and could run code to build)."""


def test_checkpoints_are_loaded_weights_only(tmp_path, capsys):
    path = tmp_path / "foreign.ckpt"
    torch.save({"enn_config": {}, "payload": _Unpickled()}, path)
    assert enn("evaluate", "--checkpoint", path) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a readable checkpoint (UnpicklingError)" in err
    torch.save({"enn_config": {"task": "digits"}, "state_dict": {}}, path)
    assert enn("evaluate", "--checkpoint", path) == 2
    err = capsys.readouterr().err.strip()
    assert "its weights do not fit the model" in err and len(err.splitlines()) == 1
    torch.save({"enn_config": {"model": 3}, "state_dict": {}}, path)
    assert enn("evaluate", "--checkpoint", path) == 2
    err = capsys.readouterr().err.strip()
    assert "holds an enn_config this version cannot read" in err and len(err.splitlines()) == 1


def test_compare_leaves_the_summary_to_the_first_process(tmp_path, monkeypatch):
    import enn.train.compare

    monkeypatch.setattr(enn.train.compare, "train", lambda *a, **k: {})  # another DDP rank
    summary = enn.train.compare.compare("digits", ["rnn"], [0, 1], tmp_path / "cmp",
                                        overrides={"model.hidden_sizes": [8]})
    assert summary == {} and not (tmp_path / "cmp" / "summary.json").exists()


def test_resume_with_another_model_or_task_changes_nothing(unfinished_run, capsys):
    before = snapshot(unfinished_run)
    assert enn("train", "--task", "digits", "--model", "lstm", "--out", unfinished_run,
               "--resume") == 2
    assert "with model.backbone=engram, not lstm" in capsys.readouterr().err
    assert enn("train", "--task", "assoc", "--model", "engram", "--out", unfinished_run,
               "--resume") == 2
    assert "with task=digits, not assoc" in capsys.readouterr().err
    assert snapshot(unfinished_run) == before


def test_epochs_option_against_train_epochs(tmp_path, monkeypatch, capsys):
    """--epochs or train.epochs= (both is an error); either wins over --config's."""
    from enn.train import run as run_module

    seen = []
    monkeypatch.setattr(run_module, "_train", lambda cfg, *a: seen.append(cfg) or {})
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: 7\n")
    base = ["train", "--task", "digits", "--model", "rnn", "--out", tmp_path / "r"]
    assert enn(*base, "--config", config) == 0
    assert enn(*base, "--config", config, "--epochs", "3") == 0
    assert enn(*base, "--config", config, "train.epochs=4") == 0
    assert [c.train.epochs for c in seen] == [7, 3, 4]
    assert enn(*base, "--epochs", "3", "train.epochs=3") == 2
    assert "given twice" in capsys.readouterr().err


def test_evaluate_and_explain_refuse_bad_places_and_k(tiny_run, tmp_path, capsys):
    best = tiny_run / "checkpoints" / "best.ckpt"
    (tmp_path / "folder").mkdir()
    assert enn("evaluate", "--checkpoint", best, "--out", tmp_path / "folder") == 2
    assert "metrics file " in (err := capsys.readouterr().err) and "is a folder" in err
    assert list((tmp_path).iterdir()) == [tmp_path / "folder"]  # no stray .folder.tmp
    assert list((tmp_path / "folder").iterdir()) == []
    assert enn("explain", "--checkpoint", best, "--index", "0", "--k", "100",
               "--out", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "--k expects 1 to 3 (the model has 4 memory slots" in err and "got 100" in err
    assert not (tmp_path / "x").exists()


def test_explain_refuses_a_two_layer_enn_in_one_line(tmp_path, capsys):
    run = tmp_path / "two"
    assert main(["train", "--task", "digits", "--model", "engram", "--out", str(run), "--epochs",
                 "1", "train.limit_train_batches=1", "model.hidden_sizes=8,8",
                 "model.memory_size=4"]) == 0
    capsys.readouterr()
    assert enn("explain", "--checkpoint", run / "checkpoints" / "best.ckpt", "--index",
               "0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "this one has 2 layers" in err


def test_explain_refuses_a_baseline_before_reading_any_data(tmp_path, capsys):
    run = tmp_path / "rnn"
    assert main(["train", "--task", "digits", "--model", "rnn", "--out", str(run), "--epochs",
                 "1", "train.limit_train_batches=1", "model.hidden_sizes=8,8"]) == 0
    checkpoint = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["enn_config"]["task"] = "mnist"  # as if trained on MNIST, whose files are not here
    torch.save(ckpt, checkpoint)
    capsys.readouterr()
    assert enn("explain", "--checkpoint", checkpoint, "--index", "0",
               "--data-dir", tmp_path / "no-data") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a rnn model; explain needs an Engram" in err


def test_report_counts_runs_copied_in_after_the_summary(tiny_run, tmp_path):
    from enn.analysis.summary import summarize
    from enn.train.compare import write_summary

    out = tmp_path / "cmp"
    shutil.copytree(tiny_run, out / "engram-seed3")
    write_summary(out, summarize(out))  # the summary of one run, as compare leaves it
    shutil.copytree(tiny_run, out / "engram-seed4")
    metrics = {**read_metrics(out / "engram-seed4"), "seed": 4}
    (out / "engram-seed4" / "metrics.json").write_text(json.dumps(metrics))
    assert enn("report", out) == 0
    report = (out / "report.md").read_text()
    assert "2 finished runs of 1 models" in report and "| engram | 3, 4 |" in report


def test_report_names_a_damaged_run_file_in_one_line(tiny_run, tmp_path, capsys):
    run = tmp_path / "cmp" / "engram-seed3"
    shutil.copytree(tiny_run, run)
    (run / "metrics.json").write_text('{"task": "dig')  # as a hand edit can leave it
    assert enn("report", tmp_path / "cmp") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "engram-seed3/metrics.json is not valid JSON" in err


def test_explain_refuses_a_per_step_task_in_one_line(tmp_path, capsys):
    run = tmp_path / "mqar"
    assert main(["train", "--task", "mqar", "--model", "engram", "--out", str(run), *TINY,
                 "model.hidden_sizes=8", "model.memory_size=4", "data.n_train=256",
                 "data.n_val=64", "data.n_test=64", "data.pairs=2", "data.length=8"]) == 0
    capsys.readouterr()
    assert enn("explain", "--checkpoint", run / "checkpoints" / "best.ckpt", "--index",
               "0") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task 'mqar' has a target at each query" in err


@pytest.mark.slow
def test_ctrl_c_stops_says_how_to_resume_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = cli_process("train", *PLATEAU, "--out", run, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    wait_for_epoch(run, 2, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] + 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("enn train: interrupted; ") and f"holds epoch {epoch};" in line
    assert line.endswith(f"enn train --task digits --model engram --out {run} --resume")
    assert "Traceback" not in err and not (run / "metrics.json").exists()


@pytest.mark.slow
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
        "train.limit_train_batches=4",
        "train.threads=1",
        "train.devices=2",
        "train.strategy=ddp",
        "train.accelerator=cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = read_metrics(run)
    assert m["epochs_run"] == 1 and 0 <= m["test_acc"] <= 1


@pytest.mark.slow
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
    before = snapshot(out)
    assert enn(*args[:-1], "model.hidden_sizes=16") == 2
    err = capsys.readouterr().err
    assert "engram-seed0 holds a run made with model.hidden_sizes=8, not 16" in err
    assert "delete that run folder to train it anew" in err and "--force" not in err
    assert enn(*args[:2], "assoc", *args[3:]) == 2
    assert "holds a run made with task=digits, not assoc" in capsys.readouterr().err
    assert snapshot(out) == before
    # a baseline's run stands whatever the Engram fields: they do not touch its model
    assert enn(*args[:4], "rnn", *args[5:], "model.hidden_update=residual") == 0
    assert capsys.readouterr().err.count("done, skipped") == 2
    assert enn(*args[:4], "rnn", *args[5:-1], "model.hidden_sizes=16") == 2
    assert "rnn-seed0 holds a run made with model.hidden_sizes=8, not 16" in capsys.readouterr().err
    # another seed of a model already there, with another setting: the summary would pool it
    before = snapshot(out)
    assert enn(*args[:4], "rnn", "--seeds", "2", *args[7:], "train.lr=0.01") == 2
    err = capsys.readouterr().err
    assert "rnn-seed0 holds a run of rnn made with train.lr=0.001, not 0.01" in err
    assert snapshot(out) == before and not (out / "rnn-seed2").exists()
    shutil.rmtree(out / "rnn-seed1" / "checkpoints")  # a published record: metrics only
    assert enn(*args[:-4], "--epochs", "2", *args[-2:]) == 0  # runs at their cap go on
    err = capsys.readouterr().err
    assert err.count("going on to 2 epochs") == 3
    assert "rnn-seed1: done, skipped (a published record: no checkpoint to go on from)" in err
    assert read_metrics(out / "rnn-seed0")["epochs_run"] == 2
    assert read_metrics(out / "rnn-seed1")["epochs_run"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "imagenet", "--model", "engram"], "unknown task 'imagenet'"),
        (["train", "--task", "digits", "--model", "transformer"], "unknown model 'transformer'"),
        (["train", "--task", "digits", "--model", "lstm", "train.epoch=1"], "unknown config field"),
        (["evaluate", "--checkpoint", "nowhere.ckpt"], "no checkpoint at nowhere.ckpt"),
        (["train", "--task", "digits", "--model", "rnn", "data.val_size=1000",
          "data.test_size=900"], "data: options val_size + test_size = 1900 leave no training"),
        (["train", "--task", "digits", "--model", "lstm", "--match-params",
          "model.hidden_sizes=32,16"], "expects one width for all Engram layers"),
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


def test_a_data_file_the_system_refuses_is_one_line(tmp_path, capsys, monkeypatch):
    from data_fixtures import write_mnist

    from enn.data import sources

    write_mnist(tmp_path / "data", n_train=3, n_test=3)

    def refuse(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sources, "md5_file", refuse)
    argv = ["train", "--task", "mnist10k", "--model", "rnn", "--data-dir", tmp_path / "data",
            "--out", tmp_path / "r", "--epochs", "1"]
    assert enn(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("enn train: error: Permission denied: ") and "\n" not in err, err
    assert "t10k-images-idx3-ubyte.gz" in err


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


def test_a_limit_on_validation_leaves_the_test_whole(tmp_path):
    """limit_eval_batches shortens the validation passes only: the test score is the whole
    test set's, as enn evaluate computes it."""
    run = tmp_path / "run"
    assert enn("train", "--task", "digits", "--model", "gru", "--epochs", "1", "--out", run,
               "model.hidden_sizes=8", "train.limit_eval_batches=0.5") == 0
    m = read_metrics(run)
    assert enn("evaluate", "--checkpoint", run / "checkpoints" / "best.ckpt") == 0
    evaluated = json.loads((run / "eval.json").read_text())
    assert evaluated["test_acc"] == m["test_acc"] and evaluated["test_loss"] == m["test_loss"]
    assert abs(m["test_acc"] * 300 - round(m["test_acc"] * 300)) < 1e-4  # k of 300 images
