"""Training curves from a Detectron2 ``metrics.json``, drawn with matplotlib (Agg, no display).

``metrics.json`` (Detectron2's ``JSONWriter``) holds one JSON dict per line: training rows
(``iteration``, ``loss_*``, ``defeat/kd_weight``, ...) and evaluation rows (``bbox/AP``, ...).
Figures are ``matplotlib.figure.Figure`` objects on an Agg canvas: nothing touches pyplot's
global state or a display.
"""

import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..engine.kd_balance import KD_DOMINANCE_RATIO, KD_PREFIX, loss_sums
from ..engine.metrics_file import read_metrics
from .cli import FIGURE_FORMATS, LOSS_FIGURE_MIN_SIZE

__all__ = [
    "DPI",
    "MIN_SIZE",
    "IMAGE_FORMATS",
    "read_metrics",
    "series",
    "balance_series",
    "loss_panels",
    "loss_figure",
    "save_figure",
]

KD_WEIGHT = "defeat/kd_weight"
DPI = 100  # figure pixels = inches * DPI; sizes are given in pixels
MIN_SIZE = LOSS_FIGURE_MIN_SIZE  # (width, height) in pixels below which the axes and legends do not fit
IMAGE_FORMATS = FIGURE_FORMATS  # file extensions the figures can be saved as
BALANCE = "KD sum / detection sum"
Series = Tuple[str, np.ndarray, np.ndarray]  # label, iterations, values


class Panel(NamedTuple):
    title: str
    curves: List[Series]
    y_range: Optional[Tuple[float, float]] = None  # fixed y range
    threshold: Optional[float] = None  # a dashed horizontal line (and a log y axis)


def series(rows: Sequence[Dict], key: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(iterations, values)`` of ``key``, sorted by iteration; a later row wins on a repeated
    iteration (a resumed run); non-finite values are dropped."""
    points = {}
    for r in rows:
        if key in r and "iteration" in r and isinstance(r[key], (int, float)) and math.isfinite(r[key]):
            points[int(r["iteration"])] = float(r[key])
    its = np.array(sorted(points), dtype=np.float64)
    return its, np.array([points[i] for i in sorted(points)], dtype=np.float64)


def balance_series(rows: Sequence[Dict]) -> Tuple[np.ndarray, np.ndarray]:
    """``(iterations, KD sum / detection sum)`` of the rows with both kinds of losses
    (``defeat.engine.kd_balance.loss_sums``: ``loss_defeat_*`` over the other ``loss_*``), sorted
    by iteration, a later row winning on a repeated iteration; non-finite values are dropped."""
    points = {}
    for r in rows:
        losses = {k: v for k, v in r.items() if k.startswith("loss_") and isinstance(v, (int, float))}
        if "iteration" not in r or not any(k.startswith(KD_PREFIX) for k in losses):
            continue
        kd, det = loss_sums(losses)
        if det > 0 and math.isfinite(kd / det):
            points[int(r["iteration"])] = kd / det
    its = sorted(points)
    return np.array(its, dtype=np.float64), np.array([points[i] for i in its], dtype=np.float64)


def loss_panels(rows: Sequence[Dict]) -> List[Panel]:
    """The panels with data, in order: the student's own losses, the DeFeat neck losses, the
    DeFeat head losses (``loss_defeat_*``), their balance (:func:`balance_series`, log scale,
    the training log's warning threshold dashed) and the KD weight schedule (y fixed to [0, 1.05])."""
    keys = sorted({k for r in rows for k in r if k.startswith("loss_")})
    groups = [
        ("student losses", [k for k in keys if not k.startswith("loss_defeat_")], None),
        ("DeFeat neck losses (weighted, scheduled)", [k for k in keys if k.startswith("loss_defeat_neck")], None),
        ("DeFeat head losses (weighted, scheduled)", [k for k in keys if k.startswith("loss_defeat_head")], None),
        (f"balance: {BALANCE} (loss_defeat_* over the student's loss_*)", [BALANCE], None),
        ("KD weight (defeat/kd_weight)", [KD_WEIGHT], (0.0, 1.05)),
    ]
    panels = []
    for title, names, y_range in groups:
        curves = [(k, *(balance_series(rows) if k == BALANCE else series(rows, k))) for k in names]
        curves = [c for c in curves if len(c[1])]
        if curves:
            panels.append(Panel(title, curves, y_range, KD_DOMINANCE_RATIO if names == [BALANCE] else None))
    return panels


def loss_figure(rows: Sequence[Dict], width: int = 1000, height: int = 900) -> Figure:
    """Stacked panels (shared iteration axis from 0) of ``width x height`` pixels in total.

    Curve ``i`` of a panel is drawn in matplotlib's colour ``C{i}``; its legend entry (outside
    the axes, on the right, so it never covers a curve) gives the key and its last value.

    Raises:
        ValueError: no training row has a loss, or the size is below :data:`MIN_SIZE`.
    """
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ValueError(f"a loss figure needs at least {MIN_SIZE[0]}x{MIN_SIZE[1]} pixels, got {width}x{height}")
    panels = loss_panels(rows)
    if not panels:
        raise ValueError("no training rows with losses in these metrics")
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, curves, y_range, threshold) in zip(axes, panels):
        for i, (label, x, y) in enumerate(curves):
            ax.plot(x, y, color=f"C{i}", linewidth=1.5, label=f"{label} ({y[-1]:.3g})")
        if threshold is not None:  # log scale from below 1x to above the threshold, decades labelled "10x"
            ax.axhline(
                threshold, color="0.4", linestyle="--", linewidth=1.0, label=f"KD dominates above {threshold:g}x"
            )
            ax.axhline(1.0, color="0.7", linestyle=":", linewidth=1.0)
            ax.set_yscale("log")
            values = np.concatenate([c[2] for c in curves])
            ax.set_ylim(min(values.min(), 1.0) / 2, max(values.max(), threshold) * 2)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, loc="left", fontsize=9)
        ax.set_ylabel("weight" if y_range else "ratio" if threshold is not None else "loss", fontsize=8)
        ax.set_xlim(left=0)
        if y_range:
            ax.set_ylim(*y_range)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)
    axes[-1].set_xlabel("iteration", fontsize=8)
    return fig


def save_figure(fig: Figure, path: str) -> None:
    """Write ``fig`` to ``path`` (format from the extension, one of :data:`IMAGE_FORMATS`) at the
    figure's own pixel size; the folder is created if needed."""
    ext = os.path.splitext(path)[1][1:].lower()
    if ext not in IMAGE_FORMATS:
        raise ValueError(f"cannot write {path!r}: the extension must be one of {list(IMAGE_FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, format=ext)
