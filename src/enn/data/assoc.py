"""Associative recall (Ba, Hinton et al. 2016, "Using Fast Weights to Attend to the Recent Past").

A sequence is K key-value pairs (K distinct letters a-z as keys, digits 0-9 as values),
then ``??``, then one of the K keys as the query; the target is the digit stored with that
key: ``c9k8j3f1??c`` -> 9. Sequences have 2K + 3 symbols from a vocabulary of 37: ids
0-25 are the letters, 26-35 the digits, 36 is ``?``. Values may repeat; keys may not, unless
``repeats`` = r > 0: then the last r pairs write a new value under a key of an earlier pair
(``c9k8c3f1??c`` -> 3), and the target is the key's last value, which a memory that only
adds what it writes blurs.

Inputs are one-hot floats (T, 37) by default (``encoding="onehot"``) or int64 ids for an
embedding (``encoding="tokens"``); targets are the digit, 0-9 (10 classes).

The data is generated, not downloaded: vectorised numpy, about a second for the default
100k / 10k / 20k sequences. Split ``i`` (train, val, test) draws from its own stream,
``SeedSequence(data_seed, spawn_key=(i,))``: the same seed gives the same data, the
splits never share a stream, and a split does not change when another split's size does.
Independent streams can still produce the same sequence by chance: with K = 4 there are
26*25*24*23 * 10^4 * 4 (about 1.4e10) sequences, so a shared sequence between the default
train and test sets is a rare event (about 0.14 expected). ``cache=True`` also stores each
split as ``<data_dir>/assoc/assoc-k<K>-seed<data_seed>-<split>-<n>.npz`` and reloads it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_save_npz
from .base import ClassificationDataModule, check_bool, check_int
from .paths import DataIntegrityError
from .vocab import DIGIT0, LETTERS, QUERY, SYMBOLS, VOCAB_SIZE

SPLITS = ("train", "val", "test")


def generate(n: int, k: int, rng: np.random.Generator, repeats: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences with ``k`` pairs: token ids (n, 2k + 3) int64 and targets (n,) int64.
    With ``repeats`` > 0 the last ``repeats`` pairs give a new value to a key of an earlier
    pair, and the target is the key's last value."""
    rows = np.arange(n)
    distinct = k - repeats
    keys = np.argsort(rng.random((n, len(LETTERS))), axis=1)[:, :k]  # (n, k) distinct letters
    for j in range(distinct, k):  # a repeated pair reuses one of the first keys
        keys[:, j] = keys[rows, rng.integers(0, distinct, size=n)]
    values = rng.integers(0, 10, size=(n, k))  # (n, k)
    which = rng.integers(0, distinct, size=n)  # (n,) the queried key (one of the first pairs)
    tokens = np.empty((n, 2 * k + 3), dtype=np.int64)  # (n, T)
    tokens[:, 0 : 2 * k : 2] = keys
    tokens[:, 1 : 2 * k : 2] = DIGIT0 + values
    tokens[:, 2 * k : 2 * k + 2] = QUERY
    query = keys[rows, which]
    tokens[:, 2 * k + 2] = query
    last = k - 1 - np.argmax((keys == query[:, None])[:, ::-1], axis=1)  # its last pair
    return tokens, values[rows, last].astype(np.int64)


class AssocDataModule(ClassificationDataModule):
    """Associative recall: K pairs, ``??``, a query key -> the stored digit."""

    task = "assoc"

    def __init__(
        self,
        k: int = 4,
        encoding: str = "onehot",
        repeats: int = 0,
        n_train: int = 100_000,
        n_val: int = 10_000,
        n_test: int = 20_000,
        cache: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.k = check_int("k", k, 1)
        if self.k > len(LETTERS):
            raise ValueError(f"option k must be at most {len(LETTERS)} (distinct letters), got {k}")
        if encoding not in ("onehot", "tokens"):
            raise ValueError(f"option encoding must be 'onehot' or 'tokens', got {encoding!r}")
        self.encoding = encoding
        self.repeats = check_int("repeats", repeats, 0)
        if self.repeats >= self.k:
            raise ValueError(f"option repeats must be below k={self.k} (a key to repeat), "
                             f"got {repeats}")
        self.sizes = {
            "train": check_int("n_train", n_train, 1),
            "val": check_int("n_val", n_val, 1),
            "test": check_int("n_test", n_test, 1),
        }
        self.cache = check_bool("cache", cache)
        self.seq_len = 2 * self.k + 3
        self.num_classes = 10
        if encoding == "onehot":
            self.input_size = VOCAB_SIZE
        else:
            self.vocab_size = VOCAB_SIZE
        self.vocab = list(SYMBOLS)

    def tokens(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (n, T) and targets (n,) of one split, generated or read from the cache."""
        n = self.sizes[split]
        repeats = f"-r{self.repeats}" if self.repeats else ""
        name = f"assoc-k{self.k}{repeats}-seed{self.data_seed}-{split}-{n}.npz"
        path = self.data_dir / "assoc" / name
        if self.cache and path.is_file():
            return _load_cached(path, n, self.seq_len)
        seed = np.random.SeedSequence(self.data_seed, spawn_key=(SPLITS.index(split),))
        tokens, targets = generate(n, self.k, np.random.default_rng(seed), self.repeats)
        if self.cache:
            atomic_save_npz(path, tokens=tokens, targets=targets)
        return tokens, targets

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = {}
        for split in SPLITS:
            tokens, targets = self.tokens(split)
            x = torch.from_numpy(tokens)  # (N, T)
            if self.encoding == "onehot":
                x = torch.eye(VOCAB_SIZE)[x]  # (N, T, 37) one-hot rows, faster than F.one_hot
            splits[split] = (x, torch.from_numpy(targets))
        return splits


def _load_cached(path: Path, n: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """A cached split, checked against the shapes its name promises."""
    try:
        with np.load(path) as saved:
            tokens, targets = saved["tokens"], saved["targets"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DataIntegrityError(f"{path}: unreadable cache file ({err}); delete it") from err
    if tokens.shape != (n, seq_len) or targets.shape != (n,):
        raise DataIntegrityError(
            f"{path}: cached arrays are {tokens.shape} and {targets.shape}, expected "
            f"({n}, {seq_len}) and ({n},); delete it"
        )
    return tokens, targets

