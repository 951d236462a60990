"""DeFeat meta-architectures (importing this module registers them) and the mixins behind them."""

from .dense import DeFeatDenseMixin
from .fcos import DeFeatFCOS
from .mixin import DeFeatMixin
from .rcnn import DeFeatRCNN
from .retinanet import DeFeatRetinaNet

__all__ = ["DeFeatMixin", "DeFeatDenseMixin", "DeFeatRCNN", "DeFeatRetinaNet", "DeFeatFCOS"]
