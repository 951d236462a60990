"""Decoupled distillation losses (docs/algorithm.md, sections 2-3). Pure functions, computed in fp32.

The neck and head losses return an ``(obj, bg)`` pair of scalar tensors, the box loss one scalar
(object entries only), all unweighted; the caller applies weights.
Teacher inputs are always detached; every normaliser is clamped with ``max(1, .)`` on device
(no host synchronisation).
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..config.validation import BOX_LOSSES, FEATURE_NORMS

__all__ = [
    "BOX_LOSSES",
    "FEATURE_NORMS",
    "box_distillation_loss",
    "generalized_iou",
    "decoupled_feature_loss",
    "decoupled_kl_loss",
    "decoupled_sigmoid_kl_loss",
    "standardize_channels",
]

# MODEL.DEFEAT.NECK.FEATURE_NORM: "none" imitates raw maps (the paper), "channel" standardised ones.


def _split_mean(
    values: torch.Tensor, is_object: torch.Tensor, valid: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sum of ``values [R]`` over object and over background entries, each / max(1, count);
    entries where ``valid`` is False count in neither (masked, not indexed: no host sync)."""
    obj = is_object.to(values.dtype)
    bg = 1.0 - obj
    if valid is not None:
        keep = valid.to(values.dtype)
        obj, bg = obj * keep, bg * keep
    return (
        (values * obj).sum() / obj.sum().clamp(min=1.0),
        (values * bg).sum() / bg.sum().clamp(min=1.0),
    )


def _tempered(student_logits, teacher_logits, temperature):
    """fp32 logits divided by ``T`` (teacher detached) and the ``T^2`` gradient-scale factor."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit shapes differ: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    t = float(temperature)
    return student_logits.float() / t, teacher_logits.detach().float() / t, t * t


def standardize_channels(feat: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each image's channels to zero mean and unit variance over its ``H x W`` cells (fp32).

    ``feat [N, C, H, W]`` -> ``(feat - mean) / sqrt(var + eps)``, mean and (biased) variance per
    ``(n, c)``. On two standardised maps, :func:`decoupled_feature_loss` over one region
    covering the whole map is ``1 -`` the channels' mean Pearson correlation, whatever the
    two models' feature scales.
    """
    x = feat.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def decoupled_feature_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Feature imitation split into object (inside GT boxes) and background parts.

    Args:
        student_feats: per level ``[N, C, H_l, W_l]`` (after the adapter).
        teacher_feats: per level ``[N, C, H_l, W_l]``; detached here.
        masks: per level ``[N, H_l, W_l]`` with 1 on object cells.
    Returns:
        ``(obj, bg)``: means over levels of ``sum(M (S-T)^2) / max(1, 2 C sum(M))`` and the
        same with ``1 - M``.
    """
    if not (len(student_feats) == len(teacher_feats) == len(masks)) or not student_feats:
        raise ValueError("student_feats, teacher_feats and masks must be non-empty lists of equal length")
    obj_terms, bg_terms = [], []
    for s, t, m in zip(student_feats, teacher_feats, masks):
        if s.shape != t.shape:
            raise ValueError(f"student feature {tuple(s.shape)} and teacher feature {tuple(t.shape)} differ")
        c = s.shape[1]
        sq = (s.float() - t.detach().float()).pow(2).sum(dim=1)  # [N, H, W]
        m = m.to(sq.dtype)
        obj_terms.append((sq * m).sum() / (2.0 * c * m.sum()).clamp(min=1.0))
        bg_terms.append((sq * (1.0 - m)).sum() / (2.0 * c * (1.0 - m).sum()).clamp(min=1.0))
    return torch.stack(obj_terms).mean(), torch.stack(bg_terms).mean()


def decoupled_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    is_object: torch.Tensor,
    temperature: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Softmax KL(teacher || student) per RoI, averaged separately over object and background RoIs.

    Args:
        student_logits, teacher_logits: ``[R, K+1]`` classification logits (last = background).
        is_object: bool ``[R]``, True for RoIs labelled with a foreground class.
        temperature: softmax temperature ``T``; the result is scaled by ``T^2``.
    Returns:
        ``(obj, bg)`` scalar tensors.
    """
    s, t, scale = _tempered(student_logits, teacher_logits, temperature)
    log_ps, log_pt = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)
    obj, bg = _split_mean(kl, is_object)
    return obj * scale, bg * scale


def decoupled_sigmoid_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    is_object: torch.Tensor,
    temperature: float = 1.0,
    valid: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-class binary KL(teacher || student) for sigmoid classifiers (one-stage detectors).

    Args:
        student_logits, teacher_logits: ``[A, K]`` per-anchor class logits.
        is_object: bool ``[A]``, True for anchors matched to a GT box.
        temperature: ``T``; the result is scaled by ``T^2``.
        valid: optional bool ``[A]``; False for anchors in neither group (e.g. ignored ones).
    Returns:
        ``(obj, bg)`` scalar tensors: sum over classes of the binary KL, mean per group.
    """
    s, tt, scale = _tempered(student_logits, teacher_logits, temperature)
    if valid is not None:  # left-out rows become 0-logit rows: KL 0, no gradient, no NaN/inf leaks
        s = torch.where(valid[:, None], s, torch.zeros_like(s))
        tt = torch.where(valid[:, None], tt, torch.zeros_like(tt))
    log_pt, log_qt = F.logsigmoid(tt), F.logsigmoid(-tt)  # log p, log (1-p) of the teacher
    log_ps, log_qs = F.logsigmoid(s), F.logsigmoid(-s)
    kl = (log_pt.exp() * (log_pt - log_ps) + log_qt.exp() * (log_qt - log_qs)).sum(dim=-1)
    obj, bg = _split_mean(kl, is_object, valid)
    return obj * scale, bg * scale


def generalized_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise generalised IoU of XYXY boxes ``a [R, 4]`` and ``b [R, 4]`` -> ``[R]`` in [-1, 1].

    ``IoU - (C - U) / C`` with ``U`` the union and ``C`` the smallest enclosing box's area; a box
    with ``x2 < x1`` (or ``y2 < y1``) has area 0. Computed in fp32, no host synchronisation.
    """
    a, b = a.float(), b.float()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = area_a + area_b - inter
    iou = inter / union.clamp(min=eps)
    enclose = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(dim=1)
    return iou - (enclose - union) / enclose.clamp(min=eps)


def box_distillation_loss(
    student: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    is_object: torch.Tensor,
    kind: str = "l1",
    per_entry: bool = False,
) -> torch.Tensor:
    """The student's boxes pulled towards the teacher's, on object entries, confidence-weighted.

    Args:
        student: ``[R, 4]`` the student's box regression: deltas (``kind="l1"``) or decoded XYXY
            boxes (``"giou"``), with autograd.
        target: ``[R, 4]`` the teacher's box in the same form (the teacher's decoded box encoded
            with the student's box transform for ``"l1"``); detached here.
        weights: ``[R]`` the teacher's confidence in the entry's class (detached here).
        is_object: bool ``[R]``; background entries count in neither sum.
        kind: ``"l1"``: ``sum_4 |s - t|`` per entry; ``"giou"``: ``1 - GIoU(s, t)``.
        per_entry: divide by the number of all entries ``R`` (object and background, as
            Detectron2's box-regression loss of the ROI heads does) instead of the object entries.
    Returns:
        Scalar ``sum_obj w_r l_r / max(1, #obj)`` (``/ max(1, R)`` with ``per_entry``).
    """
    if kind not in BOX_LOSSES:
        raise ValueError(f"box loss {kind!r} is not one of {list(BOX_LOSSES)}")
    if student.shape != target.shape or student.shape[-1:] != (4,):
        raise ValueError(f"student {tuple(student.shape)} and target {tuple(target.shape)} must both be [R, 4]")
    s, t = student.float(), target.detach().float()
    if kind == "l1":
        per = (s - t).abs().sum(dim=-1)
    else:
        per = 1.0 - generalized_iou(s, t)
    # masked, not indexed: background rows (possibly non-finite after decoding) must not leak
    per = torch.where(is_object, per, torch.zeros_like(per))
    denominator = float(max(1, per.numel())) if per_entry else is_object.sum().clamp(min=1).to(per.dtype)
    return (per * weights.detach().float()).sum() / denominator
