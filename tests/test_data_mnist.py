"""MNIST: IDX parsing, the rows/pixels views, the paper split and the t10k-only protocol."""

import gzip

import numpy as np
import pytest
import torch
from data_fixtures import write_idx, write_mnist

from enn.data import DataIntegrityError, DataMissingError, get_datamodule
from enn.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, parse_idx


def test_parse_idx_reads_header_and_pixels(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    path = write_idx(tmp_path / "x.gz", images)
    out = parse_idx(path, IMAGE_MAGIC)
    assert out.dtype == np.uint8 and out.shape == (2, 28, 28)
    assert np.array_equal(out, images)
    raw = gzip.decompress(path.read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (2).to_bytes(4, "big")


def test_rows_view_values_and_paper_split(tmp_path):
    arrays = write_mnist(tmp_path, n_train=60, n_test=20)
    dm = get_datamodule(
        "mnist", data_dir=tmp_path, batch_size=8, verify_checksums=False, val_size=6
    )
    dm.prepare_data()
    dm.setup()
    assert (dm.seq_len, dm.input_size, dm.num_classes, dm.vocab_size) == (28, 28, 10, None)
    train_x, train_y = dm.datasets["train"].tensors
    assert train_x.shape == (54, 28, 28) and train_x.dtype == torch.float32
    assert len(dm.datasets["val"]) == 6 and len(dm.datasets["test"]) == 20
    first = dm.split_indices["train"][0]
    expected = torch.from_numpy(arrays["train"][0][first].astype(np.float32) / 255)
    assert torch.allclose(train_x[0], expected)  # row t = pixel row t, scaled to [0, 1]
    assert train_y[0] == arrays["train"][1][first]
    assert set(dm.split_indices["train"]).isdisjoint(dm.split_indices["val"])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 28, 28) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_pixel_view_and_fixed_permutation(tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=10)
    common = {"data_dir": tmp_path, "verify_checksums": False, "val_size": 5}
    plain = get_datamodule("mnist-pixel", **common)
    plain.setup()
    assert (plain.seq_len, plain.input_size) == (784, 1)
    x_plain = plain.datasets["test"].tensors[0]  # (N, 784, 1)
    assert x_plain.shape == (10, 784, 1)

    def permuted(seed, permutation_seed=0):
        dm = get_datamodule(
            "mnist-pixel", seed=seed, permuted=True, **common, permutation_seed=permutation_seed
        )
        dm.setup()
        return dm.datasets["test"].tensors[0]

    a, b = permuted(seed=1), permuted(seed=2)
    assert torch.equal(a, b)  # the permutation does not follow the training seed
    assert not torch.equal(a, x_plain)
    order = np.random.default_rng(0).permutation(784)
    assert torch.equal(a[:, :, 0], x_plain[:, order, 0])
    assert not torch.equal(permuted(seed=1, permutation_seed=3), a)
    with pytest.raises(ValueError, match="permuted"):
        get_datamodule("mnist", permuted=True)


def test_mnist10k_protocol_on_small_files(tmp_path):
    arrays = write_mnist(tmp_path, n_train=1, n_test=50)
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()  # t10k files suffice
    dm = get_datamodule(
        "mnist10k", data_dir=tmp_path, verify_checksums=False, n_train=40, val_size=8, pixels=True
    )
    dm.prepare_data()
    dm.setup()
    sizes = {name: len(ds) for name, ds in dm.datasets.items()}
    assert sizes == {"train": 32, "val": 8, "test": 10}
    idx = dm.split_indices
    assert np.array_equal(idx["test"], np.arange(40, 50))  # the last images
    assert len(np.unique(np.concatenate(list(idx.values())))) == 50
    assert torch.equal(
        dm.datasets["test"].tensors[1], torch.from_numpy(arrays["t10k"][1][40:]).long()
    )
    assert dm.datasets["train"].tensors[0].shape == (32, 784, 1)


def test_splits_deterministic_per_seed_and_different_across_seeds(tmp_path):
    write_mnist(tmp_path, n_train=100, n_test=10)

    def val_indices(**kw):
        dm = get_datamodule("mnist", data_dir=tmp_path, verify_checksums=False, val_size=10, **kw)
        dm.setup()
        return dm.split_indices["val"]

    assert np.array_equal(val_indices(seed=1), val_indices(seed=1))
    assert not np.array_equal(val_indices(seed=1), val_indices(seed=2))
    assert np.array_equal(val_indices(seed=1, data_seed=7), val_indices(seed=2, data_seed=7))


def test_shuffle_order_is_seeded(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=10)

    def first_labels(seed):
        dm = get_datamodule(
            "mnist",
            data_dir=tmp_path,
            verify_checksums=False,
            val_size=6,
            batch_size=20,
            seed=seed,
            data_seed=0,
        )
        return next(iter(dm.train_dataloader()))[1]

    assert torch.equal(first_labels(3), first_labels(3))
    assert not torch.equal(first_labels(3), first_labels(4))


def test_missing_file_names_file_folder_and_command(tmp_path):
    dm = get_datamodule("mnist10k", data_dir=tmp_path)
    with pytest.raises(DataMissingError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "mnist") in message
    assert f"enn data download mnist --data-dir {tmp_path}" in message
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DataMissingError, match="t10k-images"):
        dm.setup()  # setup checks too, without prepare_data


def test_checksum_mismatch_is_refused(tmp_path):
    write_mnist(tmp_path, n_train=5, n_test=5)
    dm = get_datamodule("mnist10k", data_dir=tmp_path)  # checksums on: the files are not official
    with pytest.raises(DataIntegrityError, match=r"t10k-images-idx3-ubyte.gz: checksum mismatch"):
        dm.prepare_data()
    assert isinstance(DataIntegrityError("x"), ValueError)


def test_truncated_gzip_is_refused(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((3, 28, 28)))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataIntegrityError, match=r"t.gz: not a complete gzip file"):
        parse_idx(path, IMAGE_MAGIC)


def test_wrong_magic_is_refused(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros(4), magic=2051)
    with pytest.raises(DataIntegrityError, match="wrong IDX magic number 2051, expected 2049"):
        parse_idx(path, LABEL_MAGIC)


def test_wrong_sizes_are_refused(tmp_path):
    good = write_idx(tmp_path / "x.gz", np.zeros((3, 28, 28)))
    raw = gzip.decompress(good.read_bytes())
    good.write_bytes(gzip.compress(raw[:-28]))  # header promises more pixels than there are
    with pytest.raises(DataIntegrityError, match=r"x.gz: wrong size"):
        parse_idx(good, IMAGE_MAGIC)
    root = tmp_path / "d"
    write_mnist(root, n_train=4, n_test=6)
    write_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(5))
    dm = get_datamodule("mnist10k", data_dir=root, verify_checksums=False, n_train=4, val_size=1)
    with pytest.raises(DataIntegrityError, match="5 labels for 6 images"):
        dm.setup()
    write_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz", np.zeros((6, 14, 14)))
    with pytest.raises(DataIntegrityError, match="expected 28x28"):
        dm.setup()
