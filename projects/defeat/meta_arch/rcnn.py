"""DeFeatRCNN: GeneralizedRCNN + a frozen teacher + decoupled neck and head distillation."""
from typing import Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage, get_event_storage

from ..distiller import DeFeatConfigError, DeFeatDistiller
from ..settings import resolve_settings, settings_from_cfg
from .box_tap import BoxHeadTap
from .common import TeacherMixin, check_teacher_family, teacher_from_config

__all__ = ["DeFeatRCNN", "box_head_logits"]

PROPOSAL_MODES = ("teacher", "student")


def _check_proposal_mode(mode: str) -> None:
    if mode not in PROPOSAL_MODES:
        raise DeFeatConfigError(
            f"MODEL.DEFEAT.HEAD.PROPOSALS = {mode!r} is not supported; choose one of {list(PROPOSAL_MODES)}"
        )


def box_head_logits(roi_heads, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
    """Classification logits ``[R, K+1]`` of a ``StandardROIHeads`` box head on given boxes."""
    x = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], boxes)
    scores, _ = roi_heads.box_predictor(roi_heads.box_head(x))
    return scores


def _check_box_heads(student, teacher) -> None:
    for who, heads in (("student", student), ("teacher", teacher)):
        if not all(hasattr(heads, a) for a in ("box_pooler", "box_head", "box_predictor", "box_in_features")):
            raise DeFeatConfigError(
                f"the head loss needs a StandardROIHeads-style box head, but the {who}'s ROI heads are "
                f"{type(heads).__name__}; set MODEL.DEFEAT.HEAD.ENABLED False"
            )


@META_ARCH_REGISTRY.register()
class DeFeatRCNN(TeacherMixin, GeneralizedRCNN):
    """Faster/Mask R-CNN student distilled from a frozen two-stage teacher.

    Training returns the parent's losses plus ``loss_defeat_{neck,head}_{obj,bg}``; in eval mode
    it is exactly ``GeneralizedRCNN`` (the teacher is not run).
    """

    @configurable
    def __init__(self, *, teacher: nn.Module, defeat: Optional[Mapping] = None, **kwargs):
        """
        Args:
            teacher: a trained detector (e.g. from ``defeat.build_teacher``, which a LazyConfig
                calls with ``LazyCall``), kept frozen and out of ``state_dict``: a ``GeneralizedRCNN``,
                or any detector with an FPN ``backbone`` for the neck loss alone (e.g. RetinaNet).
            defeat: DeFeat settings, nested and lowercase (``neck.bg_weight``, ``head.proposals``,
                ..., see ``defeat.settings``); missing ones take their defaults. The distiller
                is built from them and the two backbones' output shapes.
            kwargs: arguments of ``GeneralizedRCNN``.
        """
        super().__init__(**kwargs)
        settings = resolve_settings(defeat)
        _check_proposal_mode(settings["head"]["proposals"])
        self._set_teacher(teacher)
        cross = check_teacher_family(GeneralizedRCNN, teacher, settings["head"]["enabled"])
        self.distiller = DeFeatDistiller.from_settings(
            settings, self.backbone.output_shape(), teacher.backbone.output_shape(), shared_levels_only=cross
        )
        self.head_proposals = settings["head"]["proposals"]
        if self.distiller.head_enabled:
            _check_box_heads(self.roi_heads, teacher.roi_heads)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        _check_proposal_mode(cfg.MODEL.DEFEAT.HEAD.PROPOSALS)  # before paying for the teacher build
        ret["defeat"] = settings_from_cfg(cfg)
        ret["teacher"] = teacher_from_config(cfg)
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)

        teacher = self._run_teacher(batched_inputs, images, gt_instances)
        head, on_teacher_rois = self.distiller.head_enabled, self.head_proposals == "teacher"
        extra = [r.proposal_boxes for r in teacher["rois"]] if head and on_teacher_rois else None
        with BoxHeadTap(self.roi_heads, extra, capture_own=head and not on_teacher_rois) as tap:
            sampled, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

        losses = {**detector_losses, **proposal_losses}
        losses.update(self._distill(features, gt_instances, sampled, teacher, tap))
        return losses

    def _run_teacher(self, batched_inputs, images, gt_instances) -> Dict:
        """Everything the teacher contributes, computed once and without autograd.

        Returns ``features`` (dict of FPN maps) and, for the head loss on teacher RoIs, ``rois``
        (sampled, labelled proposals) and their classification ``logits`` ``[R, K+1]``.
        """
        t, d = self.teacher, self.distiller
        out = {"rois": None, "logits": None}
        t_images, out["features"] = self._teacher_features(batched_inputs, images)
        with torch.no_grad():
            if d.head_enabled and self.head_proposals == "teacher":
                out["rois"] = self._teacher_rois(t_images, out["features"], gt_instances)
                boxes = [r.proposal_boxes for r in out["rois"]]
                out["logits"] = box_head_logits(t.roi_heads, out["features"], boxes)
        return out

    def _distill(self, features, gt_instances, sampled, teacher, tap):
        """The weighted, scheduled DeFeat losses for one batch."""
        d = self.distiller
        losses = {}
        if d.neck_enabled:
            boxes = [g.gt_boxes.tensor for g in gt_instances]
            losses.update(d.neck_losses(features, teacher["features"], boxes))
        if d.head_enabled:
            if self.head_proposals == "teacher":
                rois, t_logits = teacher["rois"], teacher["logits"]
                s_logits = tap.extra
                if s_logits is None:  # box head not row-independent: a separate pass
                    s_logits = box_head_logits(self.roi_heads, features, [r.proposal_boxes for r in rois])
            else:
                rois, s_logits = sampled, tap.own
                with torch.no_grad():
                    boxes = [r.proposal_boxes for r in rois]
                    t_logits = box_head_logits(self.teacher.roi_heads, teacher["features"], boxes)
            labels = torch.cat([r.gt_classes for r in rois])
            is_object = (labels >= 0) & (labels < self.roi_heads.num_classes)
            losses.update(d.head_losses(s_logits, t_logits, is_object))
        return d.scheduled(losses)

    def _teacher_rois(self, t_images, t_features, gt_instances) -> List[Instances]:
        """Teacher RPN proposals, labelled and sampled by the teacher's ROI heads (GT appended)."""
        t = self.teacher
        proposals, _ = t.proposal_generator(t_images, t_features, None)
        with EventStorage():  # keep the teacher's sampling statistics out of the student's metrics
            return t.roi_heads.label_and_sample_proposals(proposals, gt_instances)
