"""Argument handling the command-line tools share: one-line errors, never write over an input."""

import argparse
import os
from typing import NoReturn, Optional

__all__ = ["ToolArgumentParser", "same_file", "overwritten_input"]


class ToolArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``<tool>: error: <message> (--help for usage)``,
    on stderr with exit status 2 (argparse's own errors included)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name the same file (links resolved when both exist)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def overwritten_input(output: str, **inputs: str) -> Optional[str]:
    """An error message if ``output`` is one of the named ``inputs`` (empty ones skipped), else None.

    ``overwritten_input("a.pth", checkpoint="a.pth")`` -> ``"the output 'a.pth' is the
    checkpoint; choose another file name"``.
    """
    for what, path in inputs.items():
        if path and same_file(output, path):
            return f"the output {output!r} is the {what.replace('_', ' ')}; choose another file name"
    return None
