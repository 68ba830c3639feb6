"""Entry point of the ``pydamon`` command.

Each subcommand lives in its own module under :mod:`pydamon.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (taking the parsed arguments and
returning an exit code). Errors a user can cause raise :class:`CliError` (or one of the known
error types below) and are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterator, Sequence

#: The module of each top-level command, so that a command imports only its own module (a light
#: command such as ``status`` must not pay for numpy and every other command's imports).
COMMAND_OF: dict[str, str] = {
    "demo": "pydamon.cli.demo",
    "module": "pydamon.cli.module",
    "record": "pydamon.cli.record",
    "report": "pydamon.cli.report",
    "start": "pydamon.cli.monitor",
    "stop": "pydamon.cli.monitor",
    "status": "pydamon.cli.monitor",
    "tune": "pydamon.cli.monitor",
    "schemes": "pydamon.cli.schemes",
    "convert": "pydamon.cli.convert",
    "completion": "pydamon.cli.completion",
    "features": "pydamon.cli.features",
}

#: Subcommand modules, in the order ``pydamon --help`` lists them.
COMMAND_MODULES: list[str] = [
    "pydamon.cli.demo",
    "pydamon.cli.module",
    "pydamon.cli.record",
    "pydamon.cli.report",
    "pydamon.cli.monitor",
    "pydamon.cli.schemes",
    "pydamon.cli.convert",
    "pydamon.cli.completion",
    "pydamon.cli.features",
]

#: Exit codes: 0 success, 1 runtime failure, 2 usage error (argparse's), 3 missing feature or
#: privilege, 130 interrupted.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_INTERRUPTED = 130


def failure_exit_code(err: BaseException) -> int:
    """The exit code of what stopped a command: 3 for a kernel feature or a privilege that is
    missing (:class:`~pydamon.core.errors.FeatureMissing`, ``PermissionError``), else 1; the
    same in every command."""
    from pydamon.core.errors import FeatureMissing

    return EXIT_UNSUPPORTED if isinstance(err, FeatureMissing | PermissionError) else EXIT_FAILURE


class CliError(Exception):
    """An error to show the user as one line; ``exit_code`` is the process exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors about a misspelt option or choice name the closest one
    (``unrecognized arguments: --damos_acess_rate (did you mean --damos_access_rate?)``)."""

    def error(self, message: str) -> typing.NoReturn:
        """One line, no usage dump: what is wrong, the closest right spelling, where to look."""
        hint = self._suggestion(message)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}{hint} (see '{self.prog} --help')\n")

    def _suggestion(self, message: str) -> str:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            known = re.findall(r"'([^']*)'", choice.group(2))
            close = difflib.get_close_matches(choice.group(1), known, n=1)
            return f"; did you mean {close[0]!r}?" if close else ""
        if not message.startswith("unrecognized arguments:"):
            return ""
        options = sorted(set(_option_strings(self)))
        hints = []
        for word in message.split(":", 1)[1].split():
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1)
                if close:
                    hints.append(f"{word}: did you mean {close[0]}?")
        return f" ({'; '.join(hints)})" if hints else ""


def _option_strings(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every option of ``parser`` and of its subcommands' parsers."""
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _option_strings(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or only ``command``'s module's part of it when a command is given."""
    parser = Parser(
        prog="pydamon",
        description="User-space DAMON: data access monitoring and access-aware memory management.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMAND_OF:
        register = importlib.import_module(COMMAND_OF[command]).register
        if "only" in inspect.signature(register).parameters:
            register(sub, only=command)
        else:
            register(sub)
    else:
        for name in COMMAND_MODULES:
            importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from pydamon import __version__

    return f"pydamon {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except CliError as err:
        print(f"pydamon {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"pydamon {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except (OSError, ValueError) as err:
        # Known failure kinds (bad files, bad values) still get one line, not a traceback.
        print(f"pydamon {args.command}: error: {err}", file=sys.stderr)
        from pydamon.core.errors import FeatureMissing

        return EXIT_UNSUPPORTED if isinstance(err, FeatureMissing) else EXIT_FAILURE


if __name__ == "__main__":
    # Run through the package module, so that command modules' ``CliError`` (imported from
    # pydamon.cli.main) is the class caught here, not a copy defined in ``__main__``.
    from pydamon.cli.main import main as _package_main

    sys.exit(_package_main())
