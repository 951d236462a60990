"""Training curves from a Detectron2 ``metrics.json``, drawn with OpenCV (no plotting library).

``metrics.json`` (Detectron2's ``JSONWriter``) holds one JSON dict per line: training rows
(``iteration``, ``loss_*``, ``defeat/kd_weight``, ...) and evaluation rows (``bbox/AP``, ...).
Figures are ``[H, W, 3]`` uint8 BGR arrays.
"""
import json
import math
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["PALETTE", "read_metrics", "series", "line_chart", "loss_figure"]

# Distinct BGR colours, assigned to the curves of a panel in order.
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23), (127, 127, 127)]
KD_WEIGHT = "defeat/kd_weight"
Series = Tuple[str, np.ndarray, np.ndarray]  # label, iterations, values

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def read_metrics(path: str) -> List[Dict]:
    """The dicts of a ``metrics.json``; blank or truncated lines (a killed run) are skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def series(rows: Sequence[Dict], key: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(iterations, values)`` of ``key``, sorted by iteration; a later row wins on a repeated
    iteration (a resumed run); non-finite values are dropped."""
    points = {}
    for r in rows:
        if key in r and "iteration" in r and isinstance(r[key], (int, float)) and math.isfinite(r[key]):
            points[int(r["iteration"])] = float(r[key])
    its = np.array(sorted(points), dtype=np.float64)
    return its, np.array([points[i] for i in sorted(points)], dtype=np.float64)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    span = hi - lo if hi > lo else abs(hi) or 1.0
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return np.arange(math.floor(lo / step) * step, hi + step * 0.5, step)


def line_chart(curves: Sequence[Series], width: int, height: int, title: str = "",
               y_range: Tuple[float, float] = None, legend_bottom: bool = False) -> np.ndarray:
    """One panel: ``curves`` over a shared iteration axis starting at 0, with ticks, grid and a
    legend (top right, or bottom right). Curve ``i`` is drawn in ``PALETTE[i]``. ``y_range``
    fixes the y axis."""
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 58, 12, 24, 30
    x0, x1, y0, y1 = left, width - right, top, height - bottom  # plot area, y0 is the top
    cv2.putText(img, title, (left, 16), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    curves = [c for c in curves if len(c[1])]
    if not curves or x1 - x0 < 10 or y1 - y0 < 10:
        cv2.putText(img, "no data", (left, height // 2), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        return img
    xs = np.concatenate([c[1] for c in curves])
    ys = np.concatenate([c[2] for c in curves])
    xlo, xhi = min(0.0, float(xs.min())), float(xs.max())
    ylo, yhi = y_range if y_range else (min(0.0, float(ys.min())), float(ys.max()))
    xticks, yticks = _nice_ticks(xlo, xhi), _nice_ticks(ylo, yhi)
    if not y_range:
        ylo, yhi = float(min(ylo, yticks[0])), float(max(yhi, yticks[-1]))
    xhi = xhi if xhi > xlo else xlo + 1
    yhi = yhi if yhi > ylo else ylo + 1

    def px(x, y):
        u = x0 + (np.asarray(x) - xlo) / (xhi - xlo) * (x1 - x0)
        v = y1 - (np.asarray(y) - ylo) / (yhi - ylo) * (y1 - y0)
        return np.stack([u, v], axis=-1).round().astype(np.int32)

    for t in yticks:
        if ylo <= t <= yhi:
            (u, v), = px([xlo], [t])
            cv2.line(img, (x0, int(v)), (x1, int(v)), (225, 225, 225), 1)
            cv2.putText(img, f"{t:g}", (4, int(v) + 4), _FONT, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    for t in xticks:
        if xlo <= t <= xhi:
            (u, v), = px([t], [ylo])
            cv2.line(img, (int(u), y1), (int(u), y1 + 4), (60, 60, 60), 1)
            label = f"{t:g}"
            tw = cv2.getTextSize(label, _FONT, 0.38, 1)[0][0]
            cv2.putText(img, label, (int(u) - tw // 2, y1 + 17), _FONT, 0.38, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), (90, 90, 90), 1)
    cv2.putText(img, "iteration", (x1 - 60, height - 2), _FONT, 0.38, (60, 60, 60), 1, cv2.LINE_AA)

    for i, (_, x, y) in enumerate(curves):
        cv2.polylines(img, [px(x, y)], False, PALETTE[i % len(PALETTE)], 2, cv2.LINE_8)
    for i, (label, _, y) in enumerate(curves):  # legend: swatch, label and the last value
        v = (y1 - 6 - 16 * (len(curves) - 1 - i)) if legend_bottom else (y0 + 14 + 16 * i)
        text = f"{label} {y[-1]:.3g}"
        tw = cv2.getTextSize(text, _FONT, 0.4, 1)[0][0]
        u = x1 - tw - 30
        cv2.rectangle(img, (u - 4, v - 11), (x1 - 4, v + 4), (255, 255, 255), -1)
        cv2.line(img, (u, v - 4), (u + 18, v - 4), PALETTE[i % len(PALETTE)], 2)
        cv2.putText(img, text, (u + 22, v), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def loss_figure(rows: Sequence[Dict], width: int = 1000, height: int = 900) -> np.ndarray:
    """Stacked panels of ``width x height`` in total: the student's losses, the DeFeat neck and
    head losses (``loss_defeat_*``) and the KD weight schedule; panels without data are left out.
    """
    keys = sorted({k for r in rows for k in r if k.startswith("loss_")})
    groups = [
        ("student losses", [k for k in keys if not k.startswith("loss_defeat_")], None),
        ("DeFeat neck losses (weighted, scheduled)", [k for k in keys if k.startswith("loss_defeat_neck")], None),
        ("DeFeat head losses (weighted, scheduled)", [k for k in keys if k.startswith("loss_defeat_head")], None),
        ("KD weight (defeat/kd_weight)", [KD_WEIGHT], (0.0, 1.1)),
    ]
    panels = []
    for title, names, y_range in groups:
        curves = [(k, *series(rows, k)) for k in names]
        curves = [c for c in curves if len(c[1])]
        if curves:
            panels.append((title, curves, y_range))
    if not panels:
        raise ValueError("no training rows with losses in these metrics")
    heights = [height // len(panels)] * len(panels)
    heights[-1] += height - sum(heights)
    return np.concatenate(
        [line_chart(curves, width, h, title, y_range, legend_bottom=title.startswith("KD"))
         for (title, curves, y_range), h in zip(panels, heights)]
    )
