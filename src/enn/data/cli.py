"""``enn data``: list the tasks, download datasets, verify the data directory."""

from __future__ import annotations

import argparse

from .downloader import download
from .paths import resolve_data_dir
from .registry import TASKS, task_options
from .sources import SOURCES, TASK_SOURCES
from .verify import verify


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list, download and verify datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="the tasks, their kind and their data")
    p.set_defaults(func=run_list)

    p = actions.add_parser("download", help="fetch a dataset's official files")
    p.add_argument("name", choices=sorted(set(SOURCES) | set(TASK_SOURCES)))
    p.add_argument("--data-dir", help="default: $ENN_DATA_DIR, else ~/.cache/enn/data")
    p.add_argument("--force", action="store_true", help="download again even if intact")
    p.add_argument("--mirror", action="append", help="base URL to try instead of the defaults")
    p.add_argument("--file", action="append", help="fetch only this file (MNIST, CIFAR-10)")
    p.set_defaults(func=run_download)

    p = actions.add_parser("verify", help="check presence, checksum and format of each file")
    p.add_argument("names", nargs="*", help="datasets or tasks (default: all)")
    p.add_argument("--data-dir", help="default: $ENN_DATA_DIR, else ~/.cache/enn/data")
    p.set_defaults(func=run_verify)


def run_list(args: argparse.Namespace) -> int:
    for info in TASKS.values():
        print(f"{info.name:18} {info.kind:15} {info.description}")
        print(f"{'':34} options: {', '.join(task_options(info.name))}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    paths = download(
        args.name, args.data_dir, force=args.force, mirrors=args.mirror, files=args.file
    )
    if not paths:
        print(f"{args.name}: nothing to download (bundled with scikit-learn or generated)")
    for path in paths:
        print(path)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Exit 1 when a file is corrupt, or when a dataset named explicitly is incomplete."""
    print(f"data directory: {resolve_data_dir(args.data_dir)}")
    results = verify(args.data_dir, args.names or None)
    for r in results:
        print(f"{r.status:12} {r.dataset:12} {r.path}: {r.message}")
    failed = {"bad-checksum", "bad-format"} | ({"missing"} if args.names else set())
    return int(any(r.status in failed for r in results))
