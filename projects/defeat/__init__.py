"""DeFeat: Distilling Object Detectors via Decoupled Features (CVPR 2021) for Detectron2.

Importing this package registers the DeFeat meta-architectures in ``META_ARCH_REGISTRY``.
"""

from .adapters import build_adapter, build_adapters
from .config import add_defeat_config
from .config_files import get_config_file
from .demo import backbone as _demo_backbone  # noqa: F401  (registers the demo's slim backbones)
from .distiller import DeFeatConfigError, DeFeatDistiller
from .losses import decoupled_feature_loss, decoupled_kl_loss, decoupled_sigmoid_kl_loss, standardize_channels
from .masks import gt_masks
from .meta_arch import DeFeatDenseMixin, DeFeatFCOS, DeFeatMixin, DeFeatRCNN, DeFeatRetinaNet
from .schedule import kd_weight
from .teacher import TeacherLoadError, build_teacher

__version__ = "0.1.0"

__all__ = [
    "add_defeat_config",
    "get_config_file",
    "gt_masks",
    "decoupled_feature_loss",
    "decoupled_kl_loss",
    "decoupled_sigmoid_kl_loss",
    "standardize_channels",
    "kd_weight",
    "build_adapter",
    "build_adapters",
    "build_teacher",
    "TeacherLoadError",
    "DeFeatConfigError",
    "DeFeatDistiller",
    "DeFeatMixin",
    "DeFeatRCNN",
    "DeFeatRetinaNet",
    "DeFeatDenseMixin",
    "DeFeatFCOS",
]
