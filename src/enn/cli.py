"""The ``enn`` command line: one subcommand per module, imported only when used.

Each module named below exposes ``register(subparsers)``, which adds its parser and sets
``func`` (taking the parsed args, returning an exit code). Errors meant for the user are
``CLIError`` (or data errors): one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": "enn.train.cli",
    "evaluate": "enn.train.cli",
    "compare": "enn.train.cli",
    "data": "enn.data.cli",
    "bench": "enn.bench",
    "report": "enn.analysis.cli",
    "explain": "enn.analysis.cli",
    "demo": "enn.demo",
}


class CLIError(Exception):
    """A problem with the user's request, reported as one line."""


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enn", description="Engram Neural Network: train, compare, explain, benchmark."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module in modules:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    # Config overrides (key=value) may stand anywhere among the options.
    args, extra = parser.parse_known_args(argv)
    overrides = [a.removeprefix("--") for a in extra if "=" in a and not a.startswith("-=")]
    unknown = [a for a in extra if a.removeprefix("--") not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    if args.command is None:
        parser.print_help()
        return 2
    from .data import DataIntegrityError, DataMissingError

    try:
        return int(args.func(args) or 0)
    except (CLIError, DataMissingError, DataIntegrityError) as err:
        print(f"enn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"enn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
