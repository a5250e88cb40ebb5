"""Where the data lives, and the two errors every loader raises.

Offline first: nothing here creates folders or fetches files. A missing file is reported
with the exact ``enn data download`` command that would fetch it, so a user who sees the
error knows both what is wrong and what to type.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ENV_VAR = "ENN_DATA_DIR"


class DataMissingError(FileNotFoundError):
    """A data file the task needs is not in the data directory (or could not be fetched)."""


class DataIntegrityError(ValueError):
    """A data file exists but is not what it should be (checksum, truncation, format)."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$ENN_DATA_DIR``, else a per-user cache folder.

    The cache folder is ``$XDG_CACHE_HOME/enn/data`` (or ``~/.cache/enn/data``). The folder
    is not created here: only a download does that.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().absolute()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(cache).expanduser().absolute() / "enn" / "data"


def download_command(source: str, data_dir: Path) -> str:
    """The shell command that fetches ``source`` into ``data_dir``."""
    return f"enn data download {source} --data-dir {shlex.quote(str(data_dir))}"


def missing_error(path: Path, source: str, data_dir: Path) -> DataMissingError:
    """The error for a missing file: names the file, the folder searched and the fix."""
    return DataMissingError(
        f"missing data file {path.name} (dataset '{source}'): not found in {path.parent}. "
        f"Fetch it with: {download_command(source, data_dir)} "
        f"(or point --data-dir / ${ENV_VAR} at a folder that holds it)"
    )
