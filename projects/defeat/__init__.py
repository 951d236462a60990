"""DeFeat: Distilling Object Detectors via Decoupled Features (CVPR 2021) for Detectron2.

Importing this package registers the DeFeat meta-architectures in ``META_ARCH_REGISTRY``, and
hides the pinned stack's known-harmless warnings (``defeat.known_warnings``; before anything here
imports Detectron2, so scripts import ``defeat`` first).
"""

from . import known_warnings as _known_warnings  # noqa: F401  (first: installs its filters when imported)

# isort: split
from . import _compat
from .config import add_defeat_config
from .config.files import get_config_file
from .modeling import backbones as _backbones  # noqa: F401  (registers the slim CPU backbones)
from .modeling.adapters import build_adapter, build_adapters
from .modeling.distiller import DeFeatConfigError, DeFeatDistiller
from .modeling.losses import decoupled_feature_loss, decoupled_kl_loss, decoupled_sigmoid_kl_loss, standardize_channels
from .modeling.masks import gt_masks
from .modeling.meta_arch import DeFeatDenseMixin, DeFeatFCOS, DeFeatMixin, DeFeatRCNN, DeFeatRetinaNet
from .modeling.schedule import kd_weight
from .modeling.teacher import TeacherLoadError, build_teacher

__version__ = "0.1.0"

_compat.install()  # defeat.masks, defeat.teacher, ... (the flat layout's paths) keep working


def __getattr__(name):  # PEP 562: ``defeat.masks`` and the other old names, as attributes
    return _compat.attribute(__name__, name)


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
