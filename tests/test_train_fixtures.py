"""The commands for data this machine lacks (CIFAR-10, full MNIST, full WikiText-103), run end
to end on files in the official formats that the tests write. Home-made files cannot match
the official checksums, hence ``data.verify_checksums=false``; the rest is the user's command
as docs/results/README.md gives it."""

import json

import pytest
from data_fixtures import cifar_batches, write_cifar, write_mnist, write_wikitext

from enn.cli import main


@pytest.mark.parametrize(
    "task, write, extra",
    [
        (
            "cifar10",
            lambda d: write_cifar(d, cifar_batches(40), archive=True),
            ["data.val_size=20", "train.batch_size=16"],
        ),
        (
            "mnist",
            lambda d: write_mnist(d, n_train=120, n_test=40),
            ["data.val_size=20", "train.batch_size=16"],
        ),
        (
            "wikitext103",
            lambda d: write_wikitext(d, "wikitext-103"),
            ["train.batch_size=2", "data.bptt=4", "model.embed_dim=16"],
        ),
    ],
)
@pytest.mark.parametrize("model", ["engram", "lstm"])
def test_paper_command_runs_end_to_end_on_format_exact_files(tmp_path, task, write, extra, model):
    write(tmp_path / "data")
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--task",
            task,
            "--model",
            model,
            "--preset",
            "paper",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(run),
            "--epochs",
            "1",
            "data.verify_checksums=false",
            "model.hidden_sizes=16",
            *extra,
        ]
    )
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["preset"] == "paper"
    assert ("test_ppl" in metrics) == task.startswith("wikitext")
