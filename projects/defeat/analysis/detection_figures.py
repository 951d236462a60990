"""Detections, and optionally the ground truth, drawn on an image (OpenCV, no display).

- **One colour per class**, the same in every image: :func:`class_color` indexes a fixed palette
  by the class (hues spread by the golden angle beyond it).
- **Labels that stay readable**: the font, line width and padding grow with the image
  (:func:`label_style`); each label sits on a filled box of its class colour, with black or white
  text, whichever contrasts more, above its box or, without room there, just inside it, and is
  always kept inside the image (:func:`label_box`).
- **Ground truth** boxes are dashed, in their class colour and without a label, so they stand
  beside the predictions (solid, labelled) without hiding them.
- Instance masks, when the model predicts them, are tinted in their class colour.

Images are ``H x W x 3`` uint8 arrays in RGB order; the functions return a new array.
"""

import colorsys
from typing import NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "PALETTE",
    "class_color",
    "LabelStyle",
    "label_style",
    "label_box",
    "dashed_rectangle",
    "draw_detections",
]

# 20 well-separated colours (RGB): strong ones first, then their lighter twins.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)
GOLDEN_ANGLE = 0.381966  # of a full turn: consecutive classes beyond the palette far apart in hue
FONT = cv2.FONT_HERSHEY_SIMPLEX
MASK_ALPHA = 0.4  # share of the class colour in a predicted mask's pixels
MIN_TEXT_HEIGHT = 9  # pixels: smaller Hershey text is not legible
TEXT_HEIGHT_SHARE = 0.022  # of the image's shorter side (a 1000-px image gets 22-px text)


def class_color(index: int) -> Tuple[int, int, int]:
    """The RGB colour of class ``index`` (0-based): the same for the same class in every image."""
    index = int(index)
    if index < 0:
        raise ValueError(f"class index must be >= 0, got {index}")
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * GOLDEN_ANGLE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


class LabelStyle(NamedTuple):
    font_scale: float  # cv2 font scale of the label text
    thickness: int  # text stroke, pixels
    line_width: int  # box outline, pixels
    pad: int  # between the text and its background box, pixels


def label_style(height: int, width: int) -> LabelStyle:
    """Text of about :data:`TEXT_HEIGHT_SHARE` of the shorter side (at least
    :data:`MIN_TEXT_HEIGHT` pixels), and lines and padding that grow with it."""
    target = max(MIN_TEXT_HEIGHT, TEXT_HEIGHT_SHARE * min(height, width))
    (_, base), _ = cv2.getTextSize("Ag", FONT, 1.0, 1)  # the font's cap height at scale 1
    scale = target / base
    return LabelStyle(
        font_scale=scale,
        thickness=max(1, int(round(target / 12))),
        line_width=max(1, int(round(min(height, width) / 400))),
        pad=max(1, int(round(target / 5))),
    )


def _text_size(text: str, style: LabelStyle) -> Tuple[int, int, int]:
    """``(width, height, baseline)`` of ``text`` in pixels."""
    (w, h), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.thickness)
    return w, h, baseline


def label_box(box: Sequence[float], size: Tuple[int, int], image_size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Where a label of ``size`` = ``(width, height)`` pixels (text and padding) goes for the box
    ``(x1, y1, x2, y2)`` in an image of ``image_size`` = ``(height, width)``: ``(x1, y1, x2, y2)``
    of the label, integer pixels with ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H`` (a label
    larger than the image is cut to it).

    Left-aligned with the box; above it when there is room, else just inside its top edge; moved
    left or up as far as needed to stay inside the image."""
    img_h, img_w = image_size
    w, h = min(int(size[0]), img_w), min(int(size[1]), img_h)
    x1 = int(round(box[0]))
    top = int(round(box[1]))
    y1 = top - h if top - h >= 0 else top  # above the box, else inside it
    x1 = min(max(x1, 0), img_w - w)
    y1 = min(max(y1, 0), img_h - h)
    return x1, y1, x1 + max(w, 1), y1 + max(h, 1)


def dashed_rectangle(
    image: np.ndarray, box: Sequence[float], color: Tuple[int, int, int], thickness: int, dash: int
) -> None:
    """Draw the outline of ``box`` = ``(x1, y1, x2, y2)`` on ``image`` in place, dashes of
    ``dash`` pixels with gaps as long."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    step = max(2, 2 * dash)
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        for start in range(a, max(b, a + 1), step):
            end = min(start + dash, b)
            p, q = ((start, fixed), (end, fixed)) if horizontal else ((fixed, start), (fixed, end))
            cv2.line(image, p, q, color, thickness, cv2.LINE_8)


def _text_color(background: Tuple[int, int, int]) -> Tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[int],
    scores: Optional[Sequence[float]] = None,
    class_names: Optional[Sequence[str]] = None,
    masks: Optional[np.ndarray] = None,
    gt_boxes: Optional[np.ndarray] = None,
    gt_classes: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """``image`` (RGB) with the detections drawn: masks tinted, ground truth dashed, predicted
    boxes solid, then the labels (``"name 87%"``; the class index without names), the
    highest-scoring on top.

    Args:
        boxes: ``[N, 4]`` predicted boxes ``(x1, y1, x2, y2)`` in image pixels.
        classes: ``N`` class indices; ``scores``: ``N`` scores (optional).
        class_names: name of each class index (optional).
        masks: ``[N, H, W]`` boolean masks (optional).
        gt_boxes, gt_classes: ``[M, 4]`` ground-truth boxes and their class indices (optional).
    """
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    height, width = out.shape[:2]
    style = label_style(height, width)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = [int(c) for c in classes]
    if len(classes) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes")
    if masks is not None:
        for mask, c in zip(np.asarray(masks, dtype=bool), classes):
            tint = np.array(class_color(c), dtype=np.float64)
            out[mask] = (out[mask] * (1 - MASK_ALPHA) + tint * MASK_ALPHA).astype(np.uint8)
    if gt_boxes is not None:
        gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        for box, c in zip(gt, gt_classes):
            dashed_rectangle(out, box, class_color(c), style.line_width, dash=4 * style.line_width + 2)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), class_color(classes[i]), style.line_width, cv2.LINE_8)
    for i in order:  # labels after all boxes: no box line crosses a label
        c = classes[i]
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        text = f"{name} {float(scores[i]):.0%}" if scores is not None else name
        w, h, baseline = _text_size(text, style)
        lx1, ly1, lx2, ly2 = label_box(boxes[i], (w + 2 * style.pad, h + baseline + style.pad), (height, width))
        color = class_color(c)
        cv2.rectangle(out, (lx1, ly1), (lx2 - 1, ly2 - 1), color, -1)
        origin = (lx1 + style.pad, ly2 - baseline - style.pad // 2)
        cv2.putText(out, text, origin, FONT, style.font_scale, _text_color(color), style.thickness, cv2.LINE_AA)
    return out
