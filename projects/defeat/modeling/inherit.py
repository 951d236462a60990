"""Inheriting from the teacher: copy the teacher's tensors into student modules of the same shapes.

``MODEL.DEFEAT.INHERIT`` lists module-name prefixes of the student (``backbone.fpn_``,
``proposal_generator``, ``roi_heads.box_head``, ...). Every student tensor (parameter or buffer)
whose name starts with one of them takes the teacher's tensor of the same name. It is applied
once, at the start of a fresh run after ``MODEL.WEIGHTS`` is loaded, never on resume
(``defeat.engine.start.load_or_resume``); the plan is checked
when the model is built, so a prefix that matches nothing or a shape that differs fails before
training.

A teacher that reads its images in the other channel order (``INPUT.FORMAT`` RGB vs BGR) gives
the weight of its first convolution on the image with the input channels reversed, so the
inherited student sees its own input as the teacher saw its (``pixel_mean`` / ``pixel_std`` are
not inherited: they are not in ``state_dict``).
"""

import logging
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from ..checkpoint import DEFEAT_KEY_PREFIXES
from ..errors import DeFeatConfigError

__all__ = ["inheritance_plan", "inherit_from_teacher", "image_facing_tensors"]

logger = logging.getLogger(__name__)


def _student_state(student: nn.Module) -> Dict[str, torch.Tensor]:
    """The student's tensors without DeFeat's own (the adapters: the teacher has none)."""
    return {k: v for k, v in student.state_dict().items() if not k.startswith(DEFEAT_KEY_PREFIXES)}


def inheritance_plan(student: nn.Module, teacher: nn.Module, prefixes: Sequence[str]) -> Dict[str, List[str]]:
    """The tensor names each prefix copies: ``{prefix: [name, ...]}``.

    Raises:
        DeFeatConfigError: a prefix that matches no student tensor, or a matched tensor that the
            teacher lacks or holds in another shape (both named, with the shapes).
    """
    ours, theirs = _student_state(student), teacher.state_dict()
    plan = {}
    for prefix in prefixes:
        names = [n for n in ours if n.startswith(prefix)]
        if not names:
            tops = sorted({n.split(".")[0] for n in ours})
            raise DeFeatConfigError(
                f"MODEL.DEFEAT.INHERIT prefix {prefix!r} matches no tensor of the student (model.defeat.inherit in "
                f"a LazyConfig); its modules start with {tops}, e.g. 'backbone.fpn_', 'proposal_generator', "
                "'roi_heads.box_head'"
            )
        missing = [n for n in names if n not in theirs]
        shapes = [
            f"{n} {tuple(ours[n].shape)} in the student vs {tuple(theirs[n].shape)} in the teacher"
            for n in names
            if n in theirs and ours[n].shape != theirs[n].shape
        ]
        if missing or shapes:
            problems = ([f"not in the teacher: {', '.join(missing[:5])}"] if missing else []) + shapes[:5]
            raise DeFeatConfigError(
                f"MODEL.DEFEAT.INHERIT prefix {prefix!r} names student tensors that the teacher cannot give: "
                + "; ".join(problems)
                + ". Inherit only modules of the same architecture and widths (e.g. the FPN of a teacher with "
                "the student's FPN width), or remove the prefix"
            )
        plan[prefix] = names
    return plan


_CHANNEL_ORDERS = {("RGB", "BGR"), ("BGR", "RGB")}


def image_facing_tensors(model: nn.Module) -> Dict[str, int]:
    """``{tensor name: its image-channel dimension}``: the weight of the first ``Conv2d`` that reads
    the 3-channel image (dimension 1)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            out[f"{name}.weight"] = 1
            break
    return out


def inherit_from_teacher(student: nn.Module, teacher: nn.Module, prefixes: Sequence[str]) -> List[str]:
    """Copy the teacher's tensors into the student for ``prefixes`` (see :func:`inheritance_plan`);
    returns the copied names and logs how many tensors and values each prefix took. With the
    teacher's channel order the reverse of the student's (RGB vs BGR), the image-facing tensors
    (:func:`image_facing_tensors`) are copied with their channels reversed, and that is logged."""
    plan = inheritance_plan(student, teacher, prefixes)
    ours, theirs = _student_state(student), teacher.state_dict()
    formats = (getattr(teacher, "input_format", None), getattr(student, "input_format", None))
    flip = image_facing_tensors(student) if formats in _CHANNEL_ORDERS else {}
    copied = []
    with torch.no_grad():
        for prefix, names in plan.items():
            for n in names:
                value = theirs[n]
                if n in flip and value.shape[flip[n]] == 3:
                    value = value.flip(flip[n])
                    logger.info(
                        "DeFeat: %s inherited with its channels reversed (teacher reads %s, student %s)",
                        n,
                        *formats,
                    )
                ours[n].copy_(value.to(ours[n].device, ours[n].dtype))
            values = sum(ours[n].numel() for n in names)
            logger.info(
                "DeFeat: inherited %d tensors (%d values) under %r from the teacher", len(names), values, prefix
            )
            copied += names
    return copied
