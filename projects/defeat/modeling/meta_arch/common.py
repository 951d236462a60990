"""Teacher handling shared by the DeFeat meta-architectures: hidden, frozen, on the right device;
and the teacher-less student a DeFeat architecture evaluates as."""

import logging
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from detectron2.structures import ImageList

from ...config.files import architecture, build_model_as, build_model_from_config
from ...config.settings import settings_from_cfg
from ...config.validation import validate_settings
from ..align import pad_at_least, resize_image
from ..distiller import DeFeatConfigError
from ..inherit import inherit_from_teacher, inheritance_plan
from ..teacher import build_teacher

__all__ = [
    "defeat_from_config",
    "TeacherMixin",
    "teacher_from_config",
    "detector_num_classes",
    "build_student_model",
    "check_teacher_family",
    "prediction_terms",
    "turn_off",
    "student_class",
    "build_eval_model",
]

logger = logging.getLogger(__name__)


def detector_num_classes(model: nn.Module) -> Optional[int]:
    """Foreground classes of a two-stage (``roi_heads.num_classes``) or dense detector, else None."""
    heads = getattr(model, "roi_heads", None)
    return getattr(heads, "num_classes", None) if heads is not None else getattr(model, "num_classes", None)


def _input_format(model: nn.Module) -> Optional[str]:
    return getattr(model, "input_format", None)


def prediction_terms(settings) -> List[str]:
    """The switches of the enabled losses that compare the two models' predictions (head KL,
    box loss, cross-head loss), e.g. ``["MODEL.DEFEAT.HEAD.ENABLED"]``; empty when only the neck
    loss is on."""
    return [f"MODEL.DEFEAT.{k.upper()}.ENABLED" for k in ("head", "box", "cross_head") if settings[k]["enabled"]]


def turn_off(terms: Sequence[str]) -> str:
    """How to turn the losses of ``terms`` off, for messages: ``set A and B False``."""
    return "set " + " and ".join(terms) + " False"


def check_teacher_family(student_family: type, teacher: nn.Module, terms: Sequence[str]) -> bool:
    """Whether the teacher is of another detector family than ``student_family``.

    Across families only the neck loss applies (on the FPN levels both models share); a head or
    box loss (``terms``: :func:`prediction_terms`) across families is a :class:`DeFeatConfigError`.
    """
    cross = not isinstance(teacher, student_family)
    if cross and terms:
        raise DeFeatConfigError(
            f"the head and box losses compare predictions of the same family, but the student is a "
            f"{student_family.__name__} and the teacher a {type(teacher).__name__}; {turn_off(terms)} to "
            "distil the neck only across families"
        )
    if cross and not hasattr(teacher, "backbone"):
        raise DeFeatConfigError(f"the teacher {type(teacher).__name__} has no `backbone` to imitate")
    return cross


def teacher_from_config(cfg) -> nn.Module:
    """The frozen teacher named by ``MODEL.DEFEAT.TEACHER`` of a YAML config."""
    t = cfg.MODEL.DEFEAT.TEACHER
    return build_teacher(t.CONFIG_FILE, t.WEIGHTS, cfg.MODEL.DEVICE)


def defeat_from_config(cfg) -> Dict:
    """The DeFeat constructor arguments of a YAML config: ``defeat`` (settings through the gate
    before paying for the teacher build; the constructor does not check them again) and ``teacher``."""
    settings = validate_settings(settings_from_cfg(cfg))
    return {"defeat": settings, "teacher": teacher_from_config(cfg)}


class TeacherMixin:
    """Keeps a teacher outside ``_modules``: not in ``state_dict``/``parameters``/DDP, always eval.

    ``.to()``/``.cuda()``/``.half()`` still reach it (through ``_apply``).
    """

    has_defeat_teacher = True  # what ``defeat.config.files.is_defeat_architecture`` looks for

    def _set_teacher(
        self, teacher: nn.Module, input_scale: float = 1.0, terms: Sequence[str] = ("MODEL.DEFEAT.HEAD.ENABLED",)
    ) -> None:
        """Hide ``teacher``; it must read a compatible format, and detect the student's classes
        when a loss compares their predictions class by class (``terms``: the switches of those
        losses, :func:`prediction_terms`).

        ``input_scale``: the teacher sees the batch resized by this factor
        (``MODEL.DEFEAT.TEACHER.INPUT_SCALE``); its maps are resampled to the student's grids.
        A teacher of other classes (a COCO detector for a 3-class student) teaches the neck: the
        neck loss only compares features.
        """
        self.teacher_input_scale = float(input_scale)  # checked by the settings gate
        theirs, ours = detector_num_classes(teacher), detector_num_classes(self)
        if theirs is not None and theirs != ours:
            if terms:
                raise DeFeatConfigError(
                    f"teacher has {theirs} classes but the student {ours} (MODEL.ROI_HEADS.NUM_CLASSES or "
                    "MODEL.RETINANET.NUM_CLASSES): the head and box losses compare their predictions class by "
                    "class, so they need a teacher trained on the student's classes. "
                    f"S{turn_off(terms)[1:]} to distil the neck alone (it only compares features)"
                )
            logger.info(
                "DeFeat teacher detects %d classes and the student %d: the neck loss only compares features, "
                "so the teacher teaches the neck (the head and box losses are off)",
                theirs,
                ours,
            )
        # FCOS has no input_format (it reads what the data loader gives): nothing to convert.
        formats = {_input_format(teacher), _input_format(self)} - {None}
        if len(formats) > 1 and formats != {"RGB", "BGR"}:
            raise DeFeatConfigError(
                f"teacher input format {teacher.input_format!r} differs from the student's "
                f"{self.input_format!r} (INPUT.FORMAT / input_format); only RGB<->BGR can be converted, "
                "so set the same format"
            )
        object.__setattr__(self, "teacher", teacher)
        self._same_preprocessing = None  # decided by the first teacher_images call
        teacher.eval()

    def _set_inheritance(self, prefixes) -> None:
        """Keep ``MODEL.DEFEAT.INHERIT`` after checking now (at build time) that the teacher can
        give every tensor it names (:func:`defeat.modeling.inherit.inheritance_plan`)."""
        self.defeat_inherit = list(prefixes)
        if self.defeat_inherit:
            inheritance_plan(self, self.teacher, self.defeat_inherit)

    def inherit_from_teacher(self) -> List[str]:
        """Copy the teacher's tensors under ``MODEL.DEFEAT.INHERIT`` into this student (the start of
        a fresh run calls it, after ``MODEL.WEIGHTS``); returns the copied names."""
        prefixes = getattr(self, "defeat_inherit", [])
        return inherit_from_teacher(self, self.teacher, prefixes) if prefixes else []

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

    def teacher_features(self, batched_inputs: List[Dict], images: ImageList):
        """``(teacher ImageList, teacher backbone features)``, computed without autograd."""
        with torch.no_grad():
            t_images = self.teacher_images(batched_inputs, images)
            return t_images, self.teacher.backbone(t_images.tensor)

    def teacher_images(self, batched_inputs: List[Dict], images: ImageList) -> ImageList:
        """The teacher's normalised batch: the student's when preprocessing is identical.

        Otherwise the teacher preprocesses the images itself (channels flipped for RGB<->BGR,
        resized by ``teacher_input_scale``) and its batch is padded to at least the student's
        padded size times the scale, so that its maps cover the student's grids
        (:func:`defeat.modeling.align.align_to_grid` crops or resamples them).
        """
        t = self.teacher
        formats = (_input_format(t), _input_format(self))
        flip = None not in formats and formats[0] != formats[1]  # RGB <-> BGR, checked in _set_teacher
        scale = self.teacher_input_scale
        if self._same_preprocessing is None:  # once: torch.equal on device tensors syncs
            self._same_preprocessing = (
                not flip
                and scale == 1.0
                and torch.equal(t.pixel_mean, self.pixel_mean)
                and torch.equal(t.pixel_std, self.pixel_std)
                and t.backbone.size_divisibility == self.backbone.size_divisibility
                and t.backbone.padding_constraints == self.backbone.padding_constraints
            )
        if self._same_preprocessing:
            return images
        if flip or scale != 1.0:
            batched_inputs = [{"image": self._teacher_view(x["image"], flip, scale)} for x in batched_inputs]
        t_images = t.preprocess_image(batched_inputs)
        h, w = images.tensor.shape[-2:]
        return pad_at_least(t_images, (math.ceil(h * scale), math.ceil(w * scale)), t.backbone.size_divisibility)

    def _teacher_view(self, image: torch.Tensor, flip: bool, scale: float) -> torch.Tensor:
        """One ``[C, H, W]`` input image as the teacher reads it (on the student's device)."""
        image = image.to(self.device)
        if flip:
            image = image.flip(0)
        return resize_image(image, scale) if scale != 1.0 else image


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
    ``distiller.adapters.*`` are then left out by ``defeat.checkpoint.load_weights_strictly``
    (:func:`build_student_model`)."""
    return build_student_model(cfg)


def build_student_model(cfg) -> nn.Module:
    """The model a YAML config or LazyConfig evaluates and predicts with, on its device: a DeFeat
    config's plain student (no teacher read, no ``teacher``/``defeat`` arguments), any other
    config's model."""
    cls = architecture(cfg)
    plain = student_class(cls) if isinstance(cls, type) else cls
    if plain is cls:
        return build_model_from_config(cfg)
    logger.info("Evaluation: building %s as its student %s (no teacher is loaded)", cls.__name__, plain.__name__)
    return build_model_as(cfg, plain, drop=("teacher", "defeat"))
