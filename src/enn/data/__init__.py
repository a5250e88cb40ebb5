"""Datasets as Lightning data modules: sequential MNIST/CIFAR-10, WikiText, digits, recall.

``get_datamodule(name, ...)`` is the entry point; ``TASKS`` lists the names. Data is read
from a local data directory (``resolve_data_dir``) and fetched only on request
(``download``); ``verify`` checks what is there. See docs/data.md.
"""

from .assoc import decode, encode
from .downloader import download
from .paths import DataIntegrityError, DataMissingError, resolve_data_dir
from .registry import TASKS, TaskInfo, get_datamodule, task_options
from .verify import VerifyResult, verify

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
