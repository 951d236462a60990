"""Build the frozen teacher detector from its own config file and weights, loudly.

The config is a Detectron2 YAML file (``_BASE_`` chains allowed) or a LazyConfig ``.py`` file
with a ``model`` node, either by path or as ``model_zoo:<name>``; both go through the same
checks, strict weight loading and freezing.
"""

import functools
import itertools
import logging
import os

import torch
import torch.nn as nn
from detectron2.utils.file_io import PathManager

from ..checkpoint import RecordingCheckpointer, weight_problems
from ..config.files import (
    architecture,
    architecture_name,
    build_model_from_config,
    expand_path,
    for_building,
    is_defeat_architecture,
    load_config,
    num_classes,
)
from ..errors import ConfigFileError, TeacherLoadError

__all__ = [
    "TeacherLoadError",
    "load_teacher_config",
    "load_teacher_lazy_config",
    "build_teacher",
    "freeze",
    "check_finite",
    "is_defeat_architecture",
]

logger = logging.getLogger(__name__)

# ``MODEL.DEFEAT.TEACHER.CONFIG_FILE: "model_zoo:COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"``
# names a config bundled with Detectron2 (see ``detectron2.model_zoo.get_config_file``).
MODEL_ZOO_PREFIX = "model_zoo:"


def _resolve_config_path(config_file: str) -> str:
    """A local path for ``config_file`` (``model_zoo:`` names resolved); raises if it is missing."""
    if not config_file:
        raise TeacherLoadError(
            "MODEL.DEFEAT.TEACHER.CONFIG_FILE is empty: set it to the teacher's Detectron2 config file"
        )
    if config_file.startswith(MODEL_ZOO_PREFIX):
        from detectron2 import model_zoo

        try:
            config_file = model_zoo.get_config_file(config_file[len(MODEL_ZOO_PREFIX) :])
        except RuntimeError as e:
            raise TeacherLoadError(f"unknown model-zoo teacher config: {e}") from e
    given, config_file = config_file, expand_path(config_file)
    if not PathManager.exists(config_file):
        expanded = f" (expanded to {config_file!r})" if config_file != given else ""
        raise TeacherLoadError(
            f"teacher config file not found: {given!r}{expanded} (MODEL.DEFEAT.TEACHER.CONFIG_FILE; "
            "a relative path is looked up beside the config file that sets it, then in the working directory)"
        )
    return config_file


def load_teacher_config(config_file: str, device: str = "cpu"):
    """The teacher's config through the package's loader (``defeat.config.files.load_config``): a YAML
    config (``_BASE_`` chains resolved) frozen on ``device`` with no ``MODEL.WEIGHTS``, or a
    LazyConfig (a ``.py`` file with a ``model`` node)."""
    path = _resolve_config_path(config_file)
    try:
        cfg = load_config(path, check_settings=False)
    except ConfigFileError as e:
        cause = e.__cause__
        if cause is None and "has no 'model' entry" in str(e):  # a LazyConfig with nothing to build
            raise TeacherLoadError(f"teacher LazyConfig {path!r} has no 'model' entry to build") from e
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(e)
        raise TeacherLoadError(f"cannot load teacher config {path!r}: {detail}") from e
    return for_building(cfg, device)


def load_teacher_lazy_config(config_file: str):
    """The teacher's LazyConfig (a ``.py`` file with a ``model`` node); see :func:`load_teacher_config`."""
    return load_teacher_config(config_file)


def _architecture_class(cfg):
    """The class a teacher config builds; None if it cannot be resolved (the build then reports it)."""
    try:
        cls = architecture(cfg)
    except Exception:  # an unknown registry name or import path
        return None
    return cls if isinstance(cls, type) else None


def _teacher_builder(config_file: str, device: str):
    """``(build, config, architecture name)`` of a YAML or LazyConfig teacher config; ``build()``
    returns the randomly initialised model (deferred until the weights file has been checked)."""
    cfg = load_teacher_config(config_file, device)
    arch = architecture_name(cfg)
    build = functools.partial(build_model_from_config, cfg)
    cls = _architecture_class(cfg)
    if is_defeat_architecture(cls) or (cls is None and arch.startswith("DeFeat")):
        raise TeacherLoadError(
            f"teacher config {config_file!r} is itself a DeFeat config ({arch}, a DeFeat model that "
            "distils from a teacher of its own); point MODEL.DEFEAT.TEACHER.CONFIG_FILE at a plain "
            "detector (e.g. the config the teacher was trained with)"
        )
    num, key = num_classes(cfg)
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise TeacherLoadError(
            f"teacher config {config_file!r} has {key} = {num!r}: set it to the number of classes the teacher "
            "was trained on (a template of configs/custom/ has the placeholder 0 in Base-Custom-RCNN-FPN.yaml)"
        )
    return build, cfg, arch


def check_finite(model: nn.Module, weights: str) -> None:
    """Raise if any parameter or buffer of the loaded ``model`` holds NaN or infinity."""
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise TeacherLoadError(
                f"teacher weights {weights!r} hold non-finite values: {name} has {bad} NaN/inf entries "
                f"(of {tensor.numel()}); the teacher checkpoint is corrupt or was saved after its training "
                "diverged. Use an intact checkpoint (MODEL.DEFEAT.TEACHER.WEIGHTS)"
            )


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter; returns ``model``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_teacher(config_file: str, weights: str, device: str = "cpu") -> nn.Module:
    """Build the teacher with Detectron2's builders and load every parameter and buffer.

    Args:
        config_file: the teacher's YAML or LazyConfig (``.py``) file, or ``model_zoo:<name>``.
        weights: its trained weights (path or URL understood by ``DetectionCheckpointer``).
        device: where the frozen teacher is put (``.to()`` of a DeFeat model moves it later).
    Raises:
        TeacherLoadError: missing/unreadable config or weights, a checkpoint that leaves any
            teacher parameter or buffer unloaded, with the wrong shape or not finite, or a
            teacher config that builds a DeFeat model (any subclass of ``TeacherMixin``).
    """
    build, cfg, arch = _teacher_builder(config_file, device)
    if not weights:
        raise TeacherLoadError(
            "MODEL.DEFEAT.TEACHER.WEIGHTS is empty: a teacher needs trained weights "
            "(a model_final.pth of the teacher config)"
        )
    local = expand_path(weights)  # what is checked is what is loaded
    if "://" not in local and not os.path.isfile(local):
        expanded = f" (expanded to {local!r})" if local != weights else ""
        raise TeacherLoadError(f"teacher weights not found: {weights!r}{expanded} (MODEL.DEFEAT.TEACHER.WEIGHTS)")
    model = build()
    checkpointer = RecordingCheckpointer(model)
    try:
        extra = checkpointer.load(local)
    except Exception as e:
        raise TeacherLoadError(f"cannot read teacher weights {weights!r}: {type(e).__name__}: {e}") from e
    problems = weight_problems(checkpointer.incompatible, listed=10)
    if problems:
        raise TeacherLoadError(
            f"teacher weights {weights!r} do not fit teacher config {config_file!r}; "
            + "; ".join(problems)
            + ". Check that the config (depth, widths, NUM_CLASSES) is the one the weights were trained with."
        )
    check_finite(model, weights)
    logger.info("DeFeat teacher: %s from config %s, weights %s", arch, config_file, weights)
    model.teacher_cfg = cfg
    model.teacher_weights = local
    iteration = extra.get("iteration") if isinstance(extra, dict) else None
    model.teacher_iteration = iteration if isinstance(iteration, int) else None  # the checkpoint's, for its AP
    return freeze(model).to(torch.device(device))
