"""The command line's grammar, on argparse from the standard library.

Every `rgrid` call pays for its CLI framework before it does anything, and a
warm `rgrid run` is a few hundred milliseconds in all; argparse imports in a
few, where Typer and its Click took about 35 ms. Commands are plain
functions taking their options as keyword arguments, so they stay typed and
callable on their own. A usage error is one line and exit code 2, as
everywhere else in the CLI.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rgrid.cli.console import out
from rgrid.errors import UsageError

Handler = Callable[..., int | None]

# Where parse results keep what the dispatcher needs besides the options.
_HANDLER = "_rgrid_handler"
_PASSES = "_rgrid_passes"
_PARSER = "_rgrid_parser"

# What a command does with arguments it does not know.
SCRIPT_ARGS = "script"  # everything after SCRIPT belongs to the script
EXTRA_ARGS = "extra"  # unknown options go on to another program (`ray start`)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default where it has a
    meaningful one (not for flags, nor for options that are off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and not isinstance(default, bool)  # 1.0 == True: compare types, not values
            and default not in (None, [], argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse that fails as rgrid does (one line, exit code 2, through
    the CLI's error path) and prints its help through Rich."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")

    def print_help(self, file: Any = None) -> None:
        out.print(self.format_help(), markup=False, highlight=False, end="", soft_wrap=True)


class Commands:
    """One level of subcommands of a parser: `rgrid X`, or `rgrid local X`."""

    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self._sub = parser.add_subparsers(metavar="COMMAND", parser_class=Parser)

    def add(self, name: str, handler: Handler, passes: str | None = None) -> Parser:
        """A command running handler; its docstring is the help (its first
        sentence in listings). Options are added to the returned parser with
        `dest` named as the handler's keyword arguments."""
        doc = inspect.cleandoc(handler.__doc__ or "")
        summary = " ".join(doc.split())
        summary = summary[: summary.find(". ") + 1 or None]
        parser: Parser = self._sub.add_parser(name, help=summary, description=doc)
        parser.set_defaults(**{_HANDLER: handler, _PASSES: passes, _PARSER: parser})
        return parser

    def group(self, name: str, summary: str, default: Handler | None = None) -> Commands:
        """A command with subcommands of its own. Without one, it runs
        default, or prints its help."""
        parser: Parser = self._sub.add_parser(name, help=summary, description=summary)
        parser.set_defaults(**{_HANDLER: default, _PASSES: None, _PARSER: parser})
        return Commands(parser)


def json_flag(parser: Parser) -> None:
    parser.add_argument("--json", dest="json_out", action="store_true", help="Print JSON, for scripts.")


def script_and_args(parser: Parser, script_help: str, args_help: str) -> None:
    """SCRIPT, then everything after it, untouched, as the script's ARGS
    (for a command added with passes=SCRIPT_ARGS)."""
    parser.add_argument("script", help=script_help)
    rest = parser.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help=args_help)
    rest.required = False  # argparse counts a trailing REMAINDER as required


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value

    parse.__name__ = "int"
    return parse


def _script_args(argv: Sequence[str], parsed: list[str]) -> list[str]:
    """The script's arguments exactly as typed: argparse (3.11) drops the
    first `--` even when it follows the script, where it is the script's."""
    start = len(argv) - len(parsed)
    return ["--", *parsed] if argv[start - 1] == "--" else parsed


def dispatch(root: Parser, argv: Sequence[str]) -> int:
    """Parse argv and run its command; returns the exit code."""
    namespace, unknown = root.parse_known_args(argv)
    options = vars(namespace)
    handler: Handler | None = options.pop(_HANDLER, None)
    passes = options.pop(_PASSES, None)
    parser: Parser = options.pop(_PARSER, root)
    if handler is None:
        parser.print_help()
        return 2
    if passes == SCRIPT_ARGS:
        options["args"] = _script_args(argv, options["args"])
    if passes == EXTRA_ARGS:
        options["extra"] = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    code = handler.__code__
    accepted = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    result = handler(**{k: v for k, v in options.items() if k in accepted})
    return result if isinstance(result, int) else 0
