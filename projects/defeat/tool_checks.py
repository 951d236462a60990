"""Argument checks the command-line tools share: never write over an input file."""
import os
from typing import Optional

__all__ = ["same_file", "overwritten_input"]


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
