"""DeFeat meta-architectures (importing this module registers them)."""
from .rcnn import DeFeatRCNN
from .retinanet import DeFeatRetinaNet

__all__ = ["DeFeatRCNN", "DeFeatRetinaNet"]
