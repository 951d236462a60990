"""Read the student's box-classifier logits out of its normal ROI-heads pass.

``BoxHeadTap`` hooks a ``StandardROIHeads`` for one forward: it records the classification
logits and box deltas of the RoIs the heads sampled themselves (``own``, ``own_deltas``), and
can run extra boxes (the teacher's RoIs) through the same pooler/box-head/predictor call,
returning the extra rows' logits and deltas (``extra``, ``extra_deltas``) and handing the heads
only their own rows. One pass instead of two is
exact when the box head treats RoIs independently (no BatchNorm over RoIs); otherwise
``extra`` stays ``None`` and the caller runs the box head separately.
"""

from typing import List, Optional

import torch
import torch.nn as nn
from detectron2.structures import Boxes

__all__ = ["BoxHeadTap", "rows_independent"]


def rows_independent(box_head: nn.Module) -> bool:
    """True when no module of the box head mixes statistics across RoIs (BatchNorm)."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in box_head.modules())


def _ranges(starts: List[int], lengths: List[int], device) -> torch.Tensor:
    """Concatenated ``arange(s, s + n)`` for each pair, built from host ints (no device sync)."""
    parts = [torch.arange(s, s + n, device=device) for s, n in zip(starts, lengths)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=device)


class BoxHeadTap:
    """Context manager around one ``roi_heads(...)`` call (see module docstring)."""

    def __init__(self, roi_heads, extra_boxes: Optional[List[Boxes]] = None, capture_own: bool = False):
        self.heads, self.extra_boxes, self.capture_own = roi_heads, extra_boxes, capture_own
        self.merge = extra_boxes is not None and rows_independent(roi_heads.box_head)
        self.own: Optional[torch.Tensor] = None
        self.extra: Optional[torch.Tensor] = None
        self.own_deltas: Optional[torch.Tensor] = None
        self.extra_deltas: Optional[torch.Tensor] = None
        self._counts: Optional[List[int]] = None
        self._handles = []

    def __enter__(self):
        if self.merge:
            self._handles.append(self.heads.box_pooler.register_forward_pre_hook(self._append_extra))
        if self.merge or self.capture_own:
            self._handles.append(self.heads.box_predictor.register_forward_hook(self._split))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return False

    def _append_extra(self, module, args):
        x, box_lists = args
        self._counts = [len(b) for b in box_lists]
        merged = [Boxes.cat([own, extra]) for own, extra in zip(box_lists, self.extra_boxes)]
        return x, merged

    def _split(self, module, inputs, output):
        scores, deltas = output
        if self._counts is None:  # nothing appended: the rows are the heads' own
            self.own, self.own_deltas = scores, deltas
            return None
        own_n, extra_n = self._counts, [len(b) for b in self.extra_boxes]
        starts = [0]
        for a, b in zip(own_n, extra_n):
            starts.append(starts[-1] + a + b)
        own_idx = _ranges(starts[:-1], own_n, scores.device)
        extra_idx = _ranges([s + a for s, a in zip(starts[:-1], own_n)], extra_n, scores.device)
        self._counts = None  # one merged call per forward
        self.own, self.extra = scores[own_idx], scores[extra_idx]
        self.own_deltas, self.extra_deltas = deltas[own_idx], deltas[extra_idx]
        return self.own, self.own_deltas
