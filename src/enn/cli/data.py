"""``enn data``: list the tasks, download datasets, verify the data directory."""

from __future__ import annotations

import argparse

from . import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list, download and verify datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="the tasks, their kind and their data")
    p.set_defaults(func=run_list)

    p = actions.add_parser("download", help="fetch a dataset's official files")
    p.add_argument("name", help="a dataset (mnist, cifar10, wikitext103, wikitext2, ptb) or a task")
    p.add_argument("--data-dir", help="default: $ENN_DATA_DIR, else $XDG_CACHE_HOME/enn/data "
                   "(~/.cache/enn/data)")
    p.add_argument("--force", action="store_true", help="download again even if intact")
    p.add_argument("--mirror", action="append",
                   help="base URL to try instead of the defaults (repeatable)")
    p.add_argument("--file", action="append",
                   help="fetch only this file (MNIST, CIFAR-10; repeatable)")
    p.set_defaults(func=run_download)

    p = actions.add_parser("verify", help="check presence, checksum and format of each file")
    p.add_argument("names", nargs="*", help="datasets or tasks (default: all)")
    p.add_argument("--data-dir", help="default: $ENN_DATA_DIR, else $XDG_CACHE_HOME/enn/data "
                   "(~/.cache/enn/data)")
    p.set_defaults(func=run_verify)


def run_list(args: argparse.Namespace) -> int:
    from ..data import TASKS, task_options

    for info in TASKS.values():
        print(f"{info.name:18} {info.kind:15} {info.description}")
        print(f"{'':34} options: {', '.join(task_options(info.name))}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..data import download

    try:
        paths = download(
            args.name, args.data_dir, force=args.force, mirrors=args.mirror, files=args.file
        )
    except ValueError as err:  # e.g. a --file the dataset does not have
        raise CLIError(str(err)) from err
    if not paths:
        print(f"{args.name}: nothing to download (bundled with scikit-learn or generated)")
    for path in paths:
        print(path)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every file checked is there and intact, else 1 (missing, unreadable, bad
    checksum or bad format); without names every dataset's files are checked."""
    from ..data import resolve_data_dir, verify

    try:
        results = verify(args.data_dir, args.names or None)
    except ValueError as err:  # an unknown dataset name
        raise CLIError(str(err)) from err
    print(f"data directory: {resolve_data_dir(args.data_dir)}")
    for r in results:
        print(f"{r.status:12} {r.dataset:12} {r.path}: {r.message}")
    bad = [r for r in results if r.status != "ok"]
    if bad:
        print(f"{len(bad)} of {len(results)} file(s) missing, unreadable or damaged")
    return int(bool(bad))
