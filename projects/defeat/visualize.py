"""Draw DeFeat's object masks and teacher-student feature differences (numpy + OpenCV only).

Images are ``[H, W, 3]`` uint8 BGR arrays (OpenCV's order). A level's map ``[H_l, W_l]`` covers
the padded input image with one cell per ``stride x stride`` pixels.
"""
from typing import List, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "TITLE_HEIGHT",
    "upsample_cells",
    "mask_panel",
    "heat_panel",
    "draw_boxes",
    "titled",
    "grid",
]

TITLE_HEIGHT = 22  # pixels of the caption bar above every panel
OBJECT_COLOR = (60, 200, 60)  # BGR green: object cells
BOX_COLOR = (0, 220, 255)  # BGR yellow: GT boxes on the panel's level
OTHER_BOX_COLOR = (160, 160, 160)  # grey: GT boxes of other levels


def upsample_cells(cells: np.ndarray, stride: int, height: int, width: int) -> np.ndarray:
    """Repeat each cell of a ``[H_l, W_l]`` map over its ``stride x stride`` pixels, cropped to
    ``[height, width]`` (the last row/column of a level may extend past the padded image)."""
    up = np.repeat(np.repeat(cells, stride, axis=0), stride, axis=1)[:height, :width]
    if up.shape != (height, width):  # a map smaller than the image: pad with zeros
        up = np.pad(up, ((0, height - up.shape[0]), (0, width - up.shape[1])))
    return up


def draw_boxes(image: np.ndarray, boxes: np.ndarray, color=BOX_COLOR, scale: float = 1.0,
               thickness: int = 1) -> np.ndarray:
    """Draw ``[K, 4]`` XYXY pixel boxes (multiplied by ``scale``) on a copy of ``image``."""
    out = image.copy()
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale:
        cv2.rectangle(out, (int(round(x1)), int(round(y1))), (int(round(x2)) - 1, int(round(y2)) - 1),
                      color, thickness)
    return out


def mask_panel(image: np.ndarray, mask: np.ndarray, stride: int, alpha: float = 0.55) -> np.ndarray:
    """``image`` with object cells of a 0/1 ``[H_l, W_l]`` mask tinted green, background dimmed."""
    m = upsample_cells(mask.astype(np.float32), stride, *image.shape[:2])[..., None]
    tint = np.array(OBJECT_COLOR, dtype=np.float32)
    img = image.astype(np.float32)
    out = m * ((1 - alpha) * img + alpha * tint) + (1 - m) * 0.45 * img
    return np.clip(out, 0, 255).astype(np.uint8)


def heat_panel(values: np.ndarray, stride: int, height: int, width: int,
               vmax: Optional[float] = None) -> np.ndarray:
    """A ``[H_l, W_l]`` non-negative map as an inferno heat map over the padded image frame,
    scaled to ``[0, vmax]`` (default: the map's maximum)."""
    vmax = float(values.max()) if vmax is None else float(vmax)
    norm = np.clip(values / vmax, 0, 1) if vmax > 0 else np.zeros_like(values)
    up = upsample_cells((norm * 255).astype(np.uint8), stride, height, width)
    return cv2.applyColorMap(up, cv2.COLORMAP_INFERNO)


def titled(panel: np.ndarray, text: str) -> np.ndarray:
    """``panel`` below a ``TITLE_HEIGHT``-pixel dark caption bar with ``text`` (clipped to fit)."""
    bar = np.full((TITLE_HEIGHT, panel.shape[1], 3), 32, dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    while text and cv2.getTextSize(text, font, scale, 1)[0][0] > panel.shape[1] - 6:
        text = text[:-1]
    cv2.putText(bar, text, (3, TITLE_HEIGHT - 7), font, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel], axis=0)


def grid(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Panels of equal size laid out row by row; short rows are filled with black panels."""
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    blank = np.zeros((h, w, 3), dtype=np.uint8)
    lines: List[np.ndarray] = [np.concatenate(list(r) + [blank] * (ncols - len(r)), axis=1) for r in rows]
    return np.concatenate(lines, axis=0)
