"""Multi-query associative recall, in the style of Zoology's MQAR (Arora et al. 2023).

A sequence of ``length`` steps opens with ``pairs`` key-value pairs (distinct keys from
``n_keys`` key symbols, values from ``n_values`` value symbols); every key is then queried
once, in random order, at random later steps, and the other steps hold a blank symbol. The
target at a query step is the value stored with that key; other steps have no target
(-100, ignored by the loss and the accuracy). Sweeping ``pairs`` at a fixed length draws a
capacity curve.

Symbols: keys are ids ``0 .. n_keys - 1``, values ``n_keys .. n_keys + n_values - 1``, the
blank is the last id. Inputs are one-hot floats (T, vocabulary) by default or int64 ids
(``encoding="tokens"``); targets are value indices ``0 .. n_values - 1``. Generated, not
downloaded; each split draws from its own seeded stream, as in ``assoc``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .base import ClassificationDataModule, check_int

SPLITS = ("train", "val", "test")
NO_TARGET = -100  # F.cross_entropy's default ignore_index


def generate(n: int, pairs: int, length: int, n_keys: int, n_values: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n, length) and targets (n, length), NO_TARGET where nothing is asked."""
    blank = n_keys + n_values
    rows = np.arange(n)[:, None]
    keys = np.argsort(rng.random((n, n_keys)), axis=1)[:, :pairs]  # (n, P) distinct keys
    values = rng.integers(0, n_values, size=(n, pairs))  # (n, P)
    tokens = np.full((n, length), blank, dtype=np.int64)
    targets = np.full((n, length), NO_TARGET, dtype=np.int64)
    tokens[:, 0 : 2 * pairs : 2] = keys
    tokens[:, 1 : 2 * pairs : 2] = n_keys + values
    # each key once, at distinct random steps after the pairs, in random order
    free = length - 2 * pairs
    steps = 2 * pairs + np.sort(np.argsort(rng.random((n, free)), axis=1)[:, :pairs], axis=1)
    order = np.argsort(rng.random((n, pairs)), axis=1)  # which pair each query asks for
    tokens[rows, steps] = keys[rows, order]
    targets[rows, steps] = values[rows, order]
    return tokens, targets


class MQARDataModule(ClassificationDataModule):
    """Multi-query associative recall: ``pairs`` pairs, then every key queried once."""

    task = "mqar"

    def __init__(
        self,
        pairs: int = 8,
        length: int = 64,
        n_keys: int = 32,
        n_values: int = 32,
        encoding: str = "onehot",
        n_train: int = 20_000,
        n_val: int = 2_000,
        n_test: int = 4_000,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.pairs = check_int("pairs", pairs, 1)
        self.n_keys = check_int("n_keys", n_keys, 1)
        self.n_values = check_int("n_values", n_values, 2)
        if self.pairs > self.n_keys:
            raise ValueError(f"option pairs must be at most n_keys={n_keys} (distinct keys), "
                             f"got {pairs}")
        self.length = check_int("length", length, 3 * self.pairs)
        if encoding not in ("onehot", "tokens"):
            raise ValueError(f"option encoding must be 'onehot' or 'tokens', got {encoding!r}")
        self.encoding = encoding
        self.sizes = {name: check_int(f"n_{name}", size, 1)
                      for name, size in zip(SPLITS, (n_train, n_val, n_test), strict=True)}
        self.seq_len = self.length
        self.num_classes = self.n_values
        vocabulary = self.n_keys + self.n_values + 1
        if encoding == "onehot":
            self.input_size = vocabulary
        else:
            self.vocab_size = vocabulary
        self._check_memory(vocabulary)

    def _check_memory(self, vocabulary: int) -> None:
        """Refuse sizes whose largest split cannot fit in this machine's memory (the key draw
        (n, n_keys) in float64, the one-hot inputs (n, T, vocabulary) in float32), instead
        of being killed for memory while generating."""
        n = max(self.sizes.values())
        need = 8 * n * self.n_keys + (4 * n * self.length * vocabulary
                                      if self.encoding == "onehot" else 0)
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not a POSIX system: not checked
            return
        if need > have:
            raise ValueError(
                f"options n_{max(self.sizes, key=self.sizes.get)}={n}, n_keys={self.n_keys}, "
                f"length={self.length} need {need / 2**30:.1f} GiB to generate, more than "
                f"this machine's {have / 2**30:.1f} GiB; use smaller sizes"
                + (" or encoding=tokens" if self.encoding == "onehot" else ""))

    def tokens(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        seed = np.random.SeedSequence(self.data_seed, spawn_key=(SPLITS.index(split),))
        return generate(self.sizes[split], self.pairs, self.length, self.n_keys, self.n_values,
                        np.random.default_rng(seed))

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        splits = {}
        for split in SPLITS:
            tokens, targets = self.tokens(split)
            x = torch.from_numpy(tokens)  # (n, T)
            if self.encoding == "onehot":
                x = torch.eye(self.n_keys + self.n_values + 1)[x]  # (n, T, vocabulary)
            splits[split] = (x, torch.from_numpy(targets))
        return splits
