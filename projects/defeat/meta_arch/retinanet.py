"""DeFeatRetinaNet: RetinaNet + a frozen teacher + decoupled neck and per-anchor head distillation."""
from typing import Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet

from ..distiller import DeFeatConfigError, DeFeatDistiller
from ..settings import resolve_settings, settings_from_cfg
from ..validation import validate_settings
from .common import TeacherMixin, check_teacher_family, teacher_from_config

__all__ = ["DeFeatRetinaNet", "dense_class_logits"]


def dense_class_logits(model: RetinaNet, features: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Classification logits ``[N, R, K]`` of a RetinaNet head over all its anchors.

    ``R = sum_l H_l * W_l * A`` in the order of ``model.anchor_generator``; only the
    classification branch runs when the head exposes it (``cls_subnet``/``cls_score``).
    """
    head, feats = model.head, [features[f] for f in model.head_in_features]
    if hasattr(head, "cls_subnet") and hasattr(head, "cls_score"):
        per_level = [head.cls_score(head.cls_subnet(x)) for x in feats]
    else:
        per_level = head(feats)[0]
    (per_level,) = model._transpose_dense_predictions([per_level], [model.num_classes])
    return cat(per_level, dim=1)


def _check_same_anchors(student: RetinaNet, teacher: RetinaNet) -> None:
    """The per-anchor head loss pairs anchors by index: both models must have the same ones."""
    s, t = student.anchor_generator, teacher.anchor_generator
    same = (
        list(s.strides) == list(t.strides)
        and len(s.cell_anchors) == len(t.cell_anchors)
        and all(a.shape == b.shape and torch.allclose(a, b, atol=1e-3) for a, b in zip(s.cell_anchors, t.cell_anchors))
    )
    if not same:
        raise DeFeatConfigError(
            "the RetinaNet head loss compares student and teacher logits anchor by anchor, but their "
            f"anchors differ (strides {list(s.strides)} vs {list(t.strides)}, or MODEL.ANCHOR_GENERATOR "
            "SIZES/ASPECT_RATIOS); use the same anchors and RETINANET.IN_FEATURES, or set "
            "MODEL.DEFEAT.HEAD.ENABLED False"
        )


@META_ARCH_REGISTRY.register()
class DeFeatRetinaNet(TeacherMixin, RetinaNet):
    """RetinaNet student distilled from a frozen teacher.

    Training returns RetinaNet's losses plus ``loss_defeat_{neck,head}_{obj,bg}``; in eval mode it
    is exactly ``RetinaNet`` (the teacher is not run). The head loss is the per-anchor sigmoid KL
    (docs/algorithm.md, section 3) with the student's anchor labels: foreground anchors are objects, ignored
    anchors are left out, the rest are background.
    """

    @configurable
    def __init__(self, *, teacher: nn.Module, defeat: Optional[Mapping] = None, **kwargs):
        """
        Args:
            teacher: a trained detector, frozen and kept out of ``state_dict``: a ``RetinaNet`` with
                the student's anchors (for the head loss), or any detector with an FPN ``backbone``
                for the neck loss alone (e.g. Faster R-CNN).
            defeat: DeFeat settings, nested and lowercase (see ``defeat.settings``); missing ones
                take their defaults. ``head.proposals`` does not apply (anchors are the RoIs).
            kwargs: arguments of ``RetinaNet``.
        """
        super().__init__(**kwargs)
        settings = resolve_settings(defeat)
        self._set_teacher(teacher)
        cross = check_teacher_family(RetinaNet, teacher, settings["head"]["enabled"])
        self.distiller = DeFeatDistiller.from_settings(
            settings, self.backbone.output_shape(), teacher.backbone.output_shape(), shared_levels_only=cross
        )
        if self.distiller.head_enabled:
            _check_same_anchors(self, teacher)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["defeat"] = validate_settings(settings_from_cfg(cfg))  # before paying for the teacher build
        ret["teacher"] = teacher_from_config(cfg)
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        head_features = [features[f] for f in self.head_in_features]
        # RetinaNet.forward_training, keeping the anchor labels for the head loss.
        logits, deltas = self._transpose_dense_predictions(self.head(head_features), [self.num_classes, 4])
        anchors = self.anchor_generator(head_features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        losses = self.losses(anchors, logits, gt_labels, deltas, gt_boxes)

        _, t_features = self._teacher_features(batched_inputs, images)
        d = self.distiller
        kd = {}
        if d.neck_enabled:
            kd.update(d.neck_losses(features, t_features, [g.gt_boxes.tensor for g in gt_instances]))
        if d.head_enabled:
            with torch.no_grad():
                t_logits = dense_class_logits(self.teacher, t_features)
            labels = torch.stack(gt_labels)  # [N, R]: class, num_classes = background, -1 = ignored
            valid = (labels >= 0).flatten()
            is_object = valid & (labels.flatten() != self.num_classes)
            s_logits = cat(logits, dim=1).flatten(0, 1)  # [N*R, K], masked rather than indexed
            kd.update(d.head_losses(s_logits, t_logits.flatten(0, 1), is_object, sigmoid=True, valid=valid))
        losses.update(d.scheduled(kd))
        return losses
