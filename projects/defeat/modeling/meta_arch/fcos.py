"""DeFeatFCOS: Detectron2's FCOS + a frozen teacher + decoupled neck and per-location head distillation."""

from typing import List

from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.fcos import FCOS

from ..distiller import DeFeatConfigError
from .dense import DeFeatDenseMixin

__all__ = ["DeFeatFCOS"]


@META_ARCH_REGISTRY.register()
class DeFeatFCOS(DeFeatDenseMixin, FCOS):
    """FCOS student distilled from a frozen teacher (LazyConfig only, as Detectron2's FCOS).

    Constructor: ``teacher`` and ``defeat`` (settings) plus ``FCOS``'s arguments (see
    ``DeFeatDenseMixin``). Training returns FCOS's losses plus ``loss_defeat_{neck,head}_{obj,bg}``
    (and ``loss_defeat_box``); in eval mode it is exactly ``FCOS``. The neck loss runs on P3-P7; the head loss is the
    per-location sigmoid KL where objects are the locations FCOS assigns to a GT box (FCOS has
    no ignored locations), the centerness and box branches are not distilled.
    """

    defeat_family = FCOS

    @classmethod
    def from_config(cls, cfg):
        raise DeFeatConfigError(
            "Detectron2 configures FCOS with LazyConfig only (no YAML keys): train DeFeatFCOS with "
            "lazy_train_net.py and a LazyConfig such as configs/lazy/demo_defeat_fcos_slimR18_from_R18.py"
        )

    def prediction_dims(self) -> List[int]:
        return [self.num_classes, 4, 1]
