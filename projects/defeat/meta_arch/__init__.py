"""DeFeat meta-architectures (importing this module registers them) and the mixin behind DeFeatRCNN."""
from .mixin import DeFeatMixin
from .rcnn import DeFeatRCNN
from .retinanet import DeFeatRetinaNet

__all__ = ["DeFeatMixin", "DeFeatRCNN", "DeFeatRetinaNet"]
