"""The inputs of the box loss (``loss_defeat_box``) from both models' box predictions.

Two-stage: on the head loss's RoIs, the student's deltas and the teacher's decoded boxes for the
RoI's class (its label from the sampling; object RoIs only). Dense: on the same locations
(anchors), the student's deltas and the teacher's, each decoded with its own model's transform.
Either way the student's box and the teacher's are brought into the form of the chosen loss
(``MODEL.DEFEAT.BOX.LOSS``): ``"l1"`` compares deltas in the student's encoding (the teacher's
box encoded with the student's transform), ``"giou"`` decoded XYXY boxes.
"""

from typing import Tuple

import torch

__all__ = ["class_rows", "roi_box_terms", "dense_box_terms"]

Terms = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def class_rows(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``[R, 4]``: each row's 4 values for its class from class-specific ``[R, 4K]`` (or ``x``
    itself when class-agnostic, ``[R, 4]``). ``classes [R]`` must lie in ``[0, K)``."""
    if x.shape[1] == 4:
        return x
    rows = torch.arange(x.shape[0], device=x.device)
    return x.view(x.shape[0], -1, 4)[rows, classes]


def _in_form(student_deltas, teacher_boxes, anchors, transform, kind: str):
    """(student, target) ``[R, 4]`` in the loss's form: deltas for "l1", boxes for "giou"."""
    if kind == "l1":
        return student_deltas, transform.get_deltas(anchors, teacher_boxes)
    return transform.apply_deltas(student_deltas, anchors), teacher_boxes


def roi_box_terms(
    student_deltas: torch.Tensor,
    teacher_boxes: torch.Tensor,
    teacher_logits: torch.Tensor,
    rois: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    transform,
    kind: str,
) -> Terms:
    """``(student, target, weights, is_object)`` of the two-stage box loss.

    Args:
        student_deltas: ``[R, 4K]`` (or ``[R, 4]``) the student's box deltas on ``rois``.
        teacher_boxes: ``[R, 4K]`` (or ``[R, 4]``) the teacher's decoded XYXY boxes, student frame.
        teacher_logits: ``[R, K+1]`` the teacher's classification logits (softmax).
        rois: ``[R, 4]`` XYXY boxes both heads ran on (student frame).
        labels: ``[R]`` the RoIs' classes from sampling (``K`` = background).
        transform: the student's ``Box2BoxTransform`` (of this stage).
    Returns:
        ``[R, 4]`` student and target in the form of ``kind``, ``[R]`` weights (the teacher's
        softmax probability of the RoI's class) and bool ``[R]`` object RoIs.
    """
    is_object = (labels >= 0) & (labels < num_classes)
    classes = labels.clamp(0, num_classes - 1)  # background rows index a class, then count in no sum
    with torch.no_grad():
        target_boxes = class_rows(teacher_boxes.float(), classes)
        weights = torch.softmax(teacher_logits.float(), dim=-1).gather(1, classes[:, None])[:, 0]
    student, target = _in_form(class_rows(student_deltas.float(), classes), target_boxes, rois.float(), transform, kind)
    return student, target.detach(), weights, is_object


def dense_box_terms(
    student_deltas: torch.Tensor,
    teacher_deltas: torch.Tensor,
    teacher_logits: torch.Tensor,
    anchors: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    student_transform,
    teacher_transform,
    kind: str,
) -> Terms:
    """``(student, target, weights, is_object)`` of the dense box loss, location by location.

    Args:
        student_deltas, teacher_deltas: ``[A, 4]`` each model's deltas at the same locations.
        teacher_logits: ``[A, K]`` the teacher's per-class sigmoid logits.
        anchors: ``[A, 4]`` XYXY anchors (the same for both models).
        labels: ``[A]`` location labels (class, ``K`` = background, ``-1`` = ignored).
        student_transform, teacher_transform: each model's ``box2box_transform``.
    Returns:
        As :func:`roi_box_terms`; weights are the teacher's sigmoid probability of the class.
    """
    is_object = (labels >= 0) & (labels < num_classes)
    classes = labels.clamp(0, num_classes - 1)
    with torch.no_grad():
        teacher_boxes = teacher_transform.apply_deltas(teacher_deltas.float(), anchors.float())
        weights = torch.sigmoid(teacher_logits.float()).gather(1, classes[:, None])[:, 0]
    student, target = _in_form(student_deltas.float(), teacher_boxes, anchors.float(), student_transform, kind)
    return student, target.detach(), weights, is_object
