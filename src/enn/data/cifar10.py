"""CIFAR-10 as sequences: 32 rows, each the 32 pixels' (r, g, b) interleaved (96 values).

Read from the extracted ``cifar10/cifar-10-batches-py/`` when it holds all six batches (or
there is no archive), else straight from ``cifar10/cifar-10-python.tar.gz`` (no extraction
needed). The batches are Python pickles;
they are read with an unpickler that only rebuilds numpy arrays, so a tampered file cannot
run code. Each batch is a dict with ``b"data"`` (n, 3072) uint8 in CHW order (1024 red,
1024 green, 1024 blue values, each row-major) and ``b"labels"`` (n ints).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .base import ClassificationDataModule, check_int, split_pool
from .paths import DataIntegrityError, missing_error
from .sources import (
    CIFAR10_ARCHIVE,
    CIFAR10_BATCHES,
    CIFAR10_DIR,
    SOURCES,
    check_md5,
    cifar10_extracted,
)

SIDE = 32
CHANNELS = 3
_NUMPY_GLOBALS = {"_reconstruct", "_frombuffer", "ndarray", "dtype", "scalar"}
_NUMPY_MODULES = {
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, bytes and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> object:
        numpy_array = module in _NUMPY_MODULES and name in _NUMPY_GLOBALS
        if numpy_array or (module, name) == ("_codecs", "encode"):  # encode: py3 bytes, protocol 2
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as images (n, 32, 32, 3) uint8 HWC and labels (n,) int64."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means the file is not a CIFAR batch
        raise DataIntegrityError(f"{where}: not a CIFAR-10 pickle batch ({err})") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataIntegrityError(f"{where}: batch lacks b'data' or b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise DataIntegrityError(
            f"{where}: data is {data.dtype} {data.shape}, expected uint8 (n, 3072)"
        )
    if labels.shape != (len(data),) or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise DataIntegrityError(f"{where}: labels must be {len(data)} integers in 0-9")
    images = data.reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)  # (n, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def locate_cifar10(data_dir: Path, verify_checksums: bool = True) -> Path:
    """The extracted batch folder if complete (or alone), else the archive; present and
    checksummed."""
    folder = data_dir / SOURCES["cifar10"].folder
    extracted = cifar10_extracted(folder)
    if extracted is not None:
        for name, md5 in CIFAR10_BATCHES:
            path = extracted / name
            if not path.is_file():
                raise missing_error(path, "cifar10", data_dir)
            if verify_checksums:
                check_md5(path, md5)
        return extracted
    archive = folder / CIFAR10_ARCHIVE[0]
    if not archive.is_file():
        raise missing_error(archive, "cifar10", data_dir)
    if verify_checksums:
        check_md5(archive, CIFAR10_ARCHIVE[1])
    return archive


def _read_batches(data_dir: Path, verify_checksums: bool) -> dict[str, bytes]:
    """Raw bytes of the six batch files, from the extracted folder or the archive."""
    where = locate_cifar10(data_dir, verify_checksums)
    if where.is_dir():
        return {name: (where / name).read_bytes() for name, _ in CIFAR10_BATCHES}
    try:
        with tarfile.open(where, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            raw = {}
            for name, _ in CIFAR10_BATCHES:
                member = members.get(f"{CIFAR10_DIR}/{name}")
                if member is None:
                    raise DataIntegrityError(f"{where}: has no {CIFAR10_DIR}/{name}")
                raw[name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataIntegrityError(f"{where}: not a complete tar.gz archive ({err})") from err
    return raw


def load_cifar10(
    data_dir: Path, verify_checksums: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (test images, labels)); images (n, 32, 32, 3) uint8 HWC."""
    raw = _read_batches(data_dir, verify_checksums)
    parsed = {name: parse_batch(data, f"{CIFAR10_DIR}/{name}") for name, data in raw.items()}
    train = [parsed[f"data_batch_{i}"] for i in range(1, 6)]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return (train_x, train_y), parsed["test_batch"]


class CIFAR10DataModule(ClassificationDataModule):
    """Official 50k/10k, with a seeded ``val_size`` (default 5,000) held out of training."""

    task = "cifar10"

    def __init__(self, val_size: int = 5000, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.val_size = check_int("val_size", val_size, 1)
        self.seq_len, self.input_size = SIDE, SIDE * CHANNELS
        self.num_classes = 10
        self.split_indices: dict[str, np.ndarray] = {}

    def prepare_data(self) -> None:
        if self.download:
            from .downloader import download

            download("cifar10", self.data_dir)  # unless the extracted batches are intact
        locate_cifar10(self.data_dir, self.verify_checksums)

    @staticmethod
    def sequences(images: np.ndarray) -> torch.Tensor:
        """uint8 HWC images (N, 32, 32, 3) as float rows (N, 32, 96) in [0, 1]."""
        return torch.from_numpy(images.reshape(len(images), SIDE, SIDE * CHANNELS)).float() / 255

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        (train_x, train_y), (test_x, test_y) = load_cifar10(self.data_dir, self.verify_checksums)
        train, val = split_pool(len(train_x), self.val_size, self.data_seed)
        self.split_indices = {"train": train, "val": val}
        pools = {
            "train": (train_x[train], train_y[train]),
            "val": (train_x[val], train_y[val]),
            "test": (test_x, test_y),
        }
        return {name: (self.sequences(x), torch.from_numpy(y)) for name, (x, y) in pools.items()}
