"""Registry, data directory, digits, verify() and the ``enn data`` command."""

import argparse

import numpy as np
import pytest
import torch
from data_fixtures import with_md5s_of, write_mnist, write_wikitext

from enn.cli.data import register
from enn.data import (
    TASKS,
    DataIntegrityError,
    download,
    get_datamodule,
    resolve_data_dir,
    sources,
    task_options,
    verify,
)


def test_tasks_and_kinds():
    assert set(TASKS) == {
        "mnist",
        "mnist-pixel",
        "mnist10k",
        "cifar10",
        "wikitext103",
        "wikitext2",
        "wikitext103-small",
        "ptb",
        "digits",
        "assoc",
        "mqar",
    }
    lm = {name for name, info in TASKS.items() if info.kind == "language_model"}
    assert lm == {"wikitext103", "wikitext2", "wikitext103-small", "ptb"}
    assert all(info.name == name and info.description for name, info in TASKS.items())
    for name in TASKS:
        dm = get_datamodule(name)
        assert dm.kind == TASKS[name].kind
        assert ("bptt" in task_options(name)) == (dm.kind == "language_model")
        # the task's own: every data module takes these as get_datamodule's arguments
        assert not {"batch_size", "data_dir", "download", "num_workers", "seed"} & set(
            task_options(name))


def test_unknown_task_and_option_are_named():
    with pytest.raises(ValueError, match=r"unknown task 'mnits'; known tasks: mnist, mnist-pixel"):
        get_datamodule("mnits")
    with pytest.raises(TypeError, match=r"task 'digits' has no option\(s\) bptt; its options: "):
        get_datamodule("digits", bptt=3)
    with pytest.raises(ValueError, match="batch_size"):
        get_datamodule("digits", batch_size=0)


def test_yes_no_and_fraction_options_take_only_their_kind():
    """``bool("flase")`` is True: a typo must not turn an option on."""
    with pytest.raises(ValueError, match="option permuted must be true or false, got 'flase'"):
        get_datamodule("mnist-pixel", permuted="flase")
    with pytest.raises(ValueError, match="option cache must be true or false, got 1"):
        get_datamodule("assoc", cache=1)
    assert get_datamodule("mnist-pixel", permuted=np.bool_(True)).permuted is True
    with pytest.raises(ValueError, match=r"option val_fraction must be a number in \(0, 1\), "
                                         r"got 'abc'"):
        get_datamodule("wikitext103-small", val_fraction="abc")


def test_a_stream_too_short_names_the_batch_size_option(tmp_path):
    write_wikitext(tmp_path)
    for options, option in (({"batch_size": 200}, "the batch size"),
                            ({"batch_size": 2, "eval_batch_size": 200}, "the eval_batch_size")):
        dm = get_datamodule("wikitext2", data_dir=tmp_path, verify_checksums=False, **options)
        with pytest.raises(ValueError, match=f"too few for 200 rows \\({option}\\)"):
            dm.setup()


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ENN_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("ENN_DATA_DIR")
    assert resolve_data_dir() == tmp_path / "xdg" / "enn" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "enn" / "data"
    assert not (tmp_path / "home").exists()  # resolving creates nothing


def test_digits_split_sizes_values_and_seeds():
    dm = get_datamodule("digits", batch_size=64)
    dm.prepare_data()
    dm.setup()
    assert (dm.seq_len, dm.input_size, dm.num_classes) == (8, 8, 10)
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 1197, "val": 300, "test": 300}
    idx = dm.split_indices
    assert len(np.unique(np.concatenate(list(idx.values())))) == 1797
    x, y = dm.datasets["test"].tensors
    assert x.shape == (300, 8, 8) and 0.0 <= x.min() and x.max() <= 1.0
    assert torch.bincount(y, minlength=10).min() >= 29  # stratified: ~30 per class

    def test_idx(seed):
        other = get_datamodule("digits", seed=seed)
        other.setup()
        return other.split_indices["test"]

    assert np.array_equal(test_idx(42), idx["test"])
    assert not np.array_equal(test_idx(7), idx["test"])


def test_verify_reports_each_status(tmp_path):
    write_mnist(tmp_path, n_train=3, n_test=3)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    results = {r.path.name: r for r in verify(tmp_path, ["mnist"])}
    assert results["train-labels-idx1-ubyte.gz"].status == "missing"
    assert results["t10k-images-idx3-ubyte.gz"].status == "bad-checksum"
    assert "checksum mismatch" in results["t10k-images-idx3-ubyte.gz"].message
    write_wikitext(tmp_path, "wikitext-103")  # its train md5 is not published: format only
    results = {r.path.name: r for r in verify(tmp_path, ["wikitext103"])}
    assert results["wiki.train.tokens"].status == "ok"
    assert "md5 not published" in results["wiki.train.tokens"].message
    assert "38 tokens" in results["wiki.train.tokens"].message
    assert results["wiki.test.tokens"].status == "bad-checksum"
    (tmp_path / "wikitext-103" / "wiki.train.tokens").write_text("", encoding="utf-8")
    results = {r.path.name: r for r in verify(tmp_path, ["wikitext103"])}
    assert results["wiki.train.tokens"].status == "bad-format"
    assert "empty token file" in results["wiki.train.tokens"].message
    write_wikitext(tmp_path)  # WikiText-2's files have md5s: these are not the official ones
    assert {r.status for r in verify(tmp_path, ["wikitext2"])} == {"bad-checksum"}
    datasets = {"mnist", "cifar10", "wikitext103", "wikitext2", "ptb"}
    assert {r.dataset for r in verify(tmp_path)} == datasets
    assert [r.path.name for r in verify(tmp_path, ["mnist10k", "digits"])] == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def _cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_verify_and_list(tmp_path, capsys, monkeypatch):
    folder = write_wikitext(tmp_path)
    monkeypatch.setitem(sources.SOURCES, "wikitext2",
                        with_md5s_of(sources.SOURCES["wikitext2"], folder))
    assert _cli(["data", "verify", "wikitext2", "--data-dir", str(tmp_path)]) == 0
    assert "ok" in capsys.readouterr().out
    assert _cli(["data", "verify", "mnist", "--data-dir", str(tmp_path)]) == 1
    assert _cli(["data", "list"]) == 0
    assert "wikitext103-small" in capsys.readouterr().out
    assert _cli(["data", "download", "digits"]) == 0


def test_integrity_error_is_a_value_error():
    assert issubclass(DataIntegrityError, ValueError)


def test_every_task_has_a_download_source_entry(tmp_path, capsys):
    """The generated tasks (assoc, mqar) have nothing to fetch or check, and the table of
    download sources names exactly the registry's tasks."""
    assert set(sources.TASK_SOURCES) == set(TASKS)
    assert sources.source_of("mqar") is None
    assert download("mqar", tmp_path) == [] and verify(tmp_path, ["mqar"]) == []
    assert _cli(["data", "download", "mqar", "--data-dir", str(tmp_path)]) == 0
    assert "mqar: nothing to download" in capsys.readouterr().out
    assert _cli(["data", "verify", "mqar", "--data-dir", str(tmp_path)]) == 0
