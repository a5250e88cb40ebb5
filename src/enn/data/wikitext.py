"""WikiText at word level, the standard way, for truncated-BPTT language modelling.

Tokens: each line of an official ``wiki.*.tokens`` file is split on whitespace and
``<eos>`` is appended, blank lines included (they become a lone ``<eos>``). This is the
convention of PyTorch's word_language_model and the one behind the published counts:
WikiText-103 ``wiki.valid.tokens`` gives 217,646 tokens and ``wiki.test.tokens`` 245,569.

Vocabulary: ``<unk>`` (id 0) and ``<eos>`` (id 1), then the words of the training tokens by
decreasing frequency, ties broken by first occurrence (deterministic). ``max_vocab`` caps
the total size, specials included; every other word, and every word unseen in training,
maps to ``<unk>``. Ids are int64, meant for an embedding.

The Penn Treebank (``ptb``, Mikolov's ``ptb.{train,valid,test}.txt``) is read the same way:
its files already hold ``<unk>`` and a 10,000-word vocabulary (with ``<eos>``), so the
vocabulary built here is exactly its own: 929,589 / 73,760 / 82,430 tokens.

Protocols: ``wikitext103`` / ``wikitext2`` / ``ptb`` use the official train/valid/test files.
``wikitext103-small`` fits this project's machines: it trains on WikiText-103's
``wiki.valid.tokens`` minus its last ``val_fraction`` (default 10%) of tokens, which is held
out as the validation stream; it tests on ``wiki.test.tokens``; the vocabulary comes from
the training part only (default cap 10,000).
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .base import LanguageModelDataModule, check_fraction, check_int
from .paths import DataIntegrityError
from .sources import TASK_FILES, locate

UNK, EOS = "<unk>", "<eos>"
SPLIT_FILES = {"train": "wiki.train.tokens", "val": "wiki.valid.tokens", "test": "wiki.test.tokens"}


def read_ids(path: Path, stoi: dict[str, int]) -> np.ndarray:
    """Ids (int64) of a token file under ``stoi``, which grows by each new word in order seen.

    ``stoi`` must already hold ``<eos>``. A file with no word at all is a
    ``DataIntegrityError``: an empty or blank download is never silently used.
    """
    ids = array("q")
    eos = stoi[EOS]
    words_seen = 0
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = line.split()
                for word in words:
                    if word not in stoi:
                        stoi[word] = len(stoi)
                ids.extend(map(stoi.__getitem__, words))
                ids.append(eos)
                words_seen += len(words)
    except UnicodeDecodeError as err:
        raise DataIntegrityError(f"{path}: not UTF-8 text ({err})") from err
    if words_seen == 0:
        raise DataIntegrityError(f"{path}: empty token file (no words)")
    return np.frombuffer(ids, dtype=np.int64)


def build_vocab(
    words: list[str], train_ids: np.ndarray, max_vocab: int | None
) -> tuple[list[str], np.ndarray]:
    """Vocabulary from the raw ids of the training tokens, and raw id -> final id.

    ``words[i]`` is raw id ``i`` in first-seen order, with ``<unk>``, ``<eos>`` at 0 and 1;
    a stable sort by count therefore breaks ties by first occurrence.
    """
    counts = np.bincount(train_ids, minlength=len(words))
    counts[:2] = 0  # the specials are always in, never ranked
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    if max_vocab is not None:
        order = order[: max_vocab - 2]
    remap = np.zeros(len(words), dtype=np.int64)  # unknown -> <unk> (0)
    remap[1] = 1
    remap[order] = np.arange(2, 2 + len(order))
    return [UNK, EOS] + [words[i] for i in order], remap


class WikiTextDataModule(LanguageModelDataModule):
    """Word-level WikiText-103 on the official train/valid/test files."""

    task = "wikitext103"
    source: ClassVar[str] = "wikitext103"
    split_files: ClassVar[dict[str, str]] = SPLIT_FILES

    def __init__(self, max_vocab: int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.max_vocab = None if max_vocab is None else check_int("max_vocab", max_vocab, 2)

    def required_files(self) -> list[tuple[str, str]]:
        return [(self.source, name) for name in self.split_files.values()]

    def _raw(self, stoi: dict[str, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Raw ids of each split, and those of the tokens the vocabulary is counted on."""
        raw = {
            name: read_ids(locate(self.data_dir, self.source, f, self.verify_checksums), stoi)
            for name, f in self.split_files.items()
        }
        return raw, raw["train"]

    def _corpus(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        stoi = {UNK: 0, EOS: 1}
        raw, counted = self._raw(stoi)
        vocab, remap = build_vocab(list(stoi), counted, self.max_vocab)
        return vocab, {name: torch.from_numpy(remap[ids]) for name, ids in raw.items()}


class WikiText2DataModule(WikiTextDataModule):
    """Word-level WikiText-2 on the official train/valid/test files."""

    task = "wikitext2"
    source = "wikitext2"


class PTBDataModule(WikiTextDataModule):
    """Word-level Penn Treebank (Mikolov's version) on its official train/valid/test files."""

    task = "ptb"
    source = "ptb"
    split_files = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}


class WikiText103SmallDataModule(WikiTextDataModule):
    """Train on WikiText-103 valid (last ``val_fraction`` held out), test on WikiText-103 test."""

    task = "wikitext103-small"

    def __init__(
        self, max_vocab: int | None = 10_000, val_fraction: float = 0.1, **kwargs: object
    ) -> None:
        super().__init__(max_vocab=max_vocab, **kwargs)
        self.val_fraction = check_fraction("val_fraction", val_fraction)

    def required_files(self) -> list[tuple[str, str]]:
        return [(self.source, name) for name in TASK_FILES[self.task]]

    def _raw(self, stoi: dict[str, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        train_path, test_path = (
            locate(self.data_dir, s, f, self.verify_checksums) for s, f in self.required_files()
        )
        train_all = read_ids(train_path, stoi)
        test = read_ids(test_path, stoi)
        cut = len(train_all) - round(len(train_all) * self.val_fraction)
        return {"train": train_all[:cut], "val": train_all[cut:], "test": test}, train_all[:cut]
