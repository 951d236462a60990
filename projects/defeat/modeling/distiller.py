"""The piece that turns student/teacher features and logits into DeFeat's weighted losses.

It is independent of the detector family: meta-architectures hand it feature dicts, GT boxes
and per-RoI (or per-anchor) logits; it owns the adapters, masks, losses, weights and schedule.
"""

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from detectron2.layers import ShapeSpec
from detectron2.utils.events import get_event_storage, has_event_storage

from ..config.settings import (
    DeFeatConfigError,
    resolve_settings,
    settings_from_cfg,
    settings_from_distiller_kwargs,
)
from ..config.validation import AUTO, MASK_MODES, setting_name, validate_settings
from .adapters import build_adapters
from .align import align_to_grid
from .losses import (
    box_distillation_loss,
    decoupled_feature_loss,
    decoupled_kl_loss,
    decoupled_sigmoid_kl_loss,
    standardize_channels,
)
from .masks import gt_masks
from .schedule import kd_weight

__all__ = ["DeFeatDistiller", "DeFeatConfigError", "MASK_MODES", "shared_levels", "pairing_table"]

logger = logging.getLogger(__name__)


def shared_levels(
    in_features: Sequence[str], student_shapes: Dict[str, ShapeSpec], teacher_shapes: Dict[str, ShapeSpec]
) -> List[str]:
    """The levels of ``in_features`` that both backbones produce with the same stride.

    A level that neither backbone produces is an error (a typo), not a level left out."""
    unknown = [f for f in in_features if f not in student_shapes and f not in teacher_shapes]
    if unknown:
        raise DeFeatConfigError(
            f"MODEL.DEFEAT.NECK.IN_FEATURES {unknown} are produced by neither the student's backbone "
            f"(levels {sorted(student_shapes)}) nor the teacher's (levels {sorted(teacher_shapes)})"
        )
    shared = [
        f
        for f in in_features
        if f in student_shapes and f in teacher_shapes and student_shapes[f].stride == teacher_shapes[f].stride
    ]
    if not shared:
        raise DeFeatConfigError(
            f"no level of MODEL.DEFEAT.NECK.IN_FEATURES {list(in_features)} is produced with the same "
            f"stride by the student (levels {sorted(student_shapes)}) and the teacher "
            f"(levels {sorted(teacher_shapes)}); list levels both models produce"
        )
    if len(shared) < len(in_features):
        logger.info("DeFeat neck loss on the levels both models share: %s (of %s)", shared, list(in_features))
    return shared


def pairing_table(
    in_features: Sequence[str],
    student_shapes: Dict[str, ShapeSpec],
    teacher_shapes: Dict[str, ShapeSpec],
    adapter: str,
) -> str:
    """The neck loss's level pairing as a text table: student level, teacher level, stride,
    channels (student -> teacher) and the adapter between them."""
    from tabulate import tabulate

    rows = [
        (f, f, student_shapes[f].stride, f"{student_shapes[f].channels} -> {teacher_shapes[f].channels}", adapter)
        for f in in_features
    ]
    return tabulate(rows, headers=["student level", "teacher level", "stride", "channels", "adapter"], tablefmt="pipe")


def _weighted_pair(term: str, obj: torch.Tensor, bg: torch.Tensor, weights) -> Dict[str, torch.Tensor]:
    """``loss_defeat_<term>_{obj,bg}``: a decoupled term's two parts times their ``(obj, bg)`` weights."""
    return {f"loss_defeat_{term}_obj": obj * weights[0], f"loss_defeat_{term}_bg": bg * weights[1]}


class DeFeatDistiller(nn.Module):
    """Adapters + decoupled neck and head losses and the box loss, weighted and scheduled.

    State: the adapters (``adapters.<feature>``) and, with ``BALANCE.TARGET_RATIO > 0``, the KD
    balance (``balance_factor``, ``balance_set_at``: see :meth:`set_kd_balance`); everything else
    is configuration.

    **KD balance** (``MODEL.DEFEAT.BALANCE``): every ``loss_defeat_*`` term is multiplied by
    ``balance_factor`` after the schedule's weight. It is 1 until the engine's
    ``KDTargetRatioHook`` has measured the run's KD/detection ratio over ``BALANCE.ITERS``
    iterations and called :meth:`set_kd_balance` with ``TARGET_RATIO / ratio``; the two buffers
    are saved with the model, so a resumed run keeps the factor (and is not measured again).
    """

    def __init__(
        self,
        *,
        student_shapes: Dict[str, ShapeSpec],
        teacher_shapes: Dict[str, ShapeSpec],
        settings: Optional[Mapping] = None,
        shared_levels_only: bool = False,
        **keyword_settings,
    ):
        """
        Args:
            student_shapes, teacher_shapes: backbone ``output_shape()`` of each model.
            settings: the checked settings of the gate (``CheckedSettings`` from
                :func:`defeat.config.settings.resolve_settings`, used as they are), or nested
                lowercase settings, partial or complete (checked here); None: the package defaults.
            shared_levels_only: imitate only the ``neck.in_features`` levels that both backbones
                produce with equal strides (teachers of another family, e.g. P2-P6 vs P3-P7).
            keyword_settings: single settings by the names of
                ``defeat.config.settings.DISTILLER_ARGS`` (``neck_bg_weight=8.0`` is
                ``neck.bg_weight``), put over ``settings`` and checked with them.
        """
        super().__init__()
        s = resolve_settings(settings)
        if keyword_settings:
            s = validate_settings(settings_from_distiller_kwargs(keyword_settings, base=s))
        neck, head, box, cross = s["neck"], s["head"], s["box"], s["cross_head"]
        self.neck_enabled = neck["enabled"]
        self.head_enabled = head["enabled"]
        self.box_enabled = box["enabled"]
        self.box_weight = float(box["weight"])
        self.box_loss = box["loss"]
        self.cross_enabled = cross["enabled"]
        self.cross_weights = (float(cross["obj_weight"]), float(cross["bg_weight"]))
        self.in_features = list(neck["in_features"])
        if self.neck_enabled and shared_levels_only:
            self.in_features = shared_levels(self.in_features, student_shapes, teacher_shapes)
        if self.neck_enabled:
            self._check_levels(student_shapes, teacher_shapes)
        self.strides = [student_shapes[f].stride for f in self.in_features] if self.neck_enabled else []
        self.adapters = (
            build_adapters(
                neck["adapter"],
                {f: student_shapes[f].channels for f in self.in_features},
                {f: teacher_shapes[f].channels for f in self.in_features},
                float(neck["adapter_init_std"]),
            )
            if self.neck_enabled
            else nn.ModuleDict()
        )
        if self.neck_enabled:
            table = pairing_table(self.in_features, student_shapes, teacher_shapes, neck["adapter"])
            logger.info("DeFeat neck pairing:\n%s", table)
        self.neck_weights = (float(neck["obj_weight"]), float(neck["bg_weight"]))
        self.head_weights = (float(head["obj_weight"]), float(head["bg_weight"]))
        self.feature_norm = neck["feature_norm"]
        self.mask_assign = neck["mask_assign"]
        self.scale_base = self._scale_base(neck)
        self.temperature = float(head["temperature"])
        self.schedule = s["loss_schedule"]
        self.warmup_iters = int(s["warmup_iters"])
        self.max_iter = int(s["max_iter"])
        self.balance_target = float(s["balance"]["target_ratio"])
        self.balance_iters = int(s["balance"]["iters"])
        if self.balance_target > 0:
            self.register_buffer("balance_factor", torch.tensor(1.0))
            self.register_buffer("balance_set_at", torch.tensor(-1, dtype=torch.int64))

    def _scale_base(self, neck: Mapping) -> Optional[float]:
        """``NECK.SCALE_BASE`` as a number; None for ``auto`` where it cannot act (the neck loss
        off, or no level placement by size)."""
        if neck["scale_base"] != AUTO:
            return float(neck["scale_base"])
        if self.neck_enabled and neck["mask_assign"] == "scale":
            raise DeFeatConfigError(
                f"{setting_name(('neck', 'scale_base'))} = {AUTO!r} (LazyConfig: model.defeat.neck.scale_base) is "
                "computed from the training set when a training run starts (train_net.py, lazy_train_net.py, "
                "DeFeatTrainer, build_lazy_trainer), which this model was built without; give the number (a run's "
                "config.yaml records the one it used, tools/inspect_dataset.py prints it), or call "
                "defeat.data.box_levels.resolve_scale_base(cfg) before building the model"
            )
        return None

    def _check_levels(self, student_shapes, teacher_shapes) -> None:
        for who, shapes in (("student", student_shapes), ("teacher", teacher_shapes)):
            missing = [f for f in self.in_features if f not in shapes]
            if missing:
                raise DeFeatConfigError(
                    f"MODEL.DEFEAT.NECK.IN_FEATURES {missing} are not produced by the {who}'s backbone "
                    f"(it has {sorted(shapes)}); list only levels both models produce"
                )
        for f in self.in_features:
            if student_shapes[f].stride != teacher_shapes[f].stride:
                raise DeFeatConfigError(
                    f"feature {f!r} has stride {student_shapes[f].stride} in the student but "
                    f"{teacher_shapes[f].stride} in the teacher; imitation needs aligned maps"
                )

    @classmethod
    def from_config(cls, cfg, student_shapes, teacher_shapes):
        """Built from a YAML config's ``MODEL.DEFEAT`` (and ``SOLVER.MAX_ITER``)."""
        return cls(student_shapes=student_shapes, teacher_shapes=teacher_shapes, settings=settings_from_cfg(cfg))

    @classmethod
    def from_settings(cls, settings, student_shapes, teacher_shapes, shared_levels_only: bool = False):
        """``DeFeatDistiller(student_shapes=..., teacher_shapes=..., settings=settings, ...)``."""
        return cls(
            student_shapes=student_shapes,
            teacher_shapes=teacher_shapes,
            settings=settings,
            shared_levels_only=shared_levels_only,
        )

    def masks(self, gt_boxes: Sequence[torch.Tensor], features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Object masks ``[N, H_l, W_l]`` of ``in_features`` from per-image GT boxes ``[K_i, 4]``."""
        shapes = [tuple(features[f].shape[-2:]) for f in self.in_features]
        if self.mask_assign == "coupled":
            n = features[self.in_features[0]].shape[0]
            return [features[f].new_ones((n, *hw), dtype=torch.float32) for f, hw in zip(self.in_features, shapes)]
        return gt_masks(gt_boxes, shapes, self.strides, self.mask_assign, self.scale_base)

    def adapt(self, student_feats: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The student's maps of ``in_features`` through their adapters, ``[N, C_teacher, H_l, W_l]``
        by level name (with autograd): what the neck loss compares and the cross-head loss reads."""
        return {f: self.adapters[f](student_feats[f]) for f in self.in_features}

    def neck_losses(
        self,
        student_feats: Dict[str, torch.Tensor],
        teacher_feats: Dict[str, torch.Tensor],
        gt_boxes: Sequence[torch.Tensor],
        teacher_scale: float = 1.0,
        adapted: Optional[Dict[str, torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Weighted ``loss_defeat_neck_{obj,bg}`` (before the schedule).

        Masks are built on the student's grids from ``gt_boxes`` (student frame); teacher maps
        are cropped or resampled to those grids (:func:`defeat.modeling.align.align_to_grid`, with
        ``teacher_scale`` = teacher input size / student input size). With ``feature_norm``
        "channel" both maps are standardised per image and channel first (after alignment).
        ``adapted``: :meth:`adapt` of ``student_feats`` when the caller has it already.
        """
        masks = self.masks(gt_boxes, student_feats)
        adapted = adapted if adapted is not None else self.adapt(student_feats)
        adapted = [adapted[f] for f in self.in_features]
        teacher = [
            align_to_grid(teacher_feats[f], student_feats[f].shape[-2:], teacher_scale) for f in self.in_features
        ]
        if self.feature_norm == "channel":
            adapted = [standardize_channels(a) for a in adapted]
            teacher = [standardize_channels(t.detach()) for t in teacher]
        obj, bg = decoupled_feature_loss(adapted, teacher, masks)
        return _weighted_pair("neck", obj, bg, self.neck_weights)

    def head_losses(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        is_object: torch.Tensor,
        sigmoid: bool = False,
        valid: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Weighted ``loss_defeat_head_{obj,bg}`` (before the schedule) from ``[R, K(+1)]`` logits;
        ``valid`` (sigmoid only): bool ``[R]``, False for entries left out of both groups."""
        if sigmoid:
            obj, bg = decoupled_sigmoid_kl_loss(student_logits, teacher_logits, is_object, self.temperature, valid)
        else:
            if valid is not None:
                raise ValueError("valid applies to the sigmoid (per-anchor) head loss only")
            obj, bg = decoupled_kl_loss(student_logits, teacher_logits, is_object, self.temperature)
        return _weighted_pair("head", obj, bg, self.head_weights)

    def cross_losses(
        self, cross_logits: torch.Tensor, teacher_logits: torch.Tensor, is_object: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """Weighted ``loss_defeat_cross_{obj,bg}`` (before the schedule): the decoupled KL of
        section 3 between the teacher's box classifier on the student's adapted features
        (``cross_logits [R, K+1]``) and on its own (``teacher_logits``), at ``HEAD.TEMPERATURE``."""
        obj, bg = decoupled_kl_loss(cross_logits, teacher_logits, is_object, self.temperature)
        return _weighted_pair("cross", obj, bg, self.cross_weights)

    @property
    def prediction_enabled(self) -> bool:
        """True when a loss needs the teacher's predictions (head KL, box or cross-head loss)."""
        return self.head_enabled or self.box_enabled or self.cross_enabled

    @property
    def student_predictions_needed(self) -> bool:
        """True when a loss compares the student's own box-head outputs (head KL or box loss)."""
        return self.head_enabled or self.box_enabled

    def box_losses(
        self,
        student: torch.Tensor,
        target: torch.Tensor,
        weights: torch.Tensor,
        is_object: torch.Tensor,
        per_entry: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Weighted ``loss_defeat_box`` (before the schedule) from ``[R, 4]`` student boxes and
        teacher targets in the form of ``box_loss`` (deltas for "l1", XYXY boxes for "giou"),
        the teacher's confidence ``weights [R]`` and ``is_object [R]``; ``per_entry``: normalised
        by all ``R`` entries, as the two-stage detection box loss
        (:func:`defeat.modeling.losses.box_distillation_loss`)."""
        loss = box_distillation_loss(student, target, weights, is_object, self.box_loss, per_entry)
        return {"loss_defeat_box": loss * self.box_weight}

    def kd_weight_at(self, iteration: int) -> float:
        """The schedule's KD weight (warm-up and decay, in [0, 1]) at ``iteration``."""
        return kd_weight(iteration, self.max_iter, self.schedule, self.warmup_iters)

    def scheduled(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Multiply KD losses by the schedule's weight at the current iteration (logged as
        ``defeat/kd_weight``) and, with the KD balance on, by ``balance_factor`` (a buffer on the
        losses' device: no host sync)."""
        iteration = get_event_storage().iter if has_event_storage() else 0
        w = self.kd_weight_at(iteration)
        if has_event_storage():
            get_event_storage().put_scalar("defeat/kd_weight", w, smoothing_hint=False)
        if self.balance_target > 0:
            return {k: v * w * self.balance_factor for k, v in losses.items()}
        return {k: v * w for k, v in losses.items()}

    # ---- KD balance (MODEL.DEFEAT.BALANCE): set by defeat.engine.kd_balance.KDTargetRatioHook ----

    def kd_balance(self) -> Optional[Tuple[float, int]]:
        """``(factor, iteration)`` once :meth:`set_kd_balance` was called (in this run or in the
        run a checkpoint was saved from); None before that and with the balance off."""
        if self.balance_target <= 0:
            return None
        at = int(self.balance_set_at.item())
        return (float(self.balance_factor.item()), at) if at >= 0 else None

    def set_kd_balance(self, factor: float, iteration: int) -> None:
        """Multiply every ``loss_defeat_*`` term by ``factor`` from the next step on; ``iteration``:
        the last iteration of the measurement (kept for the log of a resumed run).

        Raises:
            ValueError: the balance is off (``BALANCE.TARGET_RATIO`` 0), or ``factor`` is not a
                positive finite number.
        """
        if self.balance_target <= 0:
            raise ValueError("set_kd_balance: MODEL.DEFEAT.BALANCE.TARGET_RATIO is 0 (the balance is off)")
        if not (factor > 0 and factor < float("inf")):
            raise ValueError(f"set_kd_balance: factor must be positive and finite, got {factor}")
        self.balance_factor.fill_(float(factor))
        self.balance_set_at.fill_(int(iteration))

    def reset_kd_balance(self) -> None:
        """Back to factor 1, not measured (a fresh run that loaded another run's checkpoint)."""
        if self.balance_target > 0:
            self.balance_factor.fill_(1.0)
            self.balance_set_at.fill_(-1)
