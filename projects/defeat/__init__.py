"""DeFeat: Distilling Object Detectors via Decoupled Features (CVPR 2021) for Detectron2.

Importing this package registers the DeFeat meta-architectures in ``META_ARCH_REGISTRY`` and
the slim backbones in ``BACKBONE_REGISTRY``, and changes nothing else in the process (no warning
or log filters, no import hooks; this repository's scripts opt into quiet logs with
``defeat.engine.quiet.quiet_logs``).
"""

from .config import add_defeat_config, settings
from .config.files import get_config_file
from .errors import DeFeatError
from .modeling import backbones as _backbones  # noqa: F401  (registers the slim CPU backbones)
from .modeling.adapters import build_adapter, build_adapters
from .modeling.distiller import DeFeatConfigError, DeFeatDistiller
from .modeling.losses import decoupled_feature_loss, decoupled_kl_loss, decoupled_sigmoid_kl_loss, standardize_channels
from .modeling.masks import gt_masks
from .modeling.meta_arch import DeFeatDenseMixin, DeFeatFCOS, DeFeatMixin, DeFeatRCNN, DeFeatRetinaNet
from .modeling.schedule import kd_weight
from .modeling.teacher import TeacherLoadError, build_teacher

__version__ = "0.1.0"


__all__ = [
    "add_defeat_config",
    "settings",
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
    "DeFeatError",
    "TeacherLoadError",
    "DeFeatConfigError",
    "DeFeatDistiller",
    "DeFeatMixin",
    "DeFeatRCNN",
    "DeFeatRetinaNet",
    "DeFeatDenseMixin",
    "DeFeatFCOS",
]
