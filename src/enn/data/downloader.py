"""Fetch the official files: mirrors in order, resumable, checksummed, atomic.

A file is written to ``<file>.part`` and renamed to its final name only once its md5
matches, so a final name always means a complete, verified file. An interrupted download
leaves its ``.part``; the next attempt asks the server for the rest with an HTTP Range
request and starts over if the server ignores it. A checksum mismatch deletes the
``.part`` and tries the next mirror. URLs may be ``http(s)://`` or ``file://``; tests
pass ``mirrors`` to serve files from a loopback server or a local folder.

Nothing here prints except the tqdm progress bar (on stderr, only on a terminal).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from . import sources
from .paths import DataIntegrityError, DataMissingError, resolve_data_dir
from .sources import check_md5, md5_file, source_of

CHUNK = 1 << 16
SCHEMES = ("http", "https", "file")


def fetch(urls: Sequence[str], dest: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Download ``dest`` from the first of ``urls`` that yields a file with md5 ``md5``.

    Raises ``DataIntegrityError`` when every mirror that answered gave a wrong checksum,
    else ``DataMissingError`` naming each URL and its error. ``md5=None`` skips the check.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    bad_checksum = False
    for url in urls:
        scheme = urlparse(url).scheme
        if scheme not in SCHEMES:
            raise ValueError(f"unsupported URL scheme {scheme!r} in {url}; use {SCHEMES}")
        resumed = part.is_file() and part.stat().st_size > 0
        try:
            _fetch_part(url, part, timeout)
            if resumed and md5 is not None and md5_file(part, remember=False) != md5:
                part.unlink()  # the earlier .part was not this file's beginning: fetch it whole
                _fetch_part(url, part, timeout)
        except (URLError, HTTPException, OSError) as err:
            failures.append(f"{url}: {err}")
            continue
        actual = md5_file(part, remember=False) if md5 is not None else None
        if actual != md5:
            part.unlink()
            bad_checksum = True
            failures.append(f"{url}: checksum mismatch (md5 {actual}, expected {md5})")
            continue
        os.replace(part, dest)
        return dest
    detail = "; ".join(failures) or "no URL given"
    if bad_checksum:
        raise DataIntegrityError(f"{dest}: no mirror gave the expected file: {detail}")
    raise DataMissingError(f"could not download {dest.name} into {dest.parent}: {detail}")


def _fetch_part(url: str, part: Path, timeout: float) -> None:
    """Bring ``part`` to the full content of ``url``, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code != 416 or not offset:
            raise
        part.unlink()  # "range not satisfiable": the .part is stale; start over
        response = urlopen(Request(url), timeout=timeout)
        offset = 0
    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = offset > 0 and response.status == 206
        if resumed and not content_range.startswith(f"bytes {offset}-"):
            raise OSError(f"server answered range {content_range!r} to a request from {offset}")
        offset = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            open(part, "ab" if resumed else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.name[: -len(".part")],
                disable=None,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"incomplete download: {part.stat().st_size} of {total} bytes")


def _intact(path: Path, md5: str | None) -> bool:
    if not path.is_file():
        return False
    try:
        check_md5(path, md5)
    except DataIntegrityError:
        return False
    return True


def _extract(archive: Path, spec: sources.Source) -> None:
    """Extract the files ``spec`` lists from a zip archive (matched by base name)."""
    folder = archive.parent
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(m).name: m for m in zf.namelist() if not m.endswith("/")}
            for filename, md5 in spec.files:
                if filename not in members:
                    raise DataIntegrityError(f"{archive}: has no {filename}")
                tmp = folder / f"{filename}.part"
                with zf.open(members[filename]) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                try:
                    check_md5(tmp, md5)
                except DataIntegrityError:
                    tmp.unlink()
                    raise
                os.replace(tmp, folder / filename)
    except zipfile.BadZipFile as err:
        raise DataIntegrityError(f"{archive}: not a valid zip archive ({err})") from err


def _fetch_source(
    spec: sources.Source,
    root: Path,
    names: Sequence[str],
    mirrors: Sequence[str] | None,
    force: bool,
) -> None:
    """Fetch ``names`` (file names of ``spec.files``) directly or through the archive."""
    folder = root / spec.folder
    bases = [m if m.endswith("/") else m + "/" for m in (mirrors or spec.mirrors)]
    direct = dict(spec.fetch)
    for filename in names if all(n in direct for n in names) else direct:
        dest = folder / filename
        if force:
            dest.with_name(dest.name + ".part").unlink(missing_ok=True)
        if force or not _intact(dest, direct[filename]):
            fetch([base + filename for base in bases], dest, direct[filename])
        if filename.endswith(".zip"):
            _extract(dest, spec)
            dest.unlink()


def fetch_missing(required: Sequence[tuple[str, str]], data_dir: Path) -> None:
    """Download whichever of the (source, file name) pairs are missing or corrupt."""
    for source in dict.fromkeys(s for s, _ in required):
        spec = sources.SOURCES[source]
        names = [
            f
            for s, f in required
            if s == source and not _intact(data_dir / spec.folder / f, spec.md5(f))
        ]
        if names:
            _fetch_source(spec, data_dir, names, None, force=False)


def download(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    mirrors: Sequence[str] | None = None,
    files: Sequence[str] | None = None,
) -> list[Path]:
    """Fetch a dataset's official files into the data directory; returns their paths.

    ``name`` is a dataset (``mnist``, ``cifar10``, ``wikitext103``, ``wikitext2``) or a task
    that reads one (``mnist10k`` -> ``mnist``); tasks with nothing to fetch (``digits``,
    ``assoc``, ``mqar``) return ``[]``. Files already present and intact are kept unless
    ``force``.
    ``mirrors`` replaces the default base URLs (the file name is appended to each);
    ``files`` restricts the fetch to some of the dataset's files (e.g. only MNIST's t10k
    files) where they are downloadable one by one; a task that reads only some files
    (``mnist10k``, ``wikitext103-small``) selects those by default.
    """
    source = source_of(name)
    if source is None:
        return []
    spec = sources.SOURCES[source]
    root = resolve_data_dir(data_dir)
    default = sources.TASK_FILES.get(name, [f for f, _ in spec.files])
    names = list(default if files is None else files)
    unknown = sorted(set(names) - {f for f, _ in spec.files})
    if unknown:
        known = ", ".join(f for f, _ in spec.files)
        raise ValueError(f"{source} has no file(s) {unknown}; its files: {known}")
    folder = root / spec.folder
    extracted = folder / sources.CIFAR10_DIR
    if source == "cifar10" and not force and all(
        _intact(extracted / n, md5) for n, md5 in sources.CIFAR10_BATCHES
    ):
        return [extracted]
    todo = [f for f in names if force or not _intact(folder / f, spec.md5(f))]
    if todo:
        _fetch_source(spec, root, todo, mirrors, force)
    return [folder / f for f in names]
