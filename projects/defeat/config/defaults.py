"""``add_defeat_config``: ``MODEL.DEFEAT`` with the defaults of the settings table
(``defeat.config.validation.RULES``, where every key's default, range and effect are declared
once; docs/config_reference.md explains each)."""

from detectron2.config import CfgNode as CN

from .validation import RULES, DeFeatConfigError

__all__ = ["add_defeat_config"]

# Settings that live under another YAML key than MODEL.DEFEAT.<PATH> (validation.setting_name).
_ELSEWHERE = {("max_iter",): None, ("teacher_input_scale",): ("TEACHER", "INPUT_SCALE")}


def _defaults_node() -> CN:
    """``MODEL.DEFEAT`` at the defaults of the settings table."""
    defeat = CN()
    defeat.TEACHER = CN()
    # Any Detectron2 YAML or LazyConfig file (``_BASE_`` chains, ``model_zoo:<name>``) and its weights.
    defeat.TEACHER.CONFIG_FILE = ""
    defeat.TEACHER.WEIGHTS = ""
    for path, rule in RULES.items():
        keys = _ELSEWHERE.get(path, tuple(k.upper() for k in path))
        if keys is None:  # SOLVER.MAX_ITER: Detectron2's own key
            continue
        node = defeat
        for key in keys[:-1]:
            if key not in node:
                node[key] = CN()
            node = node[key]
        node[keys[-1]] = list(rule.default) if isinstance(rule.default, list) else rule.default
    return defeat


def add_defeat_config(cfg):
    """Add ``MODEL.DEFEAT`` with its defaults to a Detectron2 config (in place); returns ``cfg``.
    Called again on a config that has it, the values set since are kept.

    Raises:
        DeFeatConfigError: ``cfg`` is not a Detectron2 ``CfgNode`` with ``MODEL`` (a LazyConfig
            gives its settings as ``model.defeat``), or it is frozen.
    """
    if not isinstance(cfg, CN) or "MODEL" not in cfg:
        raise DeFeatConfigError(
            f"add_defeat_config takes a Detectron2 config (detectron2.config.get_cfg()), got {type(cfg).__name__}; "
            "a LazyConfig gives its DeFeat settings as model.defeat (docs/configs.md)"
        )
    if cfg.is_frozen():
        raise DeFeatConfigError(
            "add_defeat_config: the config is frozen; call it before cfg.freeze() (or cfg.defrost() first)"
        )
    defeat = _defaults_node()
    if "DEFEAT" in cfg.MODEL:
        defeat.merge_from_other_cfg(cfg.MODEL.DEFEAT)  # a second call keeps what was set since the first
    cfg.MODEL.DEFEAT = defeat
    return cfg
