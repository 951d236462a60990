"""Read a Detectron2 YAML or LazyConfig (``.py``) file and build its model: what the tools share.

``get_config_file`` finds the configs that ship with the package (``configs/`` of the
repository, copied into an installed wheel as ``defeat/configs``), like
``detectron2.model_zoo.get_config_file``.

A YAML config becomes a ``CfgNode`` with DeFeat's keys (overrides ``KEY VALUE`` pairs, as
``train_net.py``); a ``.py`` file becomes a LazyConfig (overrides ``key=value``, as
``lazy_train_net.py``). The accessors below read the same facts from either form, so a tool
never needs to know which one it was given.
"""

import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch.nn as nn
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from omegaconf import DictConfig

__all__ = [
    "ConfigFileError",
    "configs_root",
    "get_config_file",
    "is_lazy_config",
    "load_config",
    "architecture",
    "is_defeat_config",
    "build_model_from_config",
    "build_backbone_from_config",
    "model_weights",
    "model_device",
    "train_dataset_names",
    "inference_augmentations",
    "image_format",
    "pixel_stats",
    "defeat_settings",
]

Config = Union[CfgNode, DictConfig]


class ConfigFileError(ValueError):
    """A config file is missing, unreadable, or its overrides do not apply."""


def configs_root() -> str:
    """The folder of the bundled configs: ``defeat/configs`` in an installed package, else the
    ``configs/`` folder of the source checkout the package is imported from."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.join(here, "configs"), os.path.join(os.path.dirname(os.path.dirname(here)), "configs")):
        if os.path.isdir(root):
            return root
    raise ConfigFileError(f"no bundled configs next to the package {here}: reinstall defeat-detectron2")


def get_config_file(config_path: str) -> str:
    """Absolute path of a bundled config, e.g. ``"Base-DeFeat-RCNN-FPN.yaml"`` or
    ``"COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml"`` (``_BASE_`` chains resolve
    inside the same folder).

    Raises:
        ConfigFileError: no such bundled config (the message lists where it looked).
    """
    root = configs_root()
    path = os.path.normpath(os.path.join(root, config_path))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise ConfigFileError(f"{config_path!r} is not one of DeFeat's bundled configs (in {root})")
    return path


def is_lazy_config(path: str) -> bool:
    """Whether ``path`` is a LazyConfig (Python) file rather than a YAML one."""
    return path.endswith(".py")


def load_config(path: str, opts: Sequence[str] = ()) -> Config:
    """The config of ``path`` with ``opts`` applied.

    YAML: ``get_cfg()`` + ``add_defeat_config`` + the file + ``opts`` as ``KEY VALUE`` pairs.
    ``.py``: ``LazyConfig.load`` + ``opts`` as ``key=value`` strings.

    Raises:
        ConfigFileError: the file does not exist, does not parse, or an override does not apply;
            the message names the file (or the override).
    """
    if not os.path.isfile(path):
        raise ConfigFileError(f"config file not found: {path!r}")
    opts = [str(o) for o in opts]
    if is_lazy_config(path):
        try:
            cfg = LazyConfig.load(path)
        except Exception as e:  # syntax errors, failing imports
            raise ConfigFileError(f"cannot load LazyConfig {path!r}: {type(e).__name__}: {e}") from e
        if "model" not in cfg:
            raise ConfigFileError(f"LazyConfig {path!r} has no 'model' entry")
        bad = [o for o in opts if "=" not in o]
        if bad:
            raise ConfigFileError(f"overrides of a LazyConfig are key=value, got {bad} for {path!r}")
        try:
            return LazyConfig.apply_overrides(cfg, opts)
        except Exception as e:
            raise ConfigFileError(f"cannot apply overrides {opts} to {path!r}: {type(e).__name__}: {e}") from e
    from .config import add_defeat_config, resolve_teacher_config_file

    cfg = get_cfg()
    add_defeat_config(cfg)
    try:
        cfg.merge_from_file(path)
        resolve_teacher_config_file(cfg, path)  # relative to the file that sets it, as _BASE_
    except Exception as e:  # yaml errors, unknown keys, bad _BASE_ paths
        raise ConfigFileError(f"cannot read config {path!r}: {type(e).__name__}: {e}") from e
    try:
        cfg.merge_from_list(opts)
    except Exception as e:  # odd count, unknown key, wrong type
        raise ConfigFileError(f"cannot apply overrides {opts} to {path!r}: {type(e).__name__}: {e}") from e
    return cfg


def architecture(cfg: Config) -> type:
    """The model class a config builds (not built): ``META_ARCHITECTURE`` or ``model._target_``."""
    if isinstance(cfg, CfgNode):
        from detectron2.modeling import META_ARCH_REGISTRY

        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    target = cfg.model._target_
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    return target


def is_defeat_config(cfg: Config) -> bool:
    """Whether the config builds a DeFeat model (a student with a teacher), whatever its name."""
    from .meta_arch.common import TeacherMixin

    cls = architecture(cfg)
    return isinstance(cls, type) and issubclass(cls, TeacherMixin)


def model_device(cfg: Config) -> str:
    """``MODEL.DEVICE`` or ``train.device`` (``cpu`` if the LazyConfig has no ``train``)."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.DEVICE
    return cfg.get("train", {}).get("device", "cpu")


def build_model_from_config(cfg: Config) -> nn.Module:
    """The config's model on its device: ``build_model(cfg)`` or ``instantiate(cfg.model)``.

    A DeFeat config builds its teacher too (``MODEL.DEFEAT.TEACHER`` / ``model.teacher``).
    """
    if isinstance(cfg, CfgNode):
        from detectron2.modeling import build_model

        return build_model(cfg)
    return instantiate(cfg.model).to(model_device(cfg))


def build_backbone_from_config(cfg: Config) -> nn.Module:
    """Only the config's backbone (no teacher, no heads), in eval mode on the config's device."""
    if isinstance(cfg, CfgNode):
        from detectron2.modeling import build_backbone

        backbone = build_backbone(cfg)
    else:
        backbone = instantiate(cfg.model.backbone)
    return backbone.to(model_device(cfg)).eval()


def model_weights(cfg: Config) -> str:
    """The weights the config starts from: ``MODEL.WEIGHTS`` or ``train.init_checkpoint``."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.WEIGHTS
    return cfg.get("train", {}).get("init_checkpoint", "") or ""


def train_dataset_names(cfg: Config) -> List[str]:
    """``DATASETS.TRAIN`` or the names of ``dataloader.train.dataset``."""
    if isinstance(cfg, CfgNode):
        return list(cfg.DATASETS.TRAIN)
    try:
        names = cfg.dataloader.train.dataset.names
    except Exception:  # no dataloader in the file
        return []
    return [names] if isinstance(names, str) else list(names)


def inference_augmentations(cfg: Config) -> List[Any]:
    """The test-time resize: ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``
    or the augmentations of ``dataloader.test.mapper`` (instantiated)."""
    if isinstance(cfg, CfgNode):
        from detectron2.data import transforms as T

        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    return list(instantiate(cfg.dataloader.test.mapper.augmentations))


def image_format(cfg: Config) -> str:
    """``INPUT.FORMAT`` or the model's ``input_format`` (``BGR`` if unset)."""
    if isinstance(cfg, CfgNode):
        return cfg.INPUT.FORMAT
    return cfg.model.get("input_format", None) or "BGR"


def pixel_stats(cfg: Config) -> Tuple[List[float], List[float]]:
    """``(pixel_mean, pixel_std)`` the model normalises its input with."""
    if isinstance(cfg, CfgNode):
        return list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    return list(cfg.model.pixel_mean), list(cfg.model.pixel_std)


def defeat_settings(cfg: Config) -> Dict[str, Any]:
    """Every DeFeat setting of the config in the nested lowercase form of ``defeat.settings``."""
    from .settings import resolve_settings, settings_from_cfg

    if isinstance(cfg, CfgNode):
        return settings_from_cfg(cfg)
    return resolve_settings(cfg.model.get("defeat", None))
