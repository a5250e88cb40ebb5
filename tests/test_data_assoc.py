"""Associative recall: targets checked by an independent decoder, seeds, encodings, cache."""

import os
import stat

import numpy as np
import pytest
import torch

from enn.data import DataIntegrityError, atomic, decode, encode, get_datamodule


def recall(text):
    """Independent reference: parse "c9k8j3f1??c" and look the query up."""
    pairs, query = text[:-3], text[-1]
    assert text[-3:-1] == "??"
    table = dict(zip(pairs[0::2], pairs[1::2], strict=True))
    assert len(table) == len(pairs) // 2, f"repeated key in {text}"
    return int(table[query])


def make(**options):
    sizes = {"n_train": 300, "n_val": 50, "n_test": 80}
    dm = get_datamodule("assoc", **{**sizes, **options})
    dm.setup()
    return dm


@pytest.mark.parametrize("k", [1, 4, 8])
def test_targets_correct_by_construction(k):
    dm = make(k=k, encoding="tokens")
    assert dm.seq_len == 2 * k + 3
    for split, ds in dm.datasets.items():
        x, y = ds.tensors
        assert x.shape == (len(ds), 2 * k + 3) and x.dtype == torch.int64, split
        for seq, target in zip(x, y, strict=True):
            text = decode(seq)
            assert text[0 : 2 * k : 2].isalpha() and text[1 : 2 * k : 2].isdigit()
            assert recall(text) == int(target)


def test_example_from_the_paper_round_trips():
    ids = encode("c9k8j3f1??c")
    assert ids.tolist() == [2, 35, 10, 34, 9, 29, 5, 27, 36, 36, 2]
    assert decode(ids) == "c9k8j3f1??c" and recall("c9k8j3f1??c") == 9
    with pytest.raises(ValueError, match="not in the associative-recall vocabulary"):
        encode("C9")


def test_encodings_agree_and_shapes():
    onehot, tokens = make(encoding="onehot"), make(encoding="tokens")
    assert (onehot.input_size, onehot.vocab_size, onehot.num_classes) == (37, None, 10)
    assert (tokens.input_size, tokens.vocab_size, tokens.num_classes) == (None, 37, 10)
    x1, y1 = onehot.datasets["train"].tensors  # (N, 11, 37)
    x2, y2 = tokens.datasets["train"].tensors  # (N, 11)
    assert x1.dtype == torch.float32 and x1.shape == (300, 11, 37)
    assert torch.equal(x1.sum(-1), torch.ones(300, 11))
    assert torch.equal(x1.argmax(-1), x2) and torch.equal(y1, y2)
    assert decode(x1[0]) == decode(x2[0])
    xb, yb = next(iter(onehot.train_dataloader()))
    assert xb.shape == (128, 11, 37) and yb.dtype == torch.int64


def test_same_seed_same_data_other_seed_other_data_disjoint_streams():
    a, b, c = make(seed=1, encoding="tokens"), make(seed=1, encoding="tokens"), make(seed=2)
    for split in ("train", "val", "test"):
        assert torch.equal(a.datasets[split].tensors[0], b.datasets[split].tensors[0])
    assert not torch.equal(a.datasets["test"].tensors[0], c.datasets["test"].tensors[0].argmax(-1))
    train = {decode(s) for s in a.datasets["train"].tensors[0]}
    test = {decode(s) for s in a.datasets["test"].tensors[0]}
    assert not train & test
    grown = make(seed=1, encoding="tokens", n_train=500)
    assert torch.equal(grown.datasets["test"].tensors[0], a.datasets["test"].tensors[0])


def test_cache_round_trip_and_corrupt_cache(tmp_path):
    first = make(data_dir=tmp_path, cache=True, encoding="tokens")
    files = sorted(p.name for p in (tmp_path / "assoc").iterdir())
    assert files == [f"assoc-k4-seed42-{s}.npz" for s in ("test-80", "train-300", "val-50")]
    again = make(data_dir=tmp_path, cache=True, encoding="tokens")
    assert torch.equal(first.datasets["val"].tensors[0], again.datasets["val"].tensors[0])
    np.savez(
        tmp_path / "assoc" / "assoc-k4-seed42-val-50.npz",
        tokens=np.zeros((3, 11)),
        targets=np.zeros(3),
    )
    with pytest.raises(DataIntegrityError, match="val-50.npz: cached arrays"):
        make(data_dir=tmp_path, cache=True)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="encoding"):
        get_datamodule("assoc", encoding="ascii")
    with pytest.raises(ValueError, match="option k"):
        get_datamodule("assoc", k=27)
    with pytest.raises(ValueError, match="n_train"):
        get_datamodule("assoc", n_train=0)


def test_repeated_keys_target_the_last_value_and_leave_the_plain_task_unchanged():
    from enn.data.assoc import generate

    plain = generate(500, 4, np.random.default_rng(3))
    again = generate(500, 4, np.random.default_rng(3), repeats=0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again, strict=True))
    tokens, targets = generate(500, 6, np.random.default_rng(3), repeats=2)
    for row, target in zip(tokens, targets, strict=True):
        text = decode(row)
        pairs = [(text[i], text[i + 1]) for i in range(0, 12, 2)]
        assert len({key for key, _ in pairs}) <= 4 and text[-1] in {key for key, _ in pairs[:4]}
        assert int([v for key, v in pairs if key == text[-1]][-1]) == target
    with pytest.raises(ValueError, match="repeats must be below k=4"):
        get_datamodule("assoc", k=4, repeats=4)


def test_an_atomic_write_is_synced_renamed_or_removed(tmp_path, monkeypatch):
    """The one atomic-write helper: the file appears whole or not at all, is flushed to disk
    before the rename and the rename with its folder, and a failed write leaves the previous
    file and no temporary one."""
    synced = []
    monkeypatch.setattr(atomic.os, "fsync",
                        lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)))
    path = tmp_path / "sub" / "f.json"
    atomic.atomic_write_text(path, "old")
    assert path.read_text() == "old" and synced == [False, True]  # the file, then the folder
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(path) as tmp:
        tmp.write_text("half of the n")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(path.parent) == ["f.json"]
    atomic.atomic_save_npz(tmp_path / "a.npz", x=np.arange(3))
    with np.load(tmp_path / "a.npz") as f:
        assert f["x"].tolist() == [0, 1, 2]
