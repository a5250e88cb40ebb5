"""The task registry: names, what kind of task each is, and the one factory the trainer uses."""

from __future__ import annotations

import inspect
import os
from typing import NamedTuple

from .assoc import AssocDataModule
from .base import BaseDataModule
from .cifar10 import CIFAR10DataModule
from .digits import DigitsDataModule
from .mnist import MNIST10kDataModule, MNISTDataModule, MNISTPixelDataModule
from .mqar import MQARDataModule
from .wikitext import (
    PTBDataModule,
    WikiText2DataModule,
    WikiText103SmallDataModule,
    WikiTextDataModule,
)


class TaskInfo(NamedTuple):
    name: str
    kind: str  # "classification" | "language_model"
    description: str


_MODULES: dict[str, tuple[type[BaseDataModule], str]] = {
    "mnist": (MNISTDataModule, "row-sequential MNIST, 28 steps x 28 pixels; 54k/6k/10k"),
    "mnist-pixel": (
        MNISTPixelDataModule,
        "pixel-sequential MNIST, 784 steps x 1 (permuted=True for permuted MNIST); 54k/6k/10k",
    ),
    "mnist10k": (
        MNIST10kDataModule,
        "MNIST from the official t10k files only: 7k/1k (first 8,000) / 2k (last 2,000)",
    ),
    "cifar10": (CIFAR10DataModule, "row-sequential CIFAR-10, 32 steps x 96 (RGB); 45k/5k/10k"),
    "wikitext103": (WikiTextDataModule, "word-level WikiText-103, official splits, TBPTT"),
    "wikitext2": (WikiText2DataModule, "word-level WikiText-2, official splits, TBPTT"),
    "ptb": (PTBDataModule, "word-level Penn Treebank (Mikolov's), official splits, TBPTT"),
    "wikitext103-small": (
        WikiText103SmallDataModule,
        "WikiText-103 valid as training (last 10% held out), test as test; vocab 10k",
    ),
    "digits": (DigitsDataModule, "scikit-learn 8x8 digits, 8 steps x 8; 1,197/300/300"),
    "assoc": (
        AssocDataModule,
        "associative recall (fast weights): K key-value pairs, ??, query -> value; 100k/10k/20k",
    ),
    "mqar": (
        MQARDataModule,
        "multi-query associative recall: pairs, then every key queried once; 20k/2k/4k",
    ),
}

TASKS: dict[str, TaskInfo] = {
    name: TaskInfo(name, cls.kind, description) for name, (cls, description) in _MODULES.items()
}


def task_options(name: str) -> list[str]:
    """The task's own keywords: those its data module accepts beyond ``get_datamodule``'s
    arguments."""
    cls = _MODULES[name][0]
    options: set[str] = set()
    for klass in cls.__mro__:
        if issubclass(klass, BaseDataModule):
            params = inspect.signature(klass.__init__).parameters.values()
            options |= {p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}
    common = inspect.signature(get_datamodule).parameters
    return sorted(options - {"self"} - set(common))


def get_datamodule(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 128,
    seed: int = 42,
    download: bool = False,
    num_workers: int = 0,
    **task_options_: object,
) -> BaseDataModule:
    """The data module of task ``name``; nothing is read until ``prepare_data``/``setup``.

    Raises ``ValueError`` for an unknown task and ``TypeError`` for an option the task does
    not take, each naming it and listing the valid choices.
    """
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    allowed = task_options(name)
    unknown = sorted(set(task_options_) - set(allowed))
    if unknown:
        raise TypeError(
            f"task {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options: {', '.join(allowed)}"
        )
    cls = _MODULES[name][0]
    return cls(
        data_dir=data_dir,
        batch_size=batch_size,
        seed=seed,
        download=download,
        num_workers=num_workers,
        **task_options_,
    )
