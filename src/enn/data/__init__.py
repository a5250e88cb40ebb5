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
    from .registry import TASKS, TaskInfo, get_datamodule, task_options
    from .verify import VerifyResult, verify

_LAZY = {
    "download": "downloader",
    "TASKS": "registry",
    "TaskInfo": "registry",
    "get_datamodule": "registry",
    "task_options": "registry",
    "VerifyResult": "verify",
    "verify": "verify",
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
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    # bind all of the module's names: importing the module ``verify`` has just bound it here
    # under the name of the function ``verify``
    globals().update({n: getattr(module, n) for n, m in _LAZY.items() if m == _LAZY[name]})
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
