"""DeFeat's settings as one nested, lowercase mapping, shared by YAML and LazyConfig configs.

``MODEL.DEFEAT.NECK.BG_WEIGHT`` in a YAML config is ``neck.bg_weight`` here (``model.defeat``
in a LazyConfig), and so on for every key of docs/algorithm.md (section 6) except ``TEACHER`` (a LazyConfig
builds the teacher module itself); ``MODEL.DEFEAT.TEACHER.INPUT_SCALE`` is ``teacher_input_scale``.
One more key, ``max_iter``, is ``SOLVER.MAX_ITER`` (the end of the ``linear``/``cosine`` KD
schedules).
"""

import copy
import json
from typing import Any, Dict, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from .validation import CheckedSettings, DeFeatConfigError, defaults, validate_settings

__all__ = [
    "DeFeatConfigError",
    "settings_from_cfg",
    "default_settings",
    "resolve_settings",
    "distiller_kwargs",
    "settings_from_distiller_kwargs",
    "DISTILLER_ARGS",
]


def _lower(node) -> Any:
    if hasattr(node, "items"):
        return {k.lower(): _lower(v) for k, v in node.items()}
    return list(node) if isinstance(node, (list, tuple)) else node


def settings_from_cfg(cfg) -> Dict[str, Any]:
    """The lowercase settings of a YAML config with ``MODEL.DEFEAT`` (teacher excluded)."""
    out = _lower(cfg.MODEL.DEFEAT)
    out.pop("teacher", None)
    out["teacher_input_scale"] = cfg.MODEL.DEFEAT.TEACHER.INPUT_SCALE
    out["max_iter"] = cfg.SOLVER.MAX_ITER
    return out


def default_settings() -> Dict[str, Any]:
    """Defaults of every setting (the settings table's, which ``add_defeat_config`` puts in a
    YAML config)."""
    return defaults()


def _to_dict(settings: Mapping) -> Dict[str, Any]:
    """A plain nested copy; an OmegaConf node (a LazyConfig's ``model.defeat``) has its
    interpolations such as ``${train.max_iter}`` resolved."""
    if isinstance(settings, DictConfig):
        return OmegaConf.to_container(settings, resolve=True)
    return copy.deepcopy(dict(settings))


def _merge(base: Dict[str, Any], given: Mapping, prefix: str) -> None:
    for key, value in given.items():
        if key not in base:
            raise DeFeatConfigError(f"unknown DeFeat setting {prefix}{key}; known at this level: {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise DeFeatConfigError(f"DeFeat setting {prefix}{key} must be a mapping, got {value!r}")
            _merge(base[key], value, f"{prefix}{key}.")
        else:
            base[key] = list(value) if isinstance(value, (list, tuple)) else value


def resolve_settings(given: Optional[Mapping] = None, prefix: str = "model.defeat.") -> "CheckedSettings":
    """Every setting: ``given`` (nested, possibly partial) over :func:`default_settings`, through
    the gate (``defeat.config.validation.validate_settings``). Settings that passed it already
    (``CheckedSettings``) are returned as they are, and the same settings given again (a
    LazyConfig's ``model.defeat``, checked when the file is loaded and again when the model is
    built) get the object the gate returned the first time, without a second check.

    Raises:
        DeFeatConfigError: a key that is not a DeFeat setting (a typo in an override), or a value
            of the wrong type or range (named as ``MODEL.DEFEAT.<KEY>`` and ``model.defeat.<key>``).
    """
    if isinstance(given, CheckedSettings):
        return given
    out = default_settings()
    if given is not None:
        _merge(out, _to_dict(given), prefix)
    key = json.dumps(out, sort_keys=True, default=repr)
    if key not in _CHECKED:
        if len(_CHECKED) >= 64:
            _CHECKED.clear()
        _CHECKED[key] = validate_settings(out)
    return copy.deepcopy(_CHECKED[key])


# Settings that passed the gate, by their JSON text (:func:`resolve_settings`).
_CHECKED: Dict[str, CheckedSettings] = {}


# ``DeFeatDistiller`` keyword argument -> the setting it holds (nested path).
DISTILLER_ARGS = (
    ("neck_enabled", ("neck", "enabled")),
    ("in_features", ("neck", "in_features")),
    ("neck_obj_weight", ("neck", "obj_weight")),
    ("neck_bg_weight", ("neck", "bg_weight")),
    ("adapter", ("neck", "adapter")),
    ("adapter_init_std", ("neck", "adapter_init_std")),
    ("feature_norm", ("neck", "feature_norm")),
    ("mask_assign", ("neck", "mask_assign")),
    ("scale_base", ("neck", "scale_base")),
    ("head_enabled", ("head", "enabled")),
    ("head_obj_weight", ("head", "obj_weight")),
    ("head_bg_weight", ("head", "bg_weight")),
    ("temperature", ("head", "temperature")),
    ("box_enabled", ("box", "enabled")),
    ("box_weight", ("box", "weight")),
    ("box_loss", ("box", "loss")),
    ("cross_enabled", ("cross_head", "enabled")),
    ("cross_obj_weight", ("cross_head", "obj_weight")),
    ("cross_bg_weight", ("cross_head", "bg_weight")),
    ("balance_target_ratio", ("balance", "target_ratio")),
    ("balance_iters", ("balance", "iters")),
    ("schedule", ("loss_schedule",)),
    ("warmup_iters", ("warmup_iters",)),
    ("max_iter", ("max_iter",)),
)


def distiller_kwargs(settings: Mapping) -> Dict[str, Any]:
    """``DeFeatDistiller`` keyword arguments (shapes excluded) from complete settings."""
    out = {}
    for arg, path in DISTILLER_ARGS:
        node = settings
        for key in path:
            node = node[key]
        out[arg] = node
    return out


def settings_from_distiller_kwargs(kwargs: Mapping, base: Optional[Mapping] = None) -> Dict[str, Any]:
    """Complete nested settings: ``base`` (the package defaults when None) with ``kwargs``
    (``DeFeatDistiller``'s keyword names, any subset) put in; not yet validated."""
    names = dict(DISTILLER_ARGS)
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise DeFeatConfigError(f"unknown DeFeatDistiller arguments {unknown}; known: {sorted(names)}")
    out = copy.deepcopy(dict(base)) if base is not None else default_settings()
    for arg, value in kwargs.items():
        node = out
        *parents, last = names[arg]
        for key in parents:
            node = node[key]
        node[last] = list(value) if isinstance(value, tuple) else value
    return out
