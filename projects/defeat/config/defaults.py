"""``add_defeat_config``: ``MODEL.DEFEAT`` with the defaults of the settings table
(``defeat.config.validation.RULES``, where every key's default, range and effect are declared
once; docs/config_reference.md explains each)."""

from detectron2.config import CfgNode as CN

from .validation import RULES

__all__ = ["add_defeat_config"]

# Settings that live under another YAML key than MODEL.DEFEAT.<PATH> (validation.setting_name).
_ELSEWHERE = {("max_iter",): None, ("teacher_input_scale",): ("TEACHER", "INPUT_SCALE")}


def add_defeat_config(cfg):
    """Add ``MODEL.DEFEAT`` with its defaults to a Detectron2 config (in place); returns ``cfg``."""
    cfg.MODEL.DEFEAT = CN()
    cfg.MODEL.DEFEAT.TEACHER = CN()
    # Any Detectron2 YAML or LazyConfig file (``_BASE_`` chains, ``model_zoo:<name>``) and its weights.
    cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE = ""
    cfg.MODEL.DEFEAT.TEACHER.WEIGHTS = ""
    for path, rule in RULES.items():
        keys = _ELSEWHERE.get(path, tuple(k.upper() for k in path))
        if keys is None:  # SOLVER.MAX_ITER: Detectron2's own key
            continue
        node = cfg.MODEL.DEFEAT
        for key in keys[:-1]:
            if key not in node:
                node[key] = CN()
            node = node[key]
        node[keys[-1]] = list(rule.default) if isinstance(rule.default, list) else rule.default
    return cfg
