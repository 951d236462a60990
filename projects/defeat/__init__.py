"""DeFeat: Distilling Object Detectors via Decoupled Features (CVPR 2021) for Detectron2.

Importing this package registers the DeFeat meta-architectures in ``META_ARCH_REGISTRY`` and
the slim backbones in ``BACKBONE_REGISTRY``, and changes nothing else in the process (no warning
or log filters, no import hooks; this repository's scripts opt into quiet logs with
``defeat.engine.quiet.load_defeat``).

One exception, so that the repository's own commands answer ``--help`` and argument errors
before torch is imported (which takes seconds): when ``python -m defeat``, ``python -m
defeat.demo`` or ``python -m defeat.demo.data`` imports the package to find its module, or a
script whose ``__main__`` module sets ``DEFEAT_LIGHT_START = True`` imports it, the package
waits. Its light modules (``defeat.errors``, ``defeat.engine.entry``, ``defeat.analysis.cli``,
``defeat.engine.arguments``, ...) then import without torch; the registration and the names of
``__all__`` come with :func:`finish_import`, which the command calls once its arguments are read
(``defeat.engine.quiet.load_defeat``), or with the first use of one of those names.
"""

import sys as _sys

from .errors import DeFeatError

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

# The modules run by ``python -m`` that start light: the commands that use the models call
# finish_import once their arguments are read; the demo data's generator never needs torch.
LIGHT_COMMANDS = ("defeat", "defeat.demo", "defeat.demo.data")
LIGHT_START_FLAG = "DEFEAT_LIGHT_START"  # the ``__main__`` global of a script that starts light


def _module_after_dash_m(argv) -> str:
    """The module named by ``-m MODULE`` (or ``-mMODULE``) on an interpreter command line; ""."""
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("-m"):
            return arg[2:]
    return ""


def _starts_light() -> bool:
    """Whether one of the repository's commands is reading its arguments (see the docstring):
    ``sys.argv[0]`` is ``"-m"`` while ``python -m`` locates its module (documented), and
    ``sys.orig_argv`` (Python 3.10+) names that module."""
    if getattr(_sys.modules.get("__main__"), LIGHT_START_FLAG, False) is True:
        return True
    if _sys.argv[:1] != ["-m"]:
        return False
    return _module_after_dash_m(getattr(_sys, "orig_argv", ())) in LIGHT_COMMANDS


def finish_import() -> None:
    """Import the package's heavy part (torch, Detectron2): register the meta-architectures and
    the slim backbones and bind the names of ``__all__``. A plain ``import defeat`` does it;
    a no-op the second time."""
    global add_defeat_config, settings, get_config_file, build_adapter, build_adapters
    global DeFeatConfigError, DeFeatDistiller, decoupled_feature_loss, decoupled_kl_loss
    global decoupled_sigmoid_kl_loss, standardize_channels, gt_masks, kd_weight, TeacherLoadError, build_teacher
    global DeFeatDenseMixin, DeFeatFCOS, DeFeatMixin, DeFeatRCNN, DeFeatRetinaNet

    from .config import add_defeat_config, settings
    from .config.files import get_config_file
    from .modeling import backbones as _backbones  # noqa: F401  (registers the slim CPU backbones)
    from .modeling.adapters import build_adapter, build_adapters
    from .modeling.distiller import DeFeatConfigError, DeFeatDistiller
    from .modeling.losses import (
        decoupled_feature_loss,
        decoupled_kl_loss,
        decoupled_sigmoid_kl_loss,
        standardize_channels,
    )
    from .modeling.masks import gt_masks
    from .modeling.meta_arch import DeFeatDenseMixin, DeFeatFCOS, DeFeatMixin, DeFeatRCNN, DeFeatRetinaNet
    from .modeling.schedule import kd_weight
    from .modeling.teacher import TeacherLoadError, build_teacher


def __getattr__(name: str):
    """A name of ``__all__`` used while the package waits (see the docstring): the heavy part is
    imported first."""
    if name in __all__:
        finish_import()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _starts_light():
    finish_import()
