"""The real files, found through ENN_DATA_DIR (CI: /work/shared/data); skipped when absent."""

import time

import numpy as np
import pytest
import torch
from data_fixtures import real_data_dir

from enn.data import get_datamodule, verify
from enn.data.mnist import load_mnist
from enn.data.wikitext import EOS, UNK, read_ids

ROOT = real_data_dir()


def need(*relative):
    missing = [r for r in relative if not (ROOT / r).is_file()]
    if missing:
        pytest.skip(f"real data {missing} not in {ROOT} (set ENN_DATA_DIR to the data folder)")


def test_real_mnist_t10k():
    need("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
    start = time.perf_counter()
    images, labels = load_mnist(ROOT, "t10k")  # with the official md5 check
    assert time.perf_counter() - start < 2.0
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10 and counts.min() > 0 and counts.sum() == 10000
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test labels
    dm = get_datamodule("mnist10k")
    dm.prepare_data()
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 7000, "val": 1000, "test": 2000}
    x, y = dm.datasets["test"].tensors
    assert x.shape == (2000, 28, 28) and 0.0 <= x.min() and x.max() == 1.0
    assert torch.equal(y, torch.from_numpy(labels[8000:]))


def test_real_wikitext103_token_counts():
    need("wikitext-103/wiki.valid.tokens", "wikitext-103/wiki.test.tokens")
    for name, tokens, unk in (("valid", 217_646, 1_657), ("test", 245_569, 2_492)):
        ids = read_ids(ROOT / "wikitext-103" / f"wiki.{name}.tokens", {UNK: 0, EOS: 1})
        assert len(ids) == tokens and int((ids == 0).sum()) == unk
    assert [r.status for r in verify(names=["wikitext103-small"])] == ["ok", "ok"]


def test_real_wikitext103_small_protocol():
    need("wikitext-103/wiki.valid.tokens", "wikitext-103/wiki.test.tokens")
    dm = get_datamodule("wikitext103-small", batch_size=16, bptt=32)
    dm.prepare_data()
    dm.setup()
    assert dm.vocab_size == len(dm.vocab) == 10_000 and dm.vocab[:2] == [UNK, EOS]
    n_train, n_val = len(dm.streams["train"]), len(dm.streams["val"])
    assert n_train + n_val == 217_646 and n_val == round(217_646 * 0.1)
    assert len(dm.streams["test"]) == 245_569
    assert int(dm.streams["train"].max()) < 10_000
    batches = list(dm.train_dataloader())
    for (x, y), (x_next, _) in zip(batches, batches[1:], strict=False):
        assert x.dtype == torch.int64 and x.shape[0] == 16
        assert torch.equal(y[:, :-1], x[:, 1:])
        assert torch.equal(x_next[:, 0], y[:, -1])  # row r of batch i+1 starts where it ended
    assert sum(x.shape[1] for x, _ in batches) == n_train // 16 - 1
