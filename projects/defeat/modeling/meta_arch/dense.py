"""DeFeat for Detectron2's dense detectors (``DenseDetector``: RetinaNet, FCOS), one implementation.

``DeFeatDenseMixin`` holds the teacher, the distiller and the KD losses; a family is the mixin
plus its Detectron2 class and one hook, :meth:`DeFeatDenseMixin.prediction_dims` (the per-location
sizes of the head outputs, e.g. ``[K, 4]`` for RetinaNet, ``[K, 4, 1]`` for FCOS). The training
pass is the family's own ``anchor_generator``/``label_anchors``/``losses``; the head loss is the
per-location sigmoid KL with the family's location labels: locations assigned to a GT box are
objects, ignored ones (label ``-1``) are left out, the rest are background.
"""

from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.meta_arch.dense_detector import DenseDetector

from ...config.settings import resolve_settings
from ..align import align_to_grid
from ..distiller import DeFeatConfigError, DeFeatDistiller
from .box_kd import dense_box_terms
from .common import TeacherMixin, check_teacher_family, defeat_from_config, prediction_terms

__all__ = [
    "DeFeatDenseMixin",
    "dense_class_logits",
    "dense_predictions",
    "check_same_locations",
    "check_head_in_features",
]


def dense_class_logits(
    model: DenseDetector, features: Dict[str, torch.Tensor], grids: Optional[Sequence] = None, scale: float = 1.0
) -> torch.Tensor:
    """Classification logits ``[N, R, K]`` of a dense head over all its locations (anchors).

    ``R = sum_l H_l * W_l * A`` in the order of ``model.anchor_generator``; only the
    classification branch runs when the head exposes it (``cls_subnet``/``cls_score``).
    ``grids``: per-level ``(H, W)`` to align the maps to first (the student's grids; the
    teacher saw its input resized by ``scale``, see :func:`defeat.modeling.align.align_to_grid`).
    """
    head, feats = model.head, [features[f] for f in model.head_in_features]
    if hasattr(head, "cls_subnet") and hasattr(head, "cls_score"):
        per_level = [head.cls_score(head.cls_subnet(x)) for x in feats]
    else:
        per_level = head(feats)[0]
    if grids is not None:
        per_level = [align_to_grid(x, hw, scale) for x, hw in zip(per_level, grids)]
    (per_level,) = model._transpose_dense_predictions([per_level], [model.num_classes])
    return cat(per_level, dim=1)


def dense_predictions(
    model: DenseDetector, features: Dict[str, torch.Tensor], dims: Sequence[int], grids: Optional[Sequence] = None
) -> List[torch.Tensor]:
    """Every head output over all locations: ``[N, R, d]`` for each ``d`` of ``dims`` (e.g.
    ``[K, 4]``: logits and box deltas), in the order of ``model.anchor_generator``.

    ``grids``: per-level ``(H, W)`` to crop the maps to first (the student's grids, for a teacher
    whose batch was padded further at the same scale).
    """
    per_output = model.head([features[f] for f in model.head_in_features])
    if grids is not None:
        per_output = [[align_to_grid(x, hw, 1.0) for x, hw in zip(maps, grids)] for maps in per_output]
    return [cat(levels, dim=1) for levels in model._transpose_dense_predictions(per_output, list(dims))]


def check_head_in_features(backbone, head_in_features, name: str, who: str = "student") -> None:
    """Every ``head_in_features`` level is a backbone output, else a clear DeFeatConfigError."""
    if head_in_features is None:  # DenseDetector's default: every backbone level
        return
    shapes = backbone.output_shape()
    missing = [f for f in head_in_features if f not in shapes]
    if missing:
        raise DeFeatConfigError(
            f"the {who}'s {name} head reads levels {missing} that its backbone does not "
            f"produce (it gives {sorted(shapes)}); a dense detector needs a backbone with its levels "
            "(e.g. MODEL.BACKBONE.NAME build_retinanet_resnet_fpn_backbone for P3-P7 and "
            "MODEL.RETINANET.IN_FEATURES, or head_in_features in a LazyConfig)"
        )


def check_same_locations(student: DenseDetector, teacher: DenseDetector) -> None:
    """The per-location head loss pairs locations by index: both models need the same ones."""
    s, t = student.anchor_generator, teacher.anchor_generator
    same = (
        list(s.strides) == list(t.strides)
        and len(s.cell_anchors) == len(t.cell_anchors)
        and all(a.shape == b.shape and torch.allclose(a, b, atol=1e-3) for a, b in zip(s.cell_anchors, t.cell_anchors))
    )
    if not same:
        raise DeFeatConfigError(
            f"the {type(student).__name__} head loss compares student and teacher logits anchor by anchor, but "
            f"their anchors differ (strides {list(s.strides)} vs {list(t.strides)}, or MODEL.ANCHOR_GENERATOR "
            "SIZES/ASPECT_RATIOS); use the same anchors and head levels (RETINANET.IN_FEATURES / "
            "head_in_features), or set MODEL.DEFEAT.HEAD.ENABLED False"
        )


class DeFeatDenseMixin(TeacherMixin):
    """Frozen hidden teacher + ``distiller`` + DeFeat's losses for a ``DenseDetector`` subclass.

    A family mixes it in before its Detectron2 class and names that class in ``defeat_family``
    (the head loss needs a teacher of the same family); state added: ``distiller.adapters.*``.
    In eval mode the model is exactly its Detectron2 parent (the teacher is not run).
    """

    defeat_family: type = DenseDetector

    @configurable
    def __init__(self, *, teacher: nn.Module, defeat: Optional[Mapping] = None, **kwargs):
        """
        Args:
            teacher: a trained detector, frozen and kept out of ``state_dict``: one of the same
                family with the student's locations (for the head loss), or any detector with an
                FPN ``backbone`` for the neck loss alone.
            defeat: DeFeat settings, nested and lowercase (see ``defeat.config.settings``); missing ones
                take their defaults. ``head.proposals`` does not apply (locations are the RoIs).
            kwargs: arguments of the Detectron2 parent class.
        """
        if "backbone" in kwargs:  # before the parent indexes the backbone's shapes with them
            check_head_in_features(kwargs["backbone"], kwargs.get("head_in_features"), self.defeat_family.__name__)
        super().__init__(**kwargs)
        settings = resolve_settings(defeat)
        if settings["cross_head"]["enabled"]:
            raise DeFeatConfigError(
                f"MODEL.DEFEAT.CROSS_HEAD runs the teacher's box head on RoIs, so it is for two-stage students "
                f"(DeFeatRCNN), not {type(self).__name__}; set MODEL.DEFEAT.CROSS_HEAD.ENABLED False"
            )
        terms = prediction_terms(settings)
        self._set_teacher(teacher, settings["teacher_input_scale"], terms)
        cross = check_teacher_family(self.defeat_family, teacher, terms)
        self.distiller = DeFeatDistiller.from_settings(
            settings, self.backbone.output_shape(), teacher.backbone.output_shape(), shared_levels_only=cross
        )
        self._set_inheritance(settings["inherit"])
        if terms:
            check_same_locations(self, teacher)
        if self.distiller.box_enabled and settings["teacher_input_scale"] != 1.0:
            raise DeFeatConfigError(
                f"the {type(self).__name__} box loss compares the two heads' boxes anchor by anchor, which needs "
                f"the teacher at the student's input size, but MODEL.DEFEAT.TEACHER.INPUT_SCALE is "
                f"{settings['teacher_input_scale']}; set it to 1.0 or MODEL.DEFEAT.BOX.ENABLED False"
            )

    @classmethod
    def from_config(cls, cfg):
        return {**super().from_config(cfg), **defeat_from_config(cfg)}

    def prediction_dims(self) -> List[int]:
        """Per-location sizes of the head's outputs, in order (classification first)."""
        raise NotImplementedError

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        head_features = [features[f] for f in self.head_in_features]
        # The parent's forward_training, keeping the location labels for the head loss.
        logits, deltas, *rest = self._transpose_dense_predictions(self.head(head_features), self.prediction_dims())
        anchors = self.anchor_generator(head_features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes, *rest)
        losses.update(
            self.defeat_losses(batched_inputs, images, features, gt_instances, logits, gt_labels, deltas, anchors)
        )
        return losses

    def defeat_losses(
        self, batched_inputs, images, features, gt_instances, logits, gt_labels, deltas=None, anchors=None
    ) -> Dict:
        """The scheduled ``loss_defeat_*`` of one batch from the student's features, per-level
        logits ``[N, R_l, K]`` and location labels (class, ``num_classes`` = background, -1 = ignored);
        the box loss also needs the per-level deltas ``[N, R_l, 4]`` and ``anchors`` (per-level ``Boxes``)."""
        _, t_features = self.teacher_features(batched_inputs, images)
        d, scale = self.distiller, self.teacher_input_scale
        kd = {}
        if d.neck_enabled:
            kd.update(d.neck_losses(features, t_features, [g.gt_boxes.tensor for g in gt_instances], scale))
        if not d.prediction_enabled:
            return d.scheduled(kd)
        grids = [features[f].shape[-2:] for f in self.head_in_features]
        with torch.no_grad():
            if d.box_enabled:  # the whole teacher head (at the student's scale: checked at build)
                t_logits, t_deltas = dense_predictions(self.teacher, t_features, self.prediction_dims(), grids)[:2]
            else:  # the classification branch alone
                t_logits = dense_class_logits(self.teacher, t_features, grids, scale)
        labels = torch.stack(gt_labels).flatten()  # [N*R]
        valid = labels >= 0
        is_object = valid & (labels != self.num_classes)
        if d.head_enabled:
            s_logits = cat(logits, dim=1).flatten(0, 1)  # [N*R, K], masked rather than indexed
            kd.update(d.head_losses(s_logits, t_logits.flatten(0, 1), is_object, sigmoid=True, valid=valid))
        if d.box_enabled:
            if deltas is None or anchors is None:
                raise ValueError("the box loss needs the student's per-level `deltas` and `anchors`")
            n = len(gt_labels)
            boxes = type(anchors[0]).cat(anchors).tensor.repeat(n, 1)  # [N*R, 4], image-major like labels
            terms = dense_box_terms(
                cat(deltas, dim=1).flatten(0, 1),
                t_deltas.flatten(0, 1),
                t_logits.flatten(0, 1),
                boxes,
                labels,
                self.num_classes,
                self.box2box_transform,
                self.teacher.box2box_transform,
                d.box_loss,
            )
            kd.update(d.box_losses(*terms))
        return d.scheduled(kd)
