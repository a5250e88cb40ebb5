"""Data modules shared by every task: option checks, file checks, splits and loaders.

Datasets are in-memory tensors: every task here fits in RAM, and indexing a tensor is far
faster than any per-item decoding. Two families:

- ``ClassificationDataModule``: (x, y) pairs; the train loader is shuffled by a generator
  seeded with ``seed`` (same seed, same order), val/test loaders are not shuffled.
- ``LanguageModelDataModule``: one token stream per split, cut into ``B`` parallel rows;
  batch ``i + 1`` continues batch ``i`` row by row, so no loader is ever shuffled. Under
  data parallel training (``shard(rank, world_size)``) the stream is cut into
  ``world_size * B`` rows and each process reads its own ``B`` of them.

``data_seed`` (default: ``seed``) drives everything about the data itself (split
membership, generated sequences); ``seed`` drives the shuffling. Fixing ``data_seed`` while
varying ``seed`` compares training runs on one fixed split.
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .paths import resolve_data_dir
from .sources import locate


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, else a ``ValueError`` naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"option {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool, else a ``ValueError`` naming the option (``bool("flase")`` is
    True: a typo must not turn an option on)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"option {name} must be true or false, got {value!r}")
    return bool(value)


def check_fraction(name: str, value: object) -> float:
    """``value`` as a float in (0, 1), else a ``ValueError`` naming the option."""
    if (isinstance(value, bool) or not isinstance(value, int | float | np.floating)
            or not 0.0 < value < 1.0):
        raise ValueError(f"option {name} must be a number in (0, 1), got {value!r}")
    return float(value)


def split_pool(n: int, held_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (kept, held_out) index arrays: a seeded random ``held_out`` of ``range(n)``."""
    if not 0 < held_out < n:
        raise ValueError(f"option val_size={held_out} must leave examples of the {n} in the pool")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[held_out:]), np.sort(perm[:held_out])


class BaseDataModule(pl.LightningDataModule):
    """Options, data directory and file checks common to all tasks."""

    kind: ClassVar[str]
    task: ClassVar[str]

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 128,
        seed: int = 42,
        download: bool = False,
        num_workers: int = 0,
        data_seed: int | None = None,
        verify_checksums: bool = True,
    ) -> None:
        super().__init__()
        self.data_dir = resolve_data_dir(data_dir)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.data_seed = self.seed if data_seed is None else check_int("data_seed", data_seed, 0)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.download = check_bool("download", download)
        self.verify_checksums = check_bool("verify_checksums", verify_checksums)
        self.seq_len: int | None = None
        self.input_size: int | None = None
        self.vocab_size: int | None = None
        self.num_classes: int | None = None
        self._ready = False

    def required_files(self) -> list[tuple[str, str]]:
        """(source, file name) pairs this task reads; empty for bundled or generated data."""
        return []

    def prepare_data(self) -> None:
        """Check the files this task reads; with ``download=True`` fetch the missing ones."""
        if self.download:
            from .downloader import fetch_missing

            fetch_missing(self.required_files(), self.data_dir)
        for source, filename in self.required_files():
            locate(self.data_dir, source, filename, self.verify_checksums)

    def setup(self, stage: str | None = None) -> None:
        """Build the splits once; later calls do nothing."""
        if not self._ready:
            self._build()
            self._ready = True

    def _build(self) -> None:
        raise NotImplementedError

    def _loader(self, dataset: Dataset, **kwargs: object) -> DataLoader:
        return DataLoader(dataset, num_workers=self.num_workers, **kwargs)


class ClassificationDataModule(BaseDataModule):
    """Fixed-length sequences with one label each, held as tensors."""

    kind = "classification"

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{"train"|"val"|"test": (x, y)}`` with x (N, T, D) float32 or (N, T) int64."""
        raise NotImplementedError

    def _build(self) -> None:
        self.datasets = {name: TensorDataset(x, y) for name, (x, y) in self._splits().items()}

    def _split_loader(self, name: str, shuffle: bool) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return self._loader(
            self.datasets[name], batch_size=self.batch_size, shuffle=shuffle, generator=generator
        )

    def train_dataloader(self) -> DataLoader:
        return self._split_loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._split_loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._split_loader("test", shuffle=False)


class StreamTooShortError(ValueError):
    """A token stream too short for the rows it is to be cut into (the batch size)."""


def batchify(stream: torch.Tensor, rows: int) -> torch.Tensor:
    """Cut a 1-D token stream into ``rows`` contiguous rows, dropping the last ``< rows`` tokens.

    Row ``r`` holds tokens ``[r * n, (r + 1) * n)``: reading a row left to right reads the
    text in order, which is what lets a model carry its state from one window to the next.
    """
    n = stream.numel() // rows
    if n < 2:
        raise StreamTooShortError(
            f"a stream of {stream.numel()} tokens is too short for {rows} rows"
        )
    return stream[: n * rows].view(rows, n)  # (B, N)


class BPTTWindows(Dataset):
    """Window ``i`` of a batchified stream: inputs ``[:, i*bptt : ...]``, targets one later.

    The last window is shorter when ``N - 1`` is not a multiple of ``bptt`` (kept, so no
    token goes unpredicted).
    """

    def __init__(self, rows: torch.Tensor, bptt: int) -> None:
        self.rows = rows  # (B, N)
        self.bptt = bptt

    def __len__(self) -> int:
        return math.ceil((self.rows.shape[1] - 1) / self.bptt)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.bptt
        end = min(start + self.bptt, self.rows.shape[1] - 1)
        x = self.rows[:, start:end].contiguous()  # (B, T)
        y = self.rows[:, start + 1 : end + 1].contiguous()  # (B, T)
        return x, y


class LanguageModelDataModule(BaseDataModule):
    """Next-token prediction over contiguous token streams (truncated BPTT)."""

    kind = "language_model"

    def __init__(
        self, bptt: int = 32, eval_batch_size: int | None = None, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.bptt = check_int("bptt", bptt, 1)
        self.eval_batch_size = (
            self.batch_size
            if eval_batch_size is None
            else check_int("eval_batch_size", eval_batch_size, 1)
        )
        self.seq_len = self.bptt
        self.vocab: list[str] = []
        self.unk_id = 0
        self.eos_id = 1
        self.pad_id: int | None = None
        self.rank, self.world_size = 0, 1

    def _corpus(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The vocabulary (index = id) and ``{"train"|"val"|"test": 1-D int64 stream}``."""
        raise NotImplementedError

    def _build(self) -> None:
        self.vocab, streams = self._corpus()
        self.vocab_size = self.num_classes = len(self.vocab)
        self.streams = streams
        self._batchify()

    def shard(self, rank: int, world_size: int) -> None:
        """Read only process ``rank``'s rows: each split is cut into ``world_size * B`` rows
        (``B`` the batch size of the split) and this process takes rows ``[rank * B, (rank +
        1) * B)``, each still read in order. Every process gets as many windows of as many
        tokens, and the union of the processes' rows is exactly what one process with batch
        ``world_size * B`` reads."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} processes")
        self.rank, self.world_size = rank, world_size
        if self._ready:
            self._batchify()

    def _batchify(self) -> None:
        self.rows = {}
        for name, ids in self.streams.items():
            rows = self.batch_size if name == "train" else self.eval_batch_size
            try:
                every = batchify(ids, rows * self.world_size)
            except StreamTooShortError:
                option = "batch size" if name == "train" else "eval_batch_size"
                per = f"rows (the {option}" + (
                    f" x {self.world_size} processes)" if self.world_size > 1 else ")")
                raise StreamTooShortError(
                    f"the {name} split's {ids.numel()} tokens are too few for "
                    f"{rows * self.world_size} {per}: each row needs at least 2 tokens"
                ) from None
            self.rows[name] = every[self.rank * rows : (self.rank + 1) * rows]

    def _windows(self, name: str) -> DataLoader:
        self.setup()
        return self._loader(BPTTWindows(self.rows[name], self.bptt), batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._windows("train")

    def val_dataloader(self) -> DataLoader:
        return self._windows("val")

    def test_dataloader(self) -> DataLoader:
        return self._windows("test")
