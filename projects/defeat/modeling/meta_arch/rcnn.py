"""DeFeatRCNN: GeneralizedRCNN + a frozen teacher + decoupled neck and head distillation."""

from typing import Dict, List

from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage

from .box_heads import is_cascade
from .box_tap import BoxHeadTap
from .mixin import DeFeatMixin, box_head_logits

__all__ = ["DeFeatRCNN", "box_head_logits"]


@META_ARCH_REGISTRY.register()
class DeFeatRCNN(DeFeatMixin, GeneralizedRCNN):
    """Faster/Mask/Cascade R-CNN student distilled from a frozen teacher.

    Constructor: ``teacher`` and ``defeat`` (settings) plus ``GeneralizedRCNN``'s arguments
    (see ``DeFeatMixin``). Training returns the parent's losses plus
    ``loss_defeat_{neck,head,cross}_{obj,bg}`` and ``loss_defeat_box``; in eval mode it is exactly ``GeneralizedRCNN``
    (the teacher is not run).
    """

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)

        teacher = self.defeat_teacher(batched_inputs, images, gt_instances)
        # One student box-head pass: the teacher's RoIs ride along with the student's own. A
        # cascade refines its RoIs between stages, so its head-loss logits come from a separate
        # pass over the same RoIs in every stage (defeat_losses runs it).
        head = self.distiller.student_predictions_needed and not is_cascade(self.roi_heads)
        extra = [r.proposal_boxes for r in teacher["rois"]] if head and self.head_on_teacher_rois else None
        with BoxHeadTap(self.roi_heads, extra, capture_own=head and not self.head_on_teacher_rois) as tap:
            sampled, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

        losses = {**detector_losses, **proposal_losses}
        if self.head_on_teacher_rois:
            student_logits, student_deltas = tap.extra, tap.extra_deltas
        else:
            student_logits, student_deltas = tap.own, tap.own_deltas
        losses.update(self.defeat_losses(features, gt_instances, teacher, sampled, student_logits, student_deltas))
        return losses
