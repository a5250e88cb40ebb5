"""MNIST as sequences: 28 rows of 28 pixels (``mnist``), or 784 single pixels (``mnist-pixel``).

``mnist`` follows the paper: the 60k official training images are split by ``data_seed``
into 54k train / 6k validation; the 10k official test images are the test set.
``mnist10k`` is for a machine that holds only the official t10k files: the first 8,000
images are the training pool (a seeded 1,000 of them held out for validation) and the last
2,000 the test set.

The pixel view can be permuted (the "permuted MNIST" benchmark) by one fixed permutation of
the 784 positions drawn from ``permutation_seed`` (default 0). It is deliberately separate
from ``seed``/``data_seed`` so that every run, whatever its seeds, sees the same task.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from .base import ClassificationDataModule, check_bool, check_int, split_pool
from .paths import DataIntegrityError
from .sources import TASK_FILES, locate

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SIDE = 28


def read_gzip(path: Path) -> bytes:
    """All of a gzip file, decompressed; truncation or corruption is a ``DataIntegrityError``."""
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise DataIntegrityError(f"{path}: not a complete gzip file ({err})") from err


def parse_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array of its header's shape, after checking the header."""
    raw = read_gzip(path)
    if len(raw) < 4:
        raise DataIntegrityError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataIntegrityError(f"{path}: wrong IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataIntegrityError(f"{path}: IDX header truncated ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataIntegrityError(
            f"{path}: wrong size: header says {dims} ({expected} bytes), file has {len(raw)}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()  # writable


def load_mnist(
    data_dir: Path, split: str, verify_checksums: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the official ``train``/``t10k`` files."""
    images_path = locate(data_dir, "mnist", f"{split}-images-idx3-ubyte.gz", verify_checksums)
    labels_path = locate(data_dir, "mnist", f"{split}-labels-idx1-ubyte.gz", verify_checksums)
    images = parse_idx(images_path, IMAGE_MAGIC)
    labels = parse_idx(labels_path, LABEL_MAGIC)
    if images.shape[1:] != (SIDE, SIDE):
        raise DataIntegrityError(f"{images_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataIntegrityError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    if labels.size and labels.max() > 9:
        raise DataIntegrityError(f"{labels_path}: label {labels.max()} outside 0-9")
    return images, labels.astype(np.int64)


class MNISTDataModule(ClassificationDataModule):
    """Row- or pixel-sequential MNIST on the official 60k/10k files (54k/6k/10k)."""

    task = "mnist"

    def __init__(
        self,
        val_size: int = 6000,
        pixels: bool = False,
        permuted: bool = False,
        permutation_seed: int = 0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        if permuted and not pixels:
            raise ValueError("option permuted=True needs the pixel view (pixels=True)")
        self.val_size = check_int("val_size", val_size, 1)
        self.pixels = check_bool("pixels", pixels)
        self.permuted = check_bool("permuted", permuted)
        self.permutation_seed = check_int("permutation_seed", permutation_seed, 0)
        self.seq_len, self.input_size = (SIDE * SIDE, 1) if pixels else (SIDE, SIDE)
        self.num_classes = 10
        self.split_indices: dict[str, np.ndarray] = {}

    def required_files(self) -> list[tuple[str, str]]:
        return _files(("train", "t10k"))

    def sequences(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images (N, 28, 28) as float sequences (N, T, D) in [0, 1]."""
        x = torch.from_numpy(images.reshape(len(images), -1)).float().div_(255.0)  # (N, 784)
        if self.permuted:
            order = np.random.default_rng(self.permutation_seed).permutation(SIDE * SIDE)
            x = x[:, torch.from_numpy(order)]  # (N, 784)
        return x.view(len(images), self.seq_len, self.input_size)  # (N, T, D)

    def _pools(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Source arrays of each split before preprocessing."""
        train_x, train_y = load_mnist(self.data_dir, "train", self.verify_checksums)
        test_x, test_y = load_mnist(self.data_dir, "t10k", self.verify_checksums)
        train, val = split_pool(len(train_x), self.val_size, self.data_seed)
        self.split_indices = {"train": train, "val": val}
        return {
            "train": (train_x[train], train_y[train]),
            "val": (train_x[val], train_y[val]),
            "test": (test_x, test_y),
        }

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {
            name: (self.sequences(images), torch.from_numpy(labels))
            for name, (images, labels) in self._pools().items()
        }


class MNIST10kDataModule(MNISTDataModule):
    """The official 10k test images only: first ``n_train`` for training/validation, rest test.

    ``split_indices`` are positions in the t10k files.
    """

    task = "mnist10k"

    def __init__(self, n_train: int = 8000, val_size: int = 1000, **kwargs: object) -> None:
        super().__init__(val_size=val_size, **kwargs)
        self.n_train = check_int("n_train", n_train, 2)

    def required_files(self) -> list[tuple[str, str]]:
        return [("mnist", name) for name in TASK_FILES[self.task]]

    def _pools(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        images, labels = load_mnist(self.data_dir, "t10k", self.verify_checksums)
        if self.n_train >= len(images):
            raise ValueError(
                f"option n_train={self.n_train} leaves no test images of {len(images)}"
            )
        train, val = split_pool(self.n_train, self.val_size, self.data_seed)
        test = np.arange(self.n_train, len(images))
        self.split_indices = {"train": train, "val": val, "test": test}
        return {name: (images[idx], labels[idx]) for name, idx in self.split_indices.items()}


class MNISTPixelDataModule(MNISTDataModule):
    """``mnist`` with the pixel view (784 steps x 1) as the default."""

    task = "mnist-pixel"

    def __init__(self, pixels: bool = True, **kwargs: object) -> None:
        super().__init__(pixels=pixels, **kwargs)


def _files(splits: tuple[str, ...]) -> list[tuple[str, str]]:
    """(source, file name) of the images and labels files of each official split."""
    kinds = ("images-idx3", "labels-idx1")
    return [("mnist", f"{split}-{kind}-ubyte.gz") for split in splits for kind in kinds]
