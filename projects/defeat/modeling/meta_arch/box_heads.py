"""Box classifiers of ROI heads as a list of stages, for the head loss.

A ``StandardROIHeads`` has one box classifier (``box_head`` + ``box_predictor``); a
``CascadeROIHeads`` has one per stage (both attributes are ``nn.ModuleList``). The head loss
runs every stage's classifier on the same RoIs, pairs student stage ``k`` with teacher stage
``k`` and averages the per-stage losses (docs/compatibility.md explains the choice).
"""

from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from detectron2.structures import Boxes

from ...config.settings import DeFeatConfigError

__all__ = [
    "box_stages",
    "stage_logits",
    "stage_outputs",
    "box_transforms",
    "check_head_pair",
    "check_cross_head_levels",
    "is_cascade",
]

_BOX_ATTRS = ("box_pooler", "box_head", "box_predictor", "box_in_features")


def is_cascade(roi_heads) -> bool:
    """True for ROI heads with one box head per stage (``CascadeROIHeads`` and alike)."""
    return isinstance(getattr(roi_heads, "box_predictor", None), nn.ModuleList)


def box_stages(roi_heads, who: str = "model") -> List[Tuple[nn.Module, nn.Module]]:
    """``(box_head, box_predictor)`` of each classifier stage, in stage order.

    Raises:
        DeFeatConfigError: ROI heads without a pooled box classifier, or a cascade whose
            heads and predictors differ in number.
    """
    if not all(hasattr(roi_heads, a) for a in _BOX_ATTRS):
        raise DeFeatConfigError(
            f"the head loss needs ROI heads with a pooled box classifier (StandardROIHeads or "
            f"CascadeROIHeads), but the {who}'s ROI heads are {type(roi_heads).__name__}; "
            "set MODEL.DEFEAT.HEAD.ENABLED False"
        )
    head, pred = roi_heads.box_head, roi_heads.box_predictor
    if not is_cascade(roi_heads):
        return [(head, pred)]
    if not isinstance(head, nn.ModuleList) or len(head) != len(pred):
        raise DeFeatConfigError(
            f"the {who}'s {type(roi_heads).__name__} has {len(pred)} box predictors but box heads "
            f"{type(head).__name__}; the head loss needs one box head per stage"
        )
    return list(zip(head, pred))


def stage_outputs(
    roi_heads, features: Dict[str, torch.Tensor], boxes: List[Boxes]
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(logits [R, K+1], deltas [R, 4K] or [R, 4])`` of every stage's box predictor on the same boxes.

    The boxes are pooled once; stage ``k`` runs ``box_head[k]`` and ``box_predictor[k]`` on them
    (a cascade refines boxes between stages at training time; here every stage sees the same
    RoIs so that student and teacher are compared on identical inputs).
    """
    x = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], boxes)
    return [tuple(pred(head(x))[:2]) for head, pred in box_stages(roi_heads)]


def stage_logits(roi_heads, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> List[torch.Tensor]:
    """Classification logits ``[R, K+1]`` of every stage's classifier on the same boxes
    (:func:`stage_outputs` without the deltas)."""
    return [logits for logits, _ in stage_outputs(roi_heads, features, boxes)]


def box_transforms(roi_heads) -> List[nn.Module]:
    """Each stage's ``Box2BoxTransform`` (how its predictor's deltas encode boxes), in stage order."""
    return [pred.box2box_transform for _, pred in box_stages(roi_heads)]


def _num_logits(predictor: nn.Module):
    cls = getattr(predictor, "cls_score", None)
    return getattr(cls, "out_features", None)


def check_head_pair(student_heads, teacher_heads, off: str = "set MODEL.DEFEAT.HEAD.ENABLED False") -> None:
    """Refuse (at build time) a student/teacher pair the head (and box) loss cannot compare.

    The head loss pairs classifier stages one to one: a standard head with a standard head, a
    cascade with a cascade of as many stages. Within a stage both classifiers must give the
    same number of logits. ``off``: how to turn the losses off, for the messages.
    """
    s = box_stages(student_heads, "student")
    t = box_stages(teacher_heads, "teacher")
    if len(s) != len(t):
        raise DeFeatConfigError(
            f"the head loss pairs box-classifier stages one to one, but the student's ROI heads "
            f"({type(student_heads).__name__}) have {len(s)} stage(s) and the teacher's "
            f"({type(teacher_heads).__name__}) {len(t)}; use a teacher with as many stages "
            f"(MODEL.ROI_HEADS.NAME, MODEL.ROI_BOX_CASCADE_HEAD.IOUS) or {off} (the neck loss serves this pair)"
        )
    for k, ((_, ps), (_, pt)) in enumerate(zip(s, t)):
        a, b = _num_logits(ps), _num_logits(pt)
        if a is not None and b is not None and a != b:
            raise DeFeatConfigError(
                f"box classifier stage {k} gives {a} logits in the student but {b} in the teacher; "
                f"the head loss needs the same classes (MODEL.ROI_HEADS.NUM_CLASSES), or {off}"
            )


def check_cross_head_levels(distiller, teacher_heads) -> None:
    """Refuse (at build time) a cross-head loss without adapted student maps on every level the
    teacher's box pooler reads (the neck adapters make them: ``NECK.ENABLED``, ``NECK.IN_FEATURES``)."""
    levels = list(teacher_heads.box_in_features)
    if not distiller.neck_enabled:
        why = "MODEL.DEFEAT.NECK.ENABLED is False"
    else:
        missing = [f for f in levels if f not in distiller.in_features]
        if not missing:
            return
        why = f"MODEL.DEFEAT.NECK.IN_FEATURES {distiller.in_features} lacks {missing}"
    raise DeFeatConfigError(
        f"the cross-head loss runs the teacher's box head on the student's maps of levels {levels} "
        f"(its ROI_BOX_HEAD reads them) through the neck adapters, but {why}; enable the neck loss "
        "with those levels (its weights may be 0) or set MODEL.DEFEAT.CROSS_HEAD.ENABLED False"
    )
