"""DeFeat meta-architectures (importing this module registers them)."""
from .rcnn import DeFeatRCNN

__all__ = ["DeFeatRCNN"]
