"""``enn bench``: runs the speed benchmark, ``benchmarks/bench.py`` of a checkout.

The benchmark is no part of the installed package (it sets process-wide allocator options and
reads /proc): it is found beside the package's sources (an editable install) or in the
current folder, and parses its own options (``enn bench --help``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from . import CLIError

MODULE = "benchmarks.bench"


def register(subparsers) -> None:
    # No option prefix: every word after `bench` is handed to the benchmark's own parser.
    p = subparsers.add_parser(
        "bench",
        help="training/inference speed of the ENN vs RNN baselines (from a checkout)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_bench)


def benchmark_file() -> Path | None:
    """``benchmarks/bench.py`` of the checkout holding this package, else of the current folder."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        path = root / "benchmarks" / "bench.py"
        if path.is_file():
            return path
    return None


def load_benchmark():
    if MODULE in sys.modules:
        return sys.modules[MODULE]
    path = benchmark_file()
    if path is None:
        raise CLIError(
            "the benchmark is not installed with the package: run enn bench in a checkout of "
            "the repository (benchmarks/bench.py)"
        )
    spec = importlib.util.spec_from_file_location(MODULE, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[MODULE] = module
    return module


def run_bench(args: argparse.Namespace) -> int:
    bench = load_benchmark()
    try:
        return bench.main(args.argv, prog="enn bench")
    except SystemExit as exit_:  # --help, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else 2
