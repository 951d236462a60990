"""Teacher handling shared by the DeFeat meta-architectures: hidden, frozen, on the right device;
and the teacher-less student a DeFeat architecture evaluates as."""
import logging
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from detectron2.structures import ImageList

from ..distiller import DeFeatConfigError
from ..teacher import build_teacher

__all__ = [
    "TeacherMixin", "teacher_from_config", "detector_num_classes", "check_teacher_family",
    "student_class", "build_eval_model", "lazy_eval_model_config",
]

logger = logging.getLogger(__name__)


def detector_num_classes(model: nn.Module) -> Optional[int]:
    """Foreground classes of a two-stage (``roi_heads.num_classes``) or dense detector, else None."""
    heads = getattr(model, "roi_heads", None)
    return getattr(heads, "num_classes", None) if heads is not None else getattr(model, "num_classes", None)


def check_teacher_family(student_family: type, teacher: nn.Module, head_enabled: bool) -> bool:
    """Whether the teacher is of another detector family than ``student_family``.

    Across families only the neck loss applies (on the FPN levels both models share); a head
    loss across families is a :class:`DeFeatConfigError`.
    """
    cross = not isinstance(teacher, student_family)
    if cross and head_enabled:
        raise DeFeatConfigError(
            f"the head loss compares classifier outputs of the same family, but the student is a "
            f"{student_family.__name__} and the teacher a {type(teacher).__name__}; set "
            "MODEL.DEFEAT.HEAD.ENABLED False to distil the neck only across families"
        )
    if cross and not hasattr(teacher, "backbone"):
        raise DeFeatConfigError(f"the teacher {type(teacher).__name__} has no `backbone` to imitate")
    return cross


def teacher_from_config(cfg) -> nn.Module:
    """The frozen teacher named by ``MODEL.DEFEAT.TEACHER`` of a YAML config."""
    t = cfg.MODEL.DEFEAT.TEACHER
    return build_teacher(t.CONFIG_FILE, t.WEIGHTS, cfg.MODEL.DEVICE)


class TeacherMixin:
    """Keeps a teacher outside ``_modules``: not in ``state_dict``/``parameters``/DDP, always eval.

    ``.to()``/``.cuda()``/``.half()`` still reach it (through ``_apply``).
    """

    def _set_teacher(self, teacher: nn.Module) -> None:
        """Hide ``teacher``; it must detect the student's classes and read a compatible format."""
        theirs, ours = detector_num_classes(teacher), detector_num_classes(self)
        if theirs is not None and theirs != ours:
            raise DeFeatConfigError(
                f"teacher has {theirs} classes but the student {ours} (MODEL.ROI_HEADS.NUM_CLASSES or "
                "MODEL.RETINANET.NUM_CLASSES); a teacher must be trained on the student's classes"
            )
        formats = {teacher.input_format, self.input_format}
        if len(formats) > 1 and formats != {"RGB", "BGR"}:
            raise DeFeatConfigError(
                f"teacher input format {teacher.input_format!r} differs from the student's "
                f"{self.input_format!r} (INPUT.FORMAT / input_format); only RGB<->BGR can be converted, "
                "so set the same format"
            )
        object.__setattr__(self, "teacher", teacher)
        self._same_preprocessing = None  # decided by the first _teacher_images call
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

    def _teacher_features(self, batched_inputs: List[Dict], images: ImageList):
        """``(teacher ImageList, teacher backbone features)``, computed without autograd."""
        with torch.no_grad():
            t_images = self._teacher_images(batched_inputs, images)
            return t_images, self.teacher.backbone(t_images.tensor)

    def _teacher_images(self, batched_inputs: List[Dict], images: ImageList) -> ImageList:
        """The teacher's normalised batch: the student's when preprocessing is identical."""
        t = self.teacher
        flip = t.input_format != self.input_format  # RGB <-> BGR, checked in _set_teacher
        if self._same_preprocessing is None:  # once: torch.equal on device tensors syncs
            self._same_preprocessing = (
                not flip
                and torch.equal(t.pixel_mean, self.pixel_mean)
                and torch.equal(t.pixel_std, self.pixel_std)
                and t.backbone.size_divisibility == self.backbone.size_divisibility
                and t.backbone.padding_constraints == self.backbone.padding_constraints
            )
        if self._same_preprocessing:
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


def student_class(cls: type) -> type:
    """The plain detector a DeFeat class distils into: the first ``nn.Module`` class in its MRO that
    has no teacher (``DeFeatRCNN`` -> ``GeneralizedRCNN``); ``cls`` itself if it is not DeFeat.

    In eval mode a DeFeat model is exactly this class (the teacher is never run)."""
    if not (isinstance(cls, type) and issubclass(cls, TeacherMixin)):
        return cls
    for base in cls.__mro__[1:]:
        if issubclass(base, nn.Module) and not issubclass(base, TeacherMixin):
            return base
    raise TypeError(f"{cls.__name__} has no plain nn.Module parent to evaluate with")


def build_eval_model(cfg) -> nn.Module:
    """``build_model(cfg)`` for evaluation: a DeFeat architecture is built as its plain student
    (:func:`student_class`), so no teacher config or weights are read; the checkpoint's
    ``distiller.adapters.*`` are then unused (reported by the checkpointer, harmless)."""
    from detectron2.modeling import META_ARCH_REGISTRY, build_model

    cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    plain = student_class(cls)
    if plain is cls:
        return build_model(cfg)
    logger.info("Evaluation: building %s as its student %s (no teacher is loaded)", cls.__name__, plain.__name__)
    return plain(cfg).to(torch.device(cfg.MODEL.DEVICE))


def lazy_eval_model_config(model_cfg):
    """A copy of a LazyConfig ``model`` node that builds the plain student of a DeFeat ``_target_``
    (without ``teacher``/``defeat``); the node itself when it is not a DeFeat model."""
    import copy

    from detectron2.utils.registry import locate

    target = model_cfg.get("_target_", None)
    cls = locate(target) if isinstance(target, str) else target
    plain = student_class(cls) if isinstance(cls, type) else cls
    if plain is cls:
        return model_cfg
    out = copy.deepcopy(model_cfg)
    out._target_ = plain
    for key in ("teacher", "defeat"):
        out.pop(key, None)
    logger.info("Evaluation: building %s as its student %s (no teacher is loaded)", cls.__name__, plain.__name__)
    return out
