"""The quiet-log switch that this repository's scripts opt into: the known-harmless messages of
the pinned stack (``requirements.txt``), filtered in one place.

Every run with the pinned torch / Detectron2 / fvcore / setuptools prints the same few warnings
that say nothing about the run: deprecations inside those libraries, a CUDA probe on a CPU
machine, a missing CUDA runtime for Detectron2's compiled ops that no model here uses.
:func:`quiet_logs` hides exactly these: each warning by its message, category and the module
that issues it, each log line by its logger and message. Anything else, ours or another
library's, is shown as before. Importing ``defeat`` changes none of this: a script opts in, once
its arguments are read (this module imports without torch)::

    from defeat.engine.quiet import load_defeat

    load_defeat()  # imports defeat (torch, Detectron2) with their import-time warnings filtered

or, around imports of its own::

    with warnings.catch_warnings(record=True) as early:  # Detectron2's import-time warnings
        from defeat.engine.quiet import quiet_logs
    quiet_logs(early)

``DEFEAT_SHOW_ALL_WARNINGS=1`` in the environment turns the filtering off; the scripts say so
in one INFO line at start (:func:`announce`).
"""

import logging
import os
import re
import sys
import warnings
from typing import NamedTuple, Optional, Pattern, Sequence, Tuple

from ..errors import env_flag

__all__ = [
    "SHOW_ALL_ENV",
    "KNOWN_WARNINGS",
    "KNOWN_LOG_LINES",
    "CUDA_OPS_ROW",
    "filtering_enabled",
    "install",
    "uninstall",
    "quiet_logs",
    "load_defeat",
    "announce",
]

SHOW_ALL_ENV = "DEFEAT_SHOW_ALL_WARNINGS"


class KnownWarning(NamedTuple):
    """A ``warnings.warn`` call of the pinned stack: ``message`` and ``module`` are regular
    expressions matched at the start of the message and of the issuing module's name."""

    message: str
    category: type
    module: str
    why: str


class KnownLogLine(NamedTuple):
    """A log record of the pinned stack: ``logger`` is the exact logger name, ``message`` a
    regular expression matched at the start of the formatted message."""

    logger: str
    message: str
    why: str


KNOWN_WARNINGS: Tuple[KnownWarning, ...] = (
    KnownWarning(
        r"`torch\.jit\.script` is deprecated",
        FutureWarning,
        r"torch\.jit\._script$",
        "fvcore scripts its focal losses when Detectron2 imports it (twice per process)",
    ),
    KnownWarning(
        r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing argument",
        UserWarning,
        r"torch\.functional$",
        "Detectron2's anchor generator relies on meshgrid's current default ('ij'), which it means",
    ),
    KnownWarning(
        r"pkg_resources is deprecated as an API",
        UserWarning,
        r"",  # reported at whichever module imports detectron2.model_zoo first
        "detectron2.model_zoo imports pkg_resources (setuptools<81 is pinned for it)",
    ),
)

KNOWN_LOG_LINES: Tuple[KnownLogLine, ...] = (
    KnownLogLine(
        "torch.utils.cpp_extension",
        r"No CUDA runtime is found, using CUDA_HOME=",
        "torch looks for a CUDA toolkit when Detectron2 collects its environment; a CPU run needs none",
    ),
    KnownLogLine(
        "torch.fx._symbolic_trace",
        r"is_fx_tracing will return true for both fx\.symbolic_trace and torch\.export",
        "Detectron2's ROI pooler calls is_fx_tracing() outside any tracing, where its answer is right",
    ),
)

# The ``detectron2._C`` row of the environment table that ``default_setup`` logs (logger
# ``detectron2``): the wheel's compiled ops were built against CUDA 12's runtime, which a CPU
# machine lacks. None of this project's models uses them (ROIAlign and NMS come from torchvision);
# COCO evaluation falls back to pycocotools (Detectron2 says so). The row is rewritten to say
# this; any other failure of ``detectron2._C`` (an ABI mismatch, ...) is shown unchanged.
CUDA_OPS_ROW = re.compile(
    r"^(detectron2\._C\s+)not built correctly: (libcudart\.so\.\d+): cannot open shared object file: "
    r"No such file or directory$",
    re.MULTILINE,
)
CUDA_OPS_NOTE = r"\1not loaded (\2 not found): its ops are not used by DeFeat's models (known-harmless)"


class _KnownLogFilter(logging.Filter):
    """Drops the records whose message matches one of ``patterns``; rewrites the
    ``detectron2._C`` row of the environment table (:data:`CUDA_OPS_ROW`)."""

    def __init__(self, patterns: Tuple[Pattern, ...] = (), rewrite_cuda_row: bool = False):
        super().__init__()
        self.patterns = patterns
        self.rewrite_cuda_row = rewrite_cuda_row

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        if any(p.match(message) for p in self.patterns):
            return False
        if self.rewrite_cuda_row and "detectron2._C" in message:
            rewritten = CUDA_OPS_ROW.sub(CUDA_OPS_NOTE, message)
            if rewritten != message:
                record.msg, record.args = rewritten, ()
        return True


def _log_filters():
    """``{logger name: filter}`` of the known log lines (one filter object per logger, built once)."""
    if not hasattr(_log_filters, "cache"):
        by_logger = {}
        for line in KNOWN_LOG_LINES:
            by_logger.setdefault(line.logger, []).append(re.compile(line.message))
        filters = {name: _KnownLogFilter(tuple(patterns)) for name, patterns in by_logger.items()}
        filters["detectron2"] = _KnownLogFilter(rewrite_cuda_row=True)
        _log_filters.cache = filters
    return _log_filters.cache


def filtering_enabled(environ: Optional[dict] = None) -> bool:
    """False when ``$DEFEAT_SHOW_ALL_WARNINGS`` is true (:func:`defeat.errors.env_flag`)."""
    return not env_flag(SHOW_ALL_ENV, environ)


def install(environ: Optional[dict] = None) -> bool:
    """Hide the known-harmless warnings and log lines (idempotent); nothing when
    ``$DEFEAT_SHOW_ALL_WARNINGS`` is set. Returns whether the filters are installed."""
    if not filtering_enabled(environ):
        return False
    for w in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=w.message, category=w.category, module=w.module)
    for name, log_filter in _log_filters().items():
        logger = logging.getLogger(name)
        if log_filter not in logger.filters:
            logger.addFilter(log_filter)
    return True


def uninstall() -> None:
    """Take the log filters off again (the warning filters stay: ``warnings.catch_warnings``
    scopes those)."""
    for name, log_filter in _log_filters().items():
        logging.getLogger(name).removeFilter(log_filter)


_announced = False


def announce(logger: Optional[logging.Logger] = None) -> bool:
    """Say once per process, at INFO, that the known-harmless messages are hidden and how to
    see them (nothing when they are shown). Returns whether the line was logged now."""
    global _announced
    if _announced or not filtering_enabled():
        return False
    _announced = True
    (logger or logging.getLogger("defeat")).info(
        "Known-harmless messages of the pinned torch/Detectron2/fvcore stack are hidden (torch.jit.script and "
        "pkg_resources deprecations, torch.meshgrid indexing, is_fx_tracing, 'No CUDA runtime is found'; the "
        "detectron2._C libcudart row is annotated); set %s=1 to see them",
        SHOW_ALL_ENV,
    )
    return True


# The warning filters as they stood when this module was first imported: the libraries imported
# before it (torch, numpy, ...) add their own, which a script's ``catch_warnings`` block around
# its imports would drop on exit; :func:`quiet_logs` puts them back.
_FILTERS_AT_IMPORT = tuple(warnings.filters)


def quiet_logs(early: Sequence[warnings.WarningMessage] = ()) -> bool:
    """The scripts' one call: the libraries' own warning filters that the script's
    ``catch_warnings`` block dropped are restored, :func:`install`, then the warnings of ``early``
    (recorded while the script imported ``defeat`` and Detectron2, see the module docstring) that
    the filters let through are shown as Python would have shown them. Returns whether the
    known-harmless messages are hidden."""
    warnings.filters[:0] = [f for f in _FILTERS_AT_IMPORT if f not in warnings.filters]
    warnings._filters_mutated()
    installed = install()
    for w in early:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, module=_module_of(w.filename))
    return installed


def _module_of(filename: str) -> str:
    """The dotted module name of a source file under ``sys.path`` (``torch.jit._script``), for
    the module patterns of the filters; the file name without ``.py`` otherwise."""
    path = os.path.abspath(filename)
    best = ""
    for root in sys.path:
        root = os.path.abspath(root or ".")
        if path.startswith(root + os.sep) and len(root) > len(best):
            best = root
    rel = os.path.relpath(path, best) if best else os.path.basename(path)
    rel = rel[:-3] if rel.endswith(".py") else rel
    return rel.replace(os.sep, ".").removesuffix(".__init__")


def load_defeat() -> bool:
    """A command's heavy imports, once its arguments are read: ``defeat`` with its registration
    (``defeat.finish_import``: torch, Detectron2), the warnings they raise on import recorded and
    then filtered by :func:`quiet_logs`; the warning filters the libraries add on import are kept.
    Returns whether the known-harmless messages are hidden."""
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as early:
        import defeat

        defeat.finish_import()
        added = [f for f in warnings.filters if f not in before]
    warnings.filters[:0] = [f for f in added if f not in warnings.filters]
    warnings._filters_mutated()
    return quiet_logs(early)
