"""Teacher handling shared by the DeFeat meta-architectures: hidden, frozen, on the right device."""
from typing import Dict, List

import torch
import torch.nn as nn
from detectron2.structures import ImageList

from ..distiller import DeFeatConfigError
from ..teacher import build_teacher

__all__ = ["TeacherMixin", "teacher_from_config"]


def teacher_from_config(cfg) -> nn.Module:
    """The frozen teacher named by ``MODEL.DEFEAT.TEACHER`` of a YAML config."""
    t = cfg.MODEL.DEFEAT.TEACHER
    return build_teacher(t.CONFIG_FILE, t.WEIGHTS, cfg.MODEL.DEVICE)


class TeacherMixin:
    """Keeps a teacher outside ``_modules``: not in ``state_dict``/``parameters``/DDP, always eval.

    ``.to()``/``.cuda()``/``.half()`` still reach it (through ``_apply``).
    """

    def _set_teacher(self, teacher: nn.Module) -> None:
        """Hide ``teacher`` (after checking that its input format can be served from the student's)."""
        formats = {teacher.input_format, self.input_format}
        if len(formats) > 1 and formats != {"RGB", "BGR"}:
            raise DeFeatConfigError(
                f"teacher input format {teacher.input_format!r} differs from the student's "
                f"{self.input_format!r} (INPUT.FORMAT / input_format); only RGB<->BGR can be converted, "
                "so set the same format"
            )
        object.__setattr__(self, "teacher", teacher)
        teacher.eval()

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if "teacher" in self.__dict__:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if "teacher" in self.__dict__:
            self.teacher.eval()
        return self

    def _teacher_images(self, batched_inputs: List[Dict], images: ImageList) -> ImageList:
        """The teacher's normalised batch: the student's when preprocessing is identical."""
        t = self.teacher
        flip = t.input_format != self.input_format  # RGB <-> BGR, checked in _set_teacher
        same = (
            not flip
            and torch.equal(t.pixel_mean, self.pixel_mean)
            and torch.equal(t.pixel_std, self.pixel_std)
            and t.backbone.size_divisibility == self.backbone.size_divisibility
            and t.backbone.padding_constraints == self.backbone.padding_constraints
        )
        if same:
            return images
        if flip:
            batched_inputs = [{"image": x["image"].flip(0)} for x in batched_inputs]
        t_images = t.preprocess_image(batched_inputs)
        if t_images.tensor.shape != images.tensor.shape:
            raise DeFeatConfigError(
                f"teacher input batch {tuple(t_images.tensor.shape)} differs from the student's "
                f"{tuple(images.tensor.shape)}: give both models the same size divisibility"
            )
        return t_images
