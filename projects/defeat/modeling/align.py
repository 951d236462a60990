"""Teacher inputs and maps in the student's frame: resized batches, padding, grid alignment.

Both models pad their batch at the bottom/right (``ImageList``), so cell ``(i, j)`` of a level
with stride ``s`` covers the same pixels in both as long as both see the same image: a teacher
map on a larger padded batch (another size divisibility, ViT's square padding) is cropped to the
student's grid. A teacher that sees the batch resized by ``scale`` (``TEACHER.INPUT_SCALE``) has
its maps sampled bilinearly at the student's cell centres: student cell ``i`` (centre
``(i + 0.5) s`` student pixels) is teacher cell ``(i + 0.5) scale - 0.5``.
"""

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList

__all__ = ["resize_image", "pad_at_least", "align_to_grid"]


def resize_image(image: torch.Tensor, scale: float) -> torch.Tensor:
    """A ``[C, H, W]`` image resized bilinearly to ``round(H * scale) x round(W * scale)``, as float."""
    h, w = image.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return out[0]


def pad_at_least(images: ImageList, min_hw: Tuple[int, int], size_divisibility: int = 0) -> ImageList:
    """``images`` zero-padded at the bottom/right to at least ``min_hw``, rounded up to
    ``size_divisibility``; returned unchanged when already large enough."""
    h, w = images.tensor.shape[-2:]
    if h >= min_hw[0] and w >= min_hw[1]:
        return images
    d = max(1, int(size_divisibility))
    new_h, new_w = (math.ceil(max(h, min_hw[0]) / d) * d, math.ceil(max(w, min_hw[1]) / d) * d)
    tensor = F.pad(images.tensor, (0, new_w - w, 0, new_h - h))
    return ImageList(tensor, images.image_sizes)


def align_to_grid(teacher: torch.Tensor, hw: Sequence[int], scale: float = 1.0) -> torch.Tensor:
    """A teacher map ``[N, C, H_t, W_t]`` on the student's grid ``hw = (H, W)`` of the same stride.

    ``scale`` = teacher input size / student input size. At 1 the map is cropped (it must be at
    least ``hw``: the teacher's batch is padded to at least the student's); otherwise it is
    sampled bilinearly at the student's cell centres (border values beyond the teacher's map).
    """
    h, w = int(hw[0]), int(hw[1])
    ht, wt = teacher.shape[-2:]
    if scale == 1.0:
        if ht < h or wt < w:
            raise ValueError(f"teacher map {ht}x{wt} is smaller than the student's grid {h}x{w}")
        return teacher[..., :h, :w]
    n = teacher.shape[0]
    ys = ((torch.arange(h, device=teacher.device, dtype=torch.float32) + 0.5) * scale) * 2.0 / ht - 1.0
    xs = ((torch.arange(w, device=teacher.device, dtype=torch.float32) + 0.5) * scale) * 2.0 / wt - 1.0
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
    grid = grid[None].expand(n, h, w, 2).to(teacher.dtype)
    return F.grid_sample(teacher, grid, mode="bilinear", padding_mode="border", align_corners=False)
