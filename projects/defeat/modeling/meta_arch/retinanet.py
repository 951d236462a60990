"""DeFeatRetinaNet: RetinaNet + a frozen teacher + decoupled neck and per-anchor head distillation."""

from typing import List

from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet

from ..distiller import DeFeatConfigError
from .dense import DeFeatDenseMixin, dense_class_logits

__all__ = ["DeFeatRetinaNet", "dense_class_logits"]


@META_ARCH_REGISTRY.register()
class DeFeatRetinaNet(DeFeatDenseMixin, RetinaNet):
    """RetinaNet student distilled from a frozen teacher.

    Constructor: ``teacher`` and ``defeat`` (settings) plus ``RetinaNet``'s arguments (see
    ``DeFeatDenseMixin``). Training returns RetinaNet's losses plus
    ``loss_defeat_{neck,head}_{obj,bg}`` (and ``loss_defeat_box``); in eval mode it is exactly
    ``RetinaNet`` (the teacher is not run). The head loss is the per-anchor sigmoid KL
    (docs/algorithm.md, section 3) with the student's anchor labels: foreground anchors are
    objects, ignored anchors are left out, the rest are background; the box loss runs on the
    foreground anchors (section 3).
    """

    defeat_family = RetinaNet

    @classmethod
    def from_config(cls, cfg):
        levels = list(cfg.MODEL.RETINANET.IN_FEATURES)
        try:
            return super().from_config(cfg)
        except KeyError as e:  # RetinaNet.from_config indexes the backbone's shapes by IN_FEATURES
            if e.args and e.args[0] in levels:
                raise DeFeatConfigError(
                    f"MODEL.RETINANET.IN_FEATURES {levels} names level {e.args[0]!r}, which the backbone "
                    f"{cfg.MODEL.BACKBONE.NAME} does not produce (a Faster R-CNN FPN gives p2-p6); use a "
                    "RetinaNet config (MODEL.BACKBONE.NAME build_retinanet_resnet_fpn_backbone, P3-P7) or "
                    "list levels the backbone produces"
                ) from e
            raise

    def prediction_dims(self) -> List[int]:
        return [self.num_classes, 4]
