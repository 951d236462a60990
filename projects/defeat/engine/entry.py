"""The one way every entry point ends on a user's mistake: one line on stderr, exit status 1.

Every script's ``if __name__ == "__main__":`` block calls :func:`run_entry_point` (a test reads
each of them): a :class:`~defeat.errors.DeFeatError`, an expected file error
(``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``)
or a ``SystemExit`` with a message becomes ``<script>: error: <message>`` on stderr and exit
status 1, without a traceback; so does one of these raised in a worker process of
``detectron2.engine.launch`` (``--num-gpus`` > 1), which reaches the parent as torch's
``ProcessRaisedException`` holding the worker's traceback as text. ``DEFEAT_TRACEBACK=1`` (a
boolean, ``defeat.errors.env_flag``) lets the error through with its traceback, for debugging.
Other exceptions (bugs) keep theirs.
"""

import importlib
import os
import re
import sys
from typing import Any, Callable, Optional, Tuple

from ..errors import DeFeatError, EnvironmentVariableError, env_flag

__all__ = ["EXPECTED_ERRORS", "TRACEBACK_ENV", "error_line", "run_entry_point", "worker_error"]

TRACEBACK_ENV = "DEFEAT_TRACEBACK"
# What a user's input causes; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (DeFeatError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)

_FILE_FIXES = {
    FileNotFoundError: "check the path (relative paths start at the current folder)",
    IsADirectoryError: "give a file, not a folder",
    NotADirectoryError: "a folder on the path is a file; check the path",
    PermissionError: "change its permissions, or choose another path",
}


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and not isinstance(error, DeFeatError) and error.strerror:
        fix = next((f for kind, f in _FILE_FIXES.items() if isinstance(error, kind)), "")
        where = f": {error.filename!r}" if error.filename else ""
        return f"{error.strerror}{where}" + (f"; {fix}" if fix else "")
    return str(error) or type(error).__name__


# The last line of a Python traceback: ``package.module.ErrorClass: message`` (at column 0).
_RAISED = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*): (.*)$")


def _raised_class(dotted: str) -> Optional[type]:
    module, _, name = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module or "builtins"), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def worker_error(error: BaseException) -> Optional[str]:
    """``(worker N) <message>`` when ``error`` is a ``ProcessRaisedException`` whose worker failed
    on an :data:`EXPECTED_ERRORS` error (read from the end of the traceback text it carries; the
    message may span lines); None otherwise."""
    if type(error).__name__ != "ProcessRaisedException":
        return None
    lines = str(error).rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        found = _RAISED.match(lines[i])
        if found is None:
            continue
        cls = _raised_class(found.group(1))
        if cls is None or not issubclass(cls, EXPECTED_ERRORS):
            return None
        index = getattr(error, "error_index", "?")
        return f"(worker {index}) " + " ".join([found.group(2), *lines[i + 1 :]])
    return None


def error_line(script: str, error: object) -> str:
    """``<script>: error: <message>`` on one line (``error``: an exception or a message; line
    breaks and runs of spaces in it become one space; a message that already starts with the
    script's prefix keeps it once)."""
    text = error if isinstance(error, str) else _message(error)
    text = " ".join(text.split())
    prefix = f"{script}: error: "
    return text if text.startswith(prefix) else prefix + text


def _keep_traceback() -> Tuple[bool, str]:
    """Whether ``DEFEAT_TRACEBACK`` asks for the traceback, and a note when it is not a boolean."""
    try:
        return env_flag(TRACEBACK_ENV), ""
    except EnvironmentVariableError as e:
        return False, f" [{e}]"


def run_entry_point(main: Callable[..., Any], *args: Any, script: str = "", **kwargs: Any) -> Any:
    """``main(*args, **kwargs)``, with a user's mistake ended as one line and exit status 1.

    Args:
        script: the name in the line (default: the file name of ``sys.argv[0]``).
    Returns:
        What ``main`` returns.
    Raises:
        SystemExit: status 1 after the line on stderr (an :data:`EXPECTED_ERRORS` error, or a
            ``SystemExit`` whose code is a message); argparse's status 2 and numeric exits pass as
            they are. With ``DEFEAT_TRACEBACK=1`` the error itself is raised.
    """
    script = script or os.path.basename(sys.argv[0] or "defeat")
    try:
        return main(*args, **kwargs)
    except EXPECTED_ERRORS as e:
        keep, note = _keep_traceback()
        if keep:
            raise
        line = error_line(script, e) + note
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        keep, note = _keep_traceback()
        if keep:
            raise
        line = error_line(script, e.code) + note
    except Exception as e:
        message = worker_error(e)
        if message is None:
            raise
        keep, note = _keep_traceback()
        if keep:
            raise
        line = error_line(script, message) + note
    sys.stderr.flush()
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(1)
