"""CIFAR-10: pickle batches (extracted folder or tar.gz) to 32 rows of 96 RGB values."""

import dataclasses
import hashlib
import pickle

import numpy as np
import pytest
import torch
from data_fixtures import cifar_batches, serve, write_cifar

from enn.data import DataIntegrityError, DataMissingError, download, get_datamodule, sources
from enn.data.cifar10 import parse_batch


@pytest.mark.parametrize("archive", [False, True], ids=["extracted", "tar.gz"])
def test_rows_interleave_rgb_and_split(tmp_path, archive):
    batches = cifar_batches(n=4)
    write_cifar(tmp_path, batches, archive=archive)
    dm = get_datamodule(
        "cifar10", data_dir=tmp_path, verify_checksums=False, val_size=5, batch_size=3
    )
    dm.prepare_data()
    dm.setup()
    assert (dm.seq_len, dm.input_size, dm.num_classes) == (32, 96, 10)
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 15, "val": 5, "test": 4}
    x, y = dm.datasets["test"].tensors  # (4, 32, 96)
    chw = batches["test_batch"][b"data"].reshape(4, 3, 32, 32)
    r, c = 5, 7  # row 5, pixel 7: values 21..23 of step 5 are its (r, g, b)
    assert torch.allclose(x[0, r, 3 * c : 3 * c + 3], torch.tensor(chw[0, :, r, c] / 255.0).float())
    assert torch.equal(y, torch.tensor(batches["test_batch"][b"labels"]))
    assert 0.0 <= x.min() and x.max() <= 1.0
    train_pool = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    train_y = dm.datasets["train"].tensors[1]
    assert torch.equal(train_y, torch.from_numpy(train_pool[dm.split_indices["train"]]))
    assert set(dm.split_indices["train"]).isdisjoint(dm.split_indices["val"])
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (3, 32, 96) and xb.dtype == torch.float32 and yb.dtype == torch.int64


def test_missing_archive_names_it_and_the_command(tmp_path):
    dm = get_datamodule("cifar10", data_dir=tmp_path)
    with pytest.raises(DataMissingError) as err:
        dm.prepare_data()
    assert "cifar-10-python.tar.gz" in str(err.value)
    assert f"enn data download cifar10 --data-dir {tmp_path}" in str(err.value)


def test_an_incomplete_extracted_folder_gives_way_to_the_archive(tmp_path, monkeypatch):
    """A partly extracted folder: its missing batch is named with the command that fetches
    the archive, and that command does fetch it (the folder does not count as the data)."""
    batches = cifar_batches(n=2)
    data = tmp_path / "data"
    (write_cifar(data, batches, archive=False) / "data_batch_1").unlink()
    dm = get_datamodule("cifar10", data_dir=data, verify_checksums=False, val_size=1)
    with pytest.raises(DataMissingError, match="data_batch_1.*enn data download cifar10"):
        dm.prepare_data()
    archive = write_cifar(tmp_path / "server", batches, archive=True)
    spec = dataclasses.replace(
        sources.SOURCES["cifar10"],
        fetch=((archive.name, hashlib.md5(archive.read_bytes()).hexdigest()),))
    with serve(archive.parent) as (url, server):
        monkeypatch.setitem(sources.SOURCES, "cifar10", dataclasses.replace(spec, mirrors=(url,)))
        download("cifar10", data_dir=data)
        assert [path for path, _ in server.requests] == [f"/{archive.name}"]
    dm = get_datamodule("cifar10", data_dir=data, verify_checksums=False, val_size=1)
    dm.prepare_data()
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 9, "val": 1, "test": 2}


def test_checksum_of_archive_is_checked(tmp_path):
    write_cifar(tmp_path, cifar_batches(n=2), archive=True)
    with pytest.raises(DataIntegrityError, match="cifar-10-python.tar.gz: checksum mismatch"):
        get_datamodule("cifar10", data_dir=tmp_path).prepare_data()


def test_truncated_archive_is_refused(tmp_path):
    path = write_cifar(tmp_path, cifar_batches(n=2), archive=True)
    path.write_bytes(path.read_bytes()[:300])
    dm = get_datamodule("cifar10", data_dir=tmp_path, verify_checksums=False, val_size=1)
    with pytest.raises(DataIntegrityError, match="not a complete tar.gz archive"):
        dm.setup()


def test_bad_batches_are_refused():
    batch = cifar_batches(n=2)["test_batch"]
    with pytest.raises(DataIntegrityError, match=r"expected uint8 \(n, 3072\)"):
        parse_batch(pickle.dumps({**batch, b"data": batch[b"data"][:, :100]}), "b")
    with pytest.raises(DataIntegrityError, match="labels must be 2 integers in 0-9"):
        parse_batch(pickle.dumps({**batch, b"labels": [1, 12]}), "b")
    with pytest.raises(DataIntegrityError, match="lacks"):
        parse_batch(pickle.dumps({b"data": batch[b"data"]}), "b")


def test_unpickler_refuses_code():
    evil = pickle.dumps({b"data": print})  # any global other than numpy arrays
    with pytest.raises(DataIntegrityError, match="refusing to load builtins.print"):
        parse_batch(evil, "evil")
