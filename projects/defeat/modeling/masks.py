"""Ground-truth box masks over FPN levels (docs/algorithm.md, section 1). Pure tensor code; the
level rule itself (:func:`assign_levels`) lives with the data's box sizes (``defeat.data.box_levels``),
where the suggested ``SCALE_BASE`` is computed by it too."""

from typing import List, Sequence, Tuple

import torch

from ..data.box_levels import assign_levels

__all__ = ["gt_masks", "assign_levels"]


def _box_cells(boxes: torch.Tensor, stride: int, height: int, width: int) -> Tuple[torch.Tensor, ...]:
    """Cell ranges ``[lx, rx) x [ly, ry)`` of boxes on a map of the given stride, clipped to it."""
    b = torch.floor(boxes.to(torch.float64) / stride).to(torch.int64)
    lx, ly = b[:, 0], b[:, 1]
    rx = torch.maximum(b[:, 2], lx + 1)
    ry = torch.maximum(b[:, 3], ly + 1)
    return lx.clamp(0, width), ly.clamp(0, height), rx.clamp(0, width), ry.clamp(0, height)


def _paint(img_idx: torch.Tensor, cells: Tuple[torch.Tensor, ...], n: int, h: int, w: int) -> torch.Tensor:
    """Union of rectangles as a ``[n, h, w]`` 0/1 float map, via a 2-D difference array.

    Each rectangle adds +1 at its top-left corner, -1 at top-right and bottom-left and +1 at
    bottom-right; two cumulative sums give the per-cell count of covering boxes.
    """
    lx, ly, rx, ry = cells
    keep = ((rx > lx) & (ry > ly)).to(torch.int32)  # empty after clipping -> contributes nothing
    diff = torch.zeros((n, h + 1, w + 1), dtype=torch.int32, device=img_idx.device)
    idx = torch.cat([img_idx] * 4)
    rows = torch.cat([ly, ly, ry, ry])
    cols = torch.cat([lx, rx, lx, rx])
    vals = torch.cat([keep, -keep, -keep, keep])
    diff.index_put_((idx, rows, cols), vals, accumulate=True)
    count = diff.cumsum(1).cumsum(2)[:, :h, :w]
    return (count > 0).to(torch.float32)


def gt_masks(
    boxes: Sequence[torch.Tensor],
    feature_shapes: Sequence[Tuple[int, int]],
    strides: Sequence[int],
    assignment: str = "scale",
    scale_base: float = 56.0,
) -> List[torch.Tensor]:
    """Object masks of ground-truth boxes on every FPN level.

    Args:
        boxes: one ``[K_i, 4]`` float tensor per image, XYXY in input (padded) image pixels.
        feature_shapes: ``(H_l, W_l)`` of each level.
        strides: stride of each level in pixels.
        assignment: ``"scale"`` (each box on the level of its size) or ``"all"`` (every level).
        scale_base: box side (pixels) that maps to level 0 for ``"scale"``.
    Returns:
        One float tensor ``[N, H_l, W_l]`` of 0/1 per level, on the boxes' device.
    """
    if assignment not in ("scale", "all"):
        raise ValueError(f"assignment must be 'scale' or 'all', got {assignment!r}")
    if len(feature_shapes) != len(strides):
        raise ValueError(f"feature_shapes ({len(feature_shapes)}) and strides ({len(strides)}) differ in length")
    n = len(boxes)
    device = boxes[0].device if n else torch.device("cpu")
    all_boxes = (
        torch.cat([b.reshape(-1, 4).to(device=device, dtype=torch.float32) for b in boxes])
        if n
        else torch.zeros((0, 4))
    )
    # Image index of every box, filled on the device from host-side sizes (no copy, no sync).
    img_idx = (
        torch.cat([torch.full((len(b),), i, dtype=torch.int64, device=device) for i, b in enumerate(boxes)])
        if n
        else torch.zeros((0,), dtype=torch.int64)
    )
    num_levels = len(strides)
    levels = assign_levels(all_boxes, num_levels, scale_base) if assignment == "scale" else None
    out = []
    for lvl, ((h, w), s) in enumerate(zip(feature_shapes, strides)):
        cells = _box_cells(all_boxes, s, h, w)
        if levels is not None:
            on_level = (levels == lvl).to(torch.int64)
            # Collapse boxes of other levels to empty rectangles instead of indexing (no host sync).
            cells = (cells[0], cells[1], cells[0] + (cells[2] - cells[0]) * on_level, cells[3])
        out.append(_paint(img_idx, cells, n, h, w))
    return out
