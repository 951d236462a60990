"""Argument handling the command-line tools share: one-line errors, figure paths, and the one
output guard of ``defeat.engine.outputs`` (re-exported here for the tools). Imports neither torch
nor matplotlib: the tools read their arguments with it before their heavy imports."""

import argparse
import logging
import os
from typing import NoReturn, Optional

from ..engine.outputs import check_output_files, overwritten_input, same_file
from ..engine.quiet import announce
from ..errors import OutputError

__all__ = [
    "FIGURE_FORMATS",
    "LOSS_FIGURE_MIN_SIZE",
    "ToolArgumentParser",
    "add_overwrite_argument",
    "at_least",
    "input_file_problem",
    "distinct",
    "check_figure_output",
    "same_file",
    "overwritten_input",
    "setup_tool_logging",
]

FIGURE_FORMATS = ("png", "jpg", "jpeg", "pdf", "svg")  # the file types (extensions) a figure can be saved as
LOSS_FIGURE_MIN_SIZE = (300, 200)  # (width, height) in pixels below which a loss figure's axes and legends do not fit


class ToolArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``<tool>: error: <message> (--help for usage)``,
    on stderr with exit status 2 (argparse's own errors included)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")


def input_file_problem(path: str, what: str) -> Optional[str]:
    """Why ``path`` (named ``what`` in the message, e.g. ``"--image"``) is not a file to read, or
    None: not found, or a folder (named as such, with the file it wants)."""
    if os.path.isdir(path):
        return f"{what} {path!r} is a folder; give the file in it"
    if not os.path.isfile(path):
        return f"{what} not found: {path!r}"
    return None


def at_least(low: int):
    """An argparse ``type``: an integer ``>= low`` (argparse's one-line error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def distinct(parser: argparse.ArgumentParser, option: str, values) -> None:
    """Refuse (``parser.error``) a list option that repeats a value."""
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        parser.error(f"{option} lists {seen[0]!r} more than once: {list(values)}")


def add_overwrite_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``--overwrite`` flag of a tool that keeps existing output files unless asked."""
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist already")
    return parser


def check_figure_output(
    parser: argparse.ArgumentParser, path: str, inputs=(), overwrite: bool = False, option: str = "--output"
) -> None:
    """Refuse (``parser.error``) a figure path of an unknown type, a folder, an input (paths in
    ``inputs``) or an existing file without ``overwrite``."""
    ext = os.path.splitext(path)[1][1:].lower()
    if ext not in FIGURE_FORMATS:
        parser.error(f"{option} {path!r}: the file type must be one of {', '.join(FIGURE_FORMATS)} (its extension)")
    if os.path.isdir(path):
        parser.error(f"{option} {path!r} is a folder; give a file path such as {os.path.join(path, 'figure.png')}")
    try:
        check_output_files([path], inputs, overwrite, option)
    except OutputError as e:
        parser.error(str(e))


def setup_tool_logging() -> None:
    """INFO and above on stderr as ``LEVEL logger: message``, and the line that says which
    known-harmless messages of the pinned stack are hidden (``defeat.engine.quiet``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    announce()
