"""The ``enn`` command line: one subcommand per module, imported only when used.

Each module named below exposes ``register(subparsers)``, which adds its parser and sets
``func`` (taking the parsed args, returning an exit code). Registering imports nothing but
argparse, so ``enn --help`` runs with torch alone; a command whose optional dependencies are
missing says which extra to install. Errors meant for the user are ``CLIError`` (or data and
config errors, and the system's refusals of a named file): one line on stderr and exit code
2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

COMMANDS = {
    "train": "enn.cli.train",
    "evaluate": "enn.cli.train",
    "compare": "enn.cli.train",
    "data": "enn.cli.data",
    "bench": "enn.cli.bench",
    "report": "enn.cli.analysis",
    "explain": "enn.cli.analysis",
    "demo": "enn.cli.demo",
}
# The optional dependencies by the extra of pyproject.toml that installs them.
EXTRAS = {
    "lightning": "train",
    "tensorboard": "train",
    "yaml": "train",
    "tqdm": "train",
    "sklearn": "train",
    "matplotlib": "analysis",
    "scipy": "analysis",
}
# Errors meant for the user that the library's packages define, by module.
USER_ERRORS = {
    "enn.data.paths": ("DataIntegrityError", "DataMissingError"),
    "enn.models.config": ("ConfigError",),
}


class CLIError(Exception):
    """A problem with the user's request, reported as one line."""


def at_least(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (``--repeats 0`` is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``enn train: error: ...``), without the usage;
    the subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_environment() -> None:
    """Environment variables the command line reads, checked before anything runs."""
    from ..ops.engram import native

    try:
        native.setting()
    except ValueError as err:
        raise CLIError(str(err)) from err


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = Parser(
        prog="enn", description="Engram Neural Network: train, compare, explain, benchmark."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module in modules:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parse(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    if args is None:
        return 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command)
            check_environment()
            return int(args.func(args) or 0)
    except user_errors() as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"enn {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # a file or folder the system refused: unreadable, not a folder...
        if err.filename is None:
            raise
        print(f"enn {args.command}: error: {err.strerror or err}: {err.filename}",
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        package = (err.name or "").partition(".")[0]
        if package not in EXTRAS:
            raise
        extra = EXTRAS[package]
        print(
            f"enn {args.command}: error: needs {package!r}, from the {extra!r} extra: "
            f"pip install 'engram-nn[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"enn {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warnings(command: str):
    """Warnings as the command's other messages: one line, without the source location."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"enn {command}: warning: {message}", file=sys.stderr)

    return show


def user_errors() -> tuple[type[Exception], ...]:
    """``CLIError`` and the user errors of the packages loaded so far: only a loaded module can
    have raised its errors, and loading them all would need every extra for every command."""
    errors = [CLIError]
    for module, names in USER_ERRORS.items():
        if module in sys.modules:
            errors += [getattr(sys.modules[module], name) for name in names]
    return tuple(errors)


def _parse(argv: list[str]) -> argparse.Namespace | None:
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    # Config overrides (key=value) may stand anywhere among the options.
    args, extra = parser.parse_known_args(argv)
    overrides = [a.removeprefix("--") for a in extra if "=" in a and not a.startswith("-=")]
    unknown = [a for a in extra if a.removeprefix("--") not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        prog = f"enn {args.command}" if args.command else "enn"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown or overrides)}\n")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    if args.command is None:
        parser.print_help()
        return None
    return args

