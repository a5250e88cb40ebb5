"""Check the data directory file by file: present, checksum, and parseable.

``verify`` reports instead of raising, so the CLI can print one line per file. Every check
reads the whole file (full md5, full parse): slow for the largest files, thorough for all.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import sources
from .cifar10 import load_cifar10, parse_batch
from .mnist import IMAGE_MAGIC, LABEL_MAGIC, parse_idx
from .paths import DataIntegrityError, resolve_data_dir
from .sources import CIFAR10_BATCHES, TASK_FILES, check_md5, cifar10_extracted, source_of
from .wikitext import EOS, UNK, read_ids


@dataclass(frozen=True)
class VerifyResult:
    """The state of one data file: ``status`` is ``ok``, ``missing``, ``unreadable``,
    ``bad-checksum`` or ``bad-format``."""

    dataset: str
    path: Path
    status: str
    message: str


def _mnist(path: Path) -> str:
    array = parse_idx(path, IMAGE_MAGIC if "images" in path.name else LABEL_MAGIC)
    return f"IDX {'x'.join(map(str, array.shape))}"


def _cifar_batch(path: Path) -> str:
    images, _ = parse_batch(path.read_bytes(), str(path))
    return f"{len(images)} images"


def _cifar_archive(path: Path) -> str:
    (train, _), (test, _) = load_cifar10(path.parent.parent, verify_checksums=False)
    return f"{len(train)} train + {len(test)} test images"


def _tokens(path: Path) -> str:
    return f"{len(read_ids(path, {UNK: 0, EOS: 1}))} tokens incl. {EOS}"


def _check(dataset: str, path: Path, md5: str | None, parse: Callable[[Path], str]) -> VerifyResult:
    if not path.is_file():
        return VerifyResult(dataset, path, "missing", "not found")
    try:
        check_md5(path, md5)
    except DataIntegrityError as err:
        return VerifyResult(dataset, path, "bad-checksum", str(err))
    except OSError as err:
        return VerifyResult(dataset, path, "unreadable", err.strerror or str(err))
    try:
        detail = parse(path)
    except DataIntegrityError as err:
        return VerifyResult(dataset, path, "bad-format", str(err))
    except OSError as err:
        return VerifyResult(dataset, path, "unreadable", err.strerror or str(err))
    checksum = "md5 ok" if md5 else "md5 not published, not checked"
    return VerifyResult(dataset, path, "ok", f"{checksum}; {detail}")


def _files(name: str, root: Path) -> list[tuple[Path, str | None, Callable[[Path], str]]]:
    """(path, md5, parser) of each file the dataset or task ``name`` reads."""
    source = source_of(name)
    if source is None:
        return []
    spec = sources.SOURCES[source]
    folder = root / spec.folder
    if source == "cifar10":
        extracted = cifar10_extracted(folder)
        if extracted is not None:
            return [(extracted / n, md5, _cifar_batch) for n, md5 in CIFAR10_BATCHES]
        return [(folder / name, md5, _cifar_archive) for name, md5 in spec.files]
    parse = _mnist if source == "mnist" else _tokens
    wanted = TASK_FILES.get(name)
    return [(folder / f, md5, parse) for f, md5 in spec.files if wanted is None or f in wanted]


def verify(
    data_dir: str | os.PathLike[str] | None = None, names: Sequence[str] | None = None
) -> list[VerifyResult]:
    """One ``VerifyResult`` per file of each named dataset (default: every dataset).

    Names may be datasets or tasks; a task checks the files it reads (``mnist10k``: the two
    MNIST t10k files). Tasks without files (``digits``, ``assoc``, ``mqar``) add nothing. A
    file named twice is checked once.
    """
    root = resolve_data_dir(data_dir)
    results: dict[Path, VerifyResult] = {}
    for name in sources.SOURCES if names is None else names:
        for path, md5, parse in _files(name, root):
            if path not in results:
                results[path] = _check(source_of(name), path, md5, parse)
    return list(results.values())
