"""DeFeatRCNN: GeneralizedRCNN + a frozen teacher + decoupled neck and head distillation."""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage, get_event_storage

from ..distiller import DeFeatConfigError, DeFeatDistiller
from .common import TeacherMixin, teacher_from_config

__all__ = ["DeFeatRCNN", "box_head_logits"]

PROPOSAL_MODES = ("teacher", "student")


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
    def __init__(self, *, teacher, distiller: DeFeatDistiller, head_proposals: str = "teacher", **kwargs):
        """
        Args:
            teacher: a trained ``GeneralizedRCNN``; kept frozen and out of ``state_dict``.
            distiller: owns adapters, losses and schedule.
            head_proposals: RoIs of the head loss, ``"teacher"`` or ``"student"``.
            kwargs: arguments of ``GeneralizedRCNN``.
        """
        super().__init__(**kwargs)
        if head_proposals not in PROPOSAL_MODES:
            raise DeFeatConfigError(
                f"MODEL.DEFEAT.HEAD.PROPOSALS = {head_proposals!r} is not supported; choose one of {list(PROPOSAL_MODES)}"
            )
        self._set_teacher(teacher)
        self.distiller = distiller
        self.head_proposals = head_proposals
        if distiller.head_enabled:
            _check_box_heads(self.roi_heads, teacher.roi_heads)
            if teacher.roi_heads.num_classes != self.roi_heads.num_classes:
                raise DeFeatConfigError(
                    f"teacher has {teacher.roi_heads.num_classes} classes but the student "
                    f"{self.roi_heads.num_classes} (MODEL.ROI_HEADS.NUM_CLASSES); the head loss compares "
                    "class distributions, so both must be trained on the same classes"
                )

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        # Check our own settings before paying for the teacher build.
        mode = cfg.MODEL.DEFEAT.HEAD.PROPOSALS
        if mode not in PROPOSAL_MODES:
            raise DeFeatConfigError(
                f"MODEL.DEFEAT.HEAD.PROPOSALS = {mode!r} is not supported; choose one of {list(PROPOSAL_MODES)}"
            )
        teacher = teacher_from_config(cfg)
        if not isinstance(teacher, GeneralizedRCNN):
            raise DeFeatConfigError(
                f"DeFeatRCNN needs a GeneralizedRCNN teacher, got {type(teacher).__name__} "
                f"({cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE})"
            )
        ret["teacher"] = teacher
        ret["distiller"] = DeFeatDistiller(cfg, ret["backbone"].output_shape(), teacher.backbone.output_shape())
        ret["head_proposals"] = mode
        return ret

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)

        captured = []
        want_own_logits = self.distiller.head_enabled and self.head_proposals == "student"
        hook = (
            self.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: captured.append(o[0]))
            if want_own_logits else None
        )
        try:
            sampled, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        finally:
            if hook is not None:
                hook.remove()
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

        losses = {**detector_losses, **proposal_losses}
        losses.update(self._distill(batched_inputs, images, features, gt_instances, sampled, captured))
        return losses

    def _distill(self, batched_inputs, images, features, gt_instances, sampled, captured):
        """The weighted, scheduled DeFeat losses for one batch."""
        t, d = self.teacher, self.distiller
        losses = {}
        with torch.no_grad():
            t_images = self._teacher_images(batched_inputs, images)
            t_features = t.backbone(t_images.tensor)
        if d.neck_enabled:
            boxes = [g.gt_boxes.tensor for g in gt_instances]
            losses.update(d.neck_losses(features, t_features, boxes))
        if d.head_enabled:
            if self.head_proposals == "teacher":
                with torch.no_grad():
                    rois = self._teacher_rois(t_images, t_features, gt_instances)
                    t_logits = box_head_logits(t.roi_heads, t_features, [r.proposal_boxes for r in rois])
                s_logits = box_head_logits(self.roi_heads, features, [r.proposal_boxes for r in rois])
            else:
                rois, s_logits = sampled, captured[0]
                with torch.no_grad():
                    t_logits = box_head_logits(t.roi_heads, t_features, [r.proposal_boxes for r in rois])
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
