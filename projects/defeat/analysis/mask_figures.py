"""Figures of DeFeat's object masks and teacher-student feature differences (matplotlib, Agg).

Images are ``[H, W, 3]`` uint8 RGB arrays in the padded frame the model sees. A level's map
``[H_l, W_l]`` covers that frame with one cell per ``stride x stride`` pixels. Figures are
``matplotlib.figure.Figure`` objects on an Agg canvas (no display, no pyplot state).
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .loss_figures import DPI

__all__ = [
    "LevelView",
    "upsample_cells",
    "mask_panel",
    "mask_figure",
    "OBJECT_COLOR",
    "BOX_COLOR",
    "OTHER_BOX_COLOR",
    "HEAT_CMAP",
    "figure_rgb",
]

OBJECT_COLOR = (60, 200, 60)  # RGB green: object cells
BOX_COLOR = (1.0, 0.86, 0.0)  # matplotlib RGB yellow: GT boxes on the panel's level
OTHER_BOX_COLOR = (0.63, 0.63, 0.63)  # grey: GT boxes of other levels
HEAT_CMAP = "inferno"


@dataclass
class LevelView:
    """What one FPN level's panels show.

    Attributes:
        name, stride: the level (``"p3"``, 8).
        mask: 0/1 ``[H_l, W_l]`` object mask of the image on this level.
        on_level: bool ``[K]``: which GT boxes the mask is drawn from.
        diff: optional ``[H_l, W_l]`` per-cell ``mean_c (adapter(S) - T)^2``.
        caption, diff_caption: panel titles.
    """

    name: str
    stride: int
    mask: np.ndarray
    on_level: np.ndarray
    caption: str
    diff: Optional[np.ndarray] = None
    diff_caption: str = ""


def upsample_cells(cells: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """Repeat each cell of a ``[H_l, W_l]`` map over its ``stride x stride`` pixels, cropped to
    ``[height, width]`` (the last row/column of a level may extend past the padded image)."""
    up = np.repeat(np.repeat(cells, stride, axis=0), stride, axis=1)[:height, :width]
    if up.shape != (height, width):  # a map smaller than the image: pad with zeros
        up = np.pad(up, ((0, height - up.shape[0]), (0, width - up.shape[1])))
    return up


def mask_panel(image: np.ndarray, mask: np.ndarray, stride: int, alpha: float = 0.55) -> np.ndarray:
    """``image`` with object cells of a 0/1 ``[H_l, W_l]`` mask tinted green, background dimmed."""
    m = upsample_cells(mask.astype(np.float32), stride, *image.shape[:2])[..., None]
    tint = np.array(OBJECT_COLOR, dtype=np.float32)
    img = image.astype(np.float32)
    out = m * ((1 - alpha) * img + alpha * tint) + (1 - m) * 0.45 * img
    return np.clip(out, 0, 255).astype(np.uint8)


def _boxes(ax, boxes: np.ndarray, color) -> None:
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.0))


def _panel(ax, image: np.ndarray, title: str, fontsize: float) -> None:
    height, width = image.shape[:2]
    ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()


def mask_figure(
    image: np.ndarray, boxes: np.ndarray, levels: Sequence[LevelView], title: str, panel_size: int = 256
) -> Figure:
    """Row 1: ``image`` with all ``boxes`` (XYXY pixels), then per level the mask panel with the
    level's boxes (yellow) and the others (grey). Row 2, if the levels have ``diff``: the heat
    maps of the differences on ONE colour scale shared by all levels (0 to the largest cell of
    any level) with its colour bar, so levels compare by colour.

    ``panel_size`` is each panel's longer side in pixels (the figure adds room for captions and
    the colour bar).
    """
    height, width = image.shape[:2]
    with_diff = any(lv.diff is not None for lv in levels)
    rows, cols = (2 if with_diff else 1), 1 + len(levels)
    aspect = height / width
    panel_w, panel_h = panel_size * min(1.0, 1 / aspect), panel_size * min(1.0, aspect)
    fontsize = float(np.clip(panel_size / 30, 5, 9))
    caption = 3 * fontsize  # pixels of caption above each panel
    fig_w = cols * panel_w + (0.45 * panel_size if with_diff else 0)
    fig = Figure(figsize=(fig_w / DPI, rows * (panel_h + caption) / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=1 / DPI, h_pad=1 / DPI, wspace=0.01, hspace=0.01)
    axes = fig.subplots(rows, cols, squeeze=False)

    _panel(axes[0, 0], image, title, fontsize)
    _boxes(axes[0, 0], boxes, BOX_COLOR)
    for lv, ax in zip(levels, axes[0, 1:]):
        _panel(ax, mask_panel(image, lv.mask, lv.stride), lv.caption, fontsize)
        _boxes(ax, boxes[~lv.on_level], OTHER_BOX_COLOR)
        _boxes(ax, boxes[lv.on_level], BOX_COLOR)
    if not with_diff:
        return fig

    _panel(axes[1, 0], (image * 0.35).astype(np.uint8), "mean_c (adapter(S) - T)^2", fontsize)
    vmax = max(float(np.max(lv.diff)) for lv in levels if lv.diff is not None)
    norm = Normalize(vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
    heat = None
    for lv, ax in zip(levels, axes[1, 1:]):
        h_l, w_l = lv.diff.shape
        heat = ax.imshow(
            lv.diff, cmap=HEAT_CMAP, norm=norm, interpolation="nearest", extent=(0, w_l * lv.stride, h_l * lv.stride, 0)
        )
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_title(lv.diff_caption, fontsize=fontsize)
        ax.set_axis_off()
        _boxes(ax, boxes[lv.on_level], BOX_COLOR)
    bar = fig.colorbar(heat, ax=list(axes[1, 1:]), fraction=0.05, pad=0.01)
    bar.ax.tick_params(labelsize=fontsize)
    bar.set_label("per cell, all levels", fontsize=fontsize)
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as an ``[H, W, 3]`` uint8 RGB array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
