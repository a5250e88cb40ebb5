"""Bad input to the command line: one line ``enn <command>: error: ...``, exit code 2, nothing
written; and a seeded fuzz of the parser and the config checks that never sees a traceback."""

import random
from pathlib import Path

import pytest
import torch

from enn.cli import main

TRAIN = ["train", "--task", "digits", "--model", "engram"]
COMPARE = ["compare", "--task", "digits", "--models", "engram"]
TINY = ["--epochs", "1", "model.hidden_sizes=8", "model.memory_size=4"]


def run_cli(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code: int, err: str, command: str, message: str = "") -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"enn {command}: error: "), err
    assert message in err, err


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every case here must fail before training starts; one that trains fails the test."""
    import enn.train.run

    def refuse(*args, **kwargs):
        raise AssertionError("training started: the input was not rejected first")

    monkeypatch.setattr(enn.train.run, "_train", refuse)


def bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "folder").mkdir(exist_ok=True)
    (tmp / "malformed.yaml").write_text("train: {epochs: [1\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "a-file").write_text("x")
    return {
        "folder": tmp / "folder",
        "malformed": tmp / "malformed.yaml",
        "list": tmp / "list.yaml",
        "file": tmp / "a-file",
    }


# Each item of the list of bad values found by trying the command line as a new user.
CASES = [
    (["--epochs", "0"], "'train.epochs' expects an integer >= 1, got 0"),
    (["--epochs", "-1"], "'train.epochs' expects an integer >= 1, got -1"),
    (["train.limit_train_batches=0"], "'train.limit_train_batches' expects a fraction"),
    (["model.hidden_sizes=0"], "'model.hidden_sizes' expects an integer >= 1, got [0]"),
    (["model.hidden_sizes=-5"], "'model.hidden_sizes' expects an integer >= 1, got [-5]"),
    (["model.hidden_sizes=8,16"], "one width for all Engram layers"),
    (["model.memory_size=0"], "'model.memory_size' expects an integer >= 1, got 0"),
    (["model.trace=bogus"], "'model.trace' expects one of per_sample, shared, got 'bogus'"),
    (["model.pooling=bogus"], "'model.pooling' expects one of last, attention, each, got 'bogus'"),
    (["model.dropout=2"], "'model.dropout' expects a probability in [0, 1), got 2.0"),
    (["model.top_k=100"], "'model.top_k' expects an integer from 1 to model.memory_size=64"),
    (["train.lr=-1"], "'train.lr' expects a number > 0, got -1.0"),
    (["train.lr=.nan"], "'train.lr' expects a number > 0, got nan"),
    (["--seed", "-1"], "'seed' expects an integer from 0 to 4294967295, got -1"),
    (["train.threads=-3"], "'train.threads' expects an integer >= 0, got -3"),
    (["train.precision=bogus"], "'train.precision' expects one of 64-true"),
    (["train.precision=16-mixed", "train.accelerator=cpu"],
     "'train.precision' expects bf16-mixed on the CPU (16-mixed needs a GPU), got '16-mixed'"),
    (["train.precision=16-true"], "train.adam_eps=1e-08 is 0 in float16 "
     "(train.precision=16-true): expected train.adam_eps >= 6.1e-05, or another precision"),
    (["train.clip=layer"], "'train.clip' expects one of global, per_variable, got 'layer'"),
    (["train.optimizer=rmsprop"], "'train.optimizer' expects one of adam, sgd, got 'rmsprop'"),
    (["train.adam_eps=0"], "'train.adam_eps' expects a number > 0, got 0.0"),
    (["train.schedule=cosine"], "'train.schedule' expects one of plateau, step, got 'cosine'"),
    (["train.decay_after=-1"], "'train.decay_after' expects an integer >= 0, got -1"),
    (["train.lm_loss=sum"], "'train.lm_loss' expects one of mean, sum_steps, got 'sum'"),
    (["model.head_init=he"], "'model.head_init' expects one of torch, glorot, got 'he'"),
    (["model.init_range=-0.1"], "'model.init_range' expects a number >= 0, got -0.1"),
    (["--epochs", "2", "train.epochs=1"], "given twice (--epochs 2 and train.epochs=1)"),
    (["--epochs", "1", "train.epochs=1.5"], "given twice"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5'"),
    (["--config", "{tmp}/missing.yaml"], "--config: no such file"),
    (["--config", "{folder}"], "--config: expected a YAML file, got the folder"),
    (["--config", "{malformed}"], "is not valid YAML (line 2)"),
    (["--config", "{list}"], "expected a mapping of config fields, got list"),
    (["--out", "{file}"], "is a file, expected a folder"),
    (["--out", "{file}/run"], "is a file, not a folder"),
    (["--resume", "--force"], "give one of them"),
    (["--resume"], "nothing to resume in"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("extra, message", CASES)
def test_bad_train_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    names = {"tmp": tmp_path, **bad_files(tmp_path)}
    extra = [a.format(**names) for a in extra]
    out = [] if "--out" in extra else ["--out", tmp_path / "run"]
    before = sorted(tmp_path.rglob("*"))
    code, err = run_cli([*TRAIN, *out, *extra], capsys)
    assert_one_line_error(code, err, "train", message)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created (no run folder, no probe)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_accelerator_is_named(tmp_path, capsys):
    code, err = run_cli([*TRAIN, "--out", tmp_path / "r", "train.accelerator=gpu"], capsys)
    assert_one_line_error(code, err, "train", "no CUDA GPU is visible), got 'gpu'")
    assert not (tmp_path / "r").exists()


def test_unwritable_output_place(tmp_path, capsys):
    place = Path("/proc/enn-run")  # no file can be created there, not even by root
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    code, err = run_cli([*TRAIN, "--out", place], capsys)
    assert_one_line_error(code, err, "train", "cannot write run folder /proc/enn-run")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "'train.epochs' expects an integer >= 1, got 0"),
        (["--models", ""], "--models expects a comma-separated list like a,b, got ''"),
        (["--seeds", ""], "--seeds expects a comma-separated list like a,b, got ''"),
        (["--seeds", "0,,1"], "--seeds expects a comma-separated list"),
        (["--seeds", "0,x"], "--seeds expects integers like 0,1,2, got '0,x'"),
        (["--seeds", "-3"], "'seed' expects an integer from 0"),
    ],
)
def test_bad_compare_input(tmp_path, capsys, args, message):
    code, err = run_cli([*COMPARE, "--out", tmp_path / "cmp", *args], capsys)
    assert_one_line_error(code, err, "compare", message)
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize(
    "args, warned",
    [
        (["train", "--model", "lstm", "model.trace=shared"], "enn train: warning: model.trace"),
        (["compare", "--models", "gru,rnn", "model.hebbian_lr=0.5"],
         "enn compare: warning: model.hebbian_lr has no effect on gru, rnn"),
        (["train", "--model", "engram", "model.trace=shared"], None),
        (["compare", "--models", "gru,engram", "model.hebbian_lr=0.5"], None),
        (["train", "--model", "lstm", "model.hidden_sizes=8"], None),
        (["compare", "--models", "lstm", "--match-params", "model.hidden_update=residual"],
         None),  # the ENN the baselines are sized to reads it
    ],
)
def test_engram_fields_warn_when_no_model_reads_them(tmp_path, capsys, args, warned):
    capsys.readouterr()
    with pytest.raises(AssertionError, match="training started"):
        main([*args, "--task", "digits", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == (0 if warned is None else 1), err
    if warned is not None:
        assert warnings[0].startswith(warned), err


def test_a_field_the_task_ignores_is_one_warning_line(tmp_path, capsys):
    capsys.readouterr()
    with pytest.raises(AssertionError, match="training started"):
        main([*TRAIN, "--out", str(tmp_path / "r"), "model.tie_weights=true"])
    err = capsys.readouterr().err.strip()
    assert err == ("enn train: warning: model.tie_weights=true has no effect on task digits, a "
                   "classification task: it ties a language model's decoder to its embedding")


def test_demo_in_an_unwritable_place(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    code, err = run_cli(["demo", "--quick", "--out", tmp_path / "a-file" / "demo"], capsys)
    assert_one_line_error(code, err, "demo", "a-file is a file, not a folder")


def test_bad_data_input(tmp_path, capsys):
    code, err = run_cli(["data", "download", "mnist", "--file", "bogus.gz"], capsys)
    assert_one_line_error(code, err, "data", "mnist has no file(s) ['bogus.gz']")
    code, err = run_cli(["data", "verify", "imagenet"], capsys)
    assert_one_line_error(code, err, "data", "unknown dataset 'imagenet'")


def test_a_file_the_system_refuses_is_one_line(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    code, err = run_cli(["data", "download", "mnist10k", "--data-dir", afile], capsys)
    assert_one_line_error(code, err, "data", f"Not a directory: {afile / 'mnist'}")
    from data_fixtures import write_mnist

    from enn.data import sources

    write_mnist(tmp_path / "data", n_train=3, n_test=3)

    def refuse(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sources, "md5_file", refuse)
    assert main(["data", "verify", "mnist10k", "--data-dir", str(tmp_path / "data")]) == 1
    out = capsys.readouterr().out
    assert out.count("unreadable") == 3 and "Permission denied" in out  # two files, the total


def test_verify_exits_1_when_any_file_is_missing(tmp_path, capsys):
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "missing, unreadable or damaged" in out.splitlines()[-1]
    assert main(["data", "verify", "digits", "--data-dir", str(tmp_path)]) == 0  # no files


@pytest.mark.parametrize("value", ["banana", "2", "true", " 1"])
def test_enn_native_must_be_0_or_1(monkeypatch, capsys, value):
    monkeypatch.setenv("ENN_NATIVE", value)
    code, err = run_cli(["data", "list"], capsys)
    assert_one_line_error(code, err, "data", f"ENN_NATIVE must be 0 or 1, got {value!r}")


@pytest.mark.parametrize("value", ["", "0", "1"])
def test_enn_native_accepted_values(monkeypatch, capsys, value):
    monkeypatch.setenv("ENN_NATIVE", value)
    assert run_cli(["data", "list"], capsys)[0] == 0


# --- fuzz ------------------------------------------------------------------------------------
WORDS = ["bogus", "", "[1", "{a: 1}", "1e999", "-0.5", ".nan", ".inf", "-.inf", "true", "null",
         "1,2,x", "💥", "0x10", "3.5", "--", "=", "a=b", "-7", "99999999999999999999"]


def _bad_values(rng: random.Random) -> dict[str, list[str]]:
    neg = str(-rng.randint(1, 10**6))
    huge = str(rng.randint(2**32, 2**40))
    frac = str(rng.uniform(1.0001, 50))
    junk = "".join(rng.choice("abcxyz_-/.") for _ in range(rng.randint(1, 8)))
    return {
        "train.epochs": ["0", neg, "1.5", junk, "true"],
        "train.batch_size": ["0", neg, junk],
        "train.lr": ["0", neg, ".nan", ".inf", junk],
        "train.clip_norm": [neg, "-.inf", junk],
        "train.clip": [junk, "global,per_variable"],
        "train.optimizer": [junk, "adamw"],
        "train.adam_eps": ["0", neg, ".nan"],
        "train.adam_fused": [junk, "2"],
        "train.schedule": [junk],
        "train.decay_after": [neg, "1.5"],
        "train.lm_loss": [junk],
        "model.head_init": [junk],
        "model.init_range": [neg, ".inf"],
        "train.patience": [neg, "2.5", junk],
        "train.lr_factor": ["0", "1", frac, neg, junk],
        "train.lr_patience": [neg, junk],
        "train.min_lr": [neg, ".nan"],
        "train.precision": [junk, "17", "bf32"],
        "train.accelerator": [junk, "tpu9"],
        "train.devices": ["0", neg, junk],
        "train.strategy": [junk, "fsdp9"],
        "train.num_workers": [neg, junk],
        "train.threads": [neg, "1.5"],
        "train.limit_train_batches": ["0", neg, "1.5", ".inf"],
        "train.limit_eval_batches": ["0", neg, "2.5"],
        "seed": [neg, huge, junk, "1.5"],
        "preset": [junk, "paper2"],
        "model.backbone": [junk, "transformer"],
        "model.hidden_sizes": ["0", neg, f"8,{neg}", junk, "[]", "8,16"],
        "model.layer_dropout": ["1", frac, neg],
        "model.dropout": ["1", frac, neg, ".nan"],
        "model.pooling": [junk],
        "model.embed_dim": ["0", neg],
        "model.tie_weights": [junk, "2"],
        "model.adaptive_cutoffs": ["0", f"10,{neg}", "20,10", junk],
        "model.memory_size": ["0", neg, junk],
        "model.trace": [junk, "shared,per_sample"],
        "model.init_state": [junk],
        "model.hebbian_lr": [neg, frac, ".nan"],
        "model.trace_scale": [neg, "-.inf"],
        "model.temperature": ["0", neg, ".nan"],
        "model.sparsity": [neg],
        "model.trace_clip": ["0", neg],
        "model.trace_noise": [neg, ".inf"],
        "model.top_k": ["0", "65", neg, junk],
        "model.sparsity_penalty": [neg],
        "model.slot_diversity": [neg, ".nan"],
        "model.layer_norm_eps": ["0", neg],
        f"train.{junk}": ["1"],
        f"model.{junk}": ["1"],
        junk: ["1"],
    }


def _bad_option(rng: random.Random, files: dict[str, Path]) -> list[str]:
    neg = str(-rng.randint(0, 10**6))
    word = rng.choice(WORDS)
    return rng.choice(
        [
            ["--epochs", neg],
            ["--epochs", word if word.lstrip("-").isdigit() is False else "x"],
            ["--seed", str(-rng.randint(1, 10**6))],
            ["--seed", str(rng.randint(2**32, 2**40))],
            ["--preset", rng.choice(["", "bogus", "PAPER"])],
            ["--task", rng.choice(["", "imagenet", "Digits"])],
            ["--config", str(rng.choice(list(files.values())))],
            ["--config", str(files["folder"] / "nope.yaml")],
            ["--out", str(files["file"])],
            ["--" + rng.choice(["bogus", "lr", "learning-rate"]), "1"],
            ["--epochs", "2", "train.epochs=" + rng.choice(["1", "2", "x"])],
            [rng.choice(["train.epochs", "=3", "model.", "train..lr=1"])],
        ]
    )


def test_fuzz_bad_values_and_options_never_give_a_traceback(tmp_path, capsys):
    rng = random.Random(20250721)
    files = bad_files(tmp_path)
    files.pop("malformed")  # kept for --config below, not as a valid-looking file
    files["malformed"] = tmp_path / "malformed.yaml"
    out = tmp_path / "out"
    seen: set[str] = set()
    for case in range(300):
        bad = _bad_values(rng)
        if rng.random() < 0.7:
            key = rng.choice(sorted(bad))
            extra = [f"{key}={rng.choice(bad[key])}"]
        else:
            extra = _bad_option(rng, files)
        # valid settings first: a later value of the same key wins
        noise = rng.sample(["train.batch_size=16", "model.memory_size=8", "train.threads=1"], k=2)
        args = [*noise[: rng.randint(0, 2)], *extra]
        command = COMPARE if rng.random() < 0.2 else TRAIN
        argv = [*command, "--out", out, *args] if "--out" not in args else [*command, *args]
        code, err = run_cli(argv, capsys)
        name = command[0]
        assert code == 2, (case, argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (case, argv, err)
        assert err.startswith(f"enn {name}: error: "), (case, argv, err)
        assert not out.exists(), (case, argv)
        seen.add(err.split(": error: ")[1].split(" ")[0])
    assert len(seen) > 5  # the cases reach many different checks
