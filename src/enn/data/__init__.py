"""Datasets as Lightning data modules: sequential MNIST/CIFAR-10, WikiText, digits, recall.

``get_datamodule(name, ...)`` is the entry point; ``TASKS`` lists the names. Data is read
from a local data directory (``resolve_data_dir``) and fetched only on request
(``download``); ``verify`` checks what is there. See docs/data.md.

The names that need Lightning (or tqdm) load with their first use, so that the analysis layer
can use this package's ``atomic`` and ``vocab`` modules without the ``train`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .paths import DataIntegrityError, DataMissingError, resolve_data_dir
from .vocab import decode, encode

if TYPE_CHECKING:
    from .downloader import download
    from .integrity import VerifyResult, verify
    from .registry import TASKS, TaskInfo, get_datamodule, task_options

_LAZY = {
    "download": "downloader",
    "TASKS": "registry",
    "TaskInfo": "registry",
    "get_datamodule": "registry",
    "task_options": "registry",
    "VerifyResult": "integrity",
    "verify": "integrity",
}

__all__ = [
    "TASKS",
    "DataIntegrityError",
    "DataMissingError",
    "TaskInfo",
    "VerifyResult",
    "decode",
    "download",
    "encode",
    "get_datamodule",
    "resolve_data_dir",
    "task_options",
    "verify",
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
