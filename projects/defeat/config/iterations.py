"""One rule for a run whose length is changed on the command line, for YAML and LazyConfig alike.

When ``SOLVER.MAX_ITER`` (``train.max_iter``) is overridden and the config file had ``M``
iterations, the whole schedule is scaled by ``N / M``: each LR step ``s`` becomes ``s * N // M``
(steps that land on 0 or at or past ``N``, and repeats, are dropped), the LR warm-up ``w``
becomes ``ceil(w * N / M)`` (a warm-up does not vanish), and so does the KD warm-up
(``MODEL.DEFEAT.WARMUP_ITERS``). A value given on the same command line is kept as given
(``SOLVER.STEPS``, ``SOLVER.WARMUP_ITERS``, ``MODEL.DEFEAT.WARMUP_ITERS``; in a LazyConfig any
``lr_multiplier.*`` override keeps the whole LR schedule, ``model.defeat.warmup_iters`` the KD
warm-up). The loader applies it (``defeat.config.files.load_config``) and logs one INFO line
with the old and new values. docs/configs.md states the rule and why the warm-ups scale too.

A LazyConfig's ``lr_multiplier`` is a function of the fraction of training, so it stretches with
``train.max_iter`` by itself; its ``MultiStepParamScheduler`` milestones and its warm-up length are
rewritten here to the same whole iterations as the YAML rule, so that both kinds of config decay
the LR at the same iterations.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

__all__ = ["scale_warmup", "scale_steps", "rescale_yaml", "lazy_schedule", "rescale_lazy"]

logger = logging.getLogger(__name__)


def scale_warmup(value: int, old_max: int, new_max: int) -> int:
    """A warm-up of an ``old_max``-iteration run in a ``new_max``-iteration one, rounded up: a
    warm-up the file has stays at least one iteration long."""
    return -(-int(value) * int(new_max) // int(old_max))


def scale_steps(steps: Sequence[int], old_max: int, new_max: int) -> List[int]:
    """LR steps of an ``old_max``-iteration run in a ``new_max``-iteration one: ``s * new // old``
    (rounded down), distinct, sorted, strictly between 0 and ``new_max`` (a step at 0 or at the end
    decays nothing that the run would notice, and Detectron2's schedulers refuse repeats)."""
    return sorted({s for s in (int(x) * int(new_max) // int(old_max) for x in steps) if 0 < s < new_max})


def rescale_yaml(cfg, file_max_iter: int, opts: Sequence[str]) -> Optional[str]:
    """Apply the rule to a YAML config after its command-line ``opts`` (``KEY VALUE`` pairs) were
    merged; ``file_max_iter``: ``SOLVER.MAX_ITER`` of the file. Returns the logged line (None: no
    change of length on the command line)."""
    keys = [str(k) for k in opts[0::2]]
    new_max = cfg.SOLVER.MAX_ITER
    if "SOLVER.MAX_ITER" not in keys or new_max == file_max_iter or file_max_iter <= 0 or new_max <= 0:
        return None
    changes = []
    if "SOLVER.STEPS" not in keys:
        old = tuple(cfg.SOLVER.STEPS)
        cfg.SOLVER.STEPS = tuple(scale_steps(old, file_max_iter, new_max))
        changes.append(f"SOLVER.STEPS {old} -> {cfg.SOLVER.STEPS}")
    for key, node, leaf in (
        ("SOLVER.WARMUP_ITERS", cfg.SOLVER, "WARMUP_ITERS"),
        ("MODEL.DEFEAT.WARMUP_ITERS", cfg.MODEL.get("DEFEAT"), "WARMUP_ITERS"),
    ):
        if node is None or key in keys or not isinstance(node.get(leaf), int) or isinstance(node[leaf], bool):
            continue
        old = node[leaf]
        node[leaf] = scale_warmup(old, file_max_iter, new_max)
        if old != node[leaf]:
            changes.append(f"{key} {old} -> {node[leaf]}")
    return _note("SOLVER.MAX_ITER", file_max_iter, new_max, changes, "SOLVER.STEPS / SOLVER.WARMUP_ITERS")


def _note(key: str, old: int, new: int, changes: List[str], own: str) -> str:
    done = "; ".join(changes) if changes else "nothing else to scale"
    return (
        f"{key} {old} -> {new} on the command line: the config's schedule is scaled by {new}/{old}: {done} "
        f"(give {own} on the command line to set them yourself)"
    )


# ---- LazyConfig ----


def _target(node) -> Any:
    """The class a LazyCall node builds (its ``_target_``, located when a saved config names it)."""
    target = node.get("_target_", None) if hasattr(node, "get") else None
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:  # not importable here: not a scheduler this rule knows (instantiate reports it)
            return None
    return target


def _parts(lr_multiplier):
    """``(warm-up node or None, MultiStepParamScheduler node or None)`` of an ``lr_multiplier``."""
    from detectron2.solver import WarmupParamScheduler
    from fvcore.common.param_scheduler import MultiStepParamScheduler

    warm = lr_multiplier if _target(lr_multiplier) is WarmupParamScheduler else None
    inner = warm.get("scheduler", None) if warm is not None else lr_multiplier
    steps = inner if inner is not None and _target(inner) is MultiStepParamScheduler else None
    return warm, steps


def lazy_schedule(cfg) -> Optional[Dict[str, Any]]:
    """The schedule of a LazyConfig in whole iterations of its ``train.max_iter`` (call it before
    overrides are applied): ``max_iter``, ``steps`` (None: no ``MultiStepParamScheduler``),
    ``warmup`` (None: no ``WarmupParamScheduler``). None without ``train.max_iter`` or
    ``lr_multiplier``."""
    max_iter = OmegaConf.select(cfg, "train.max_iter", default=None)
    if not isinstance(max_iter, int) or max_iter <= 0 or "lr_multiplier" not in cfg:
        return None
    warm, multistep = _parts(cfg.lr_multiplier)
    steps = None
    if multistep is not None:
        milestones = list(multistep.get("milestones", None) or [])
        total = multistep.get("num_updates", None)
        if total is None and milestones:  # fvcore: the last milestone is the end
            milestones, total = milestones[:-1], milestones[-1]
        if not isinstance(total, int) or total <= 0:
            return None
        # The iteration from which each milestone applies (LRMultiplier evaluates at iter / max_iter).
        steps = [-(-int(m) * max_iter // int(total)) for m in milestones]
    warmup = round(float(warm.warmup_length) * max_iter) if warm is not None else None
    return {"max_iter": max_iter, "steps": steps, "warmup": warmup}


def rescale_lazy(cfg, before: Optional[Dict[str, Any]], overrides: Sequence[str]) -> Optional[str]:
    """Apply the rule to a LazyConfig after its ``overrides`` (``key=value``) were applied;
    ``before``: :func:`lazy_schedule` of the file. Returns the logged line (None: no change of
    length on the command line)."""
    keys = [o.split("=", 1)[0].strip().lstrip("+") for o in overrides]
    new_max = OmegaConf.select(cfg, "train.max_iter", default=None)
    if before is None or "train.max_iter" not in keys or not isinstance(new_max, int) or new_max <= 0:
        return None
    old_max = before["max_iter"]
    if new_max == old_max:
        return None
    changes = []
    if any(k == "lr_multiplier" or k.startswith("lr_multiplier.") for k in keys):
        changes.append("lr_multiplier kept as given")
    else:
        changes += _rescale_lr(cfg, before, old_max, new_max)
    defeat = cfg.model.get("defeat", None) if hasattr(cfg.model, "get") else None
    kd = defeat.get("warmup_iters", None) if hasattr(defeat, "get") else None
    if isinstance(kd, int) and not isinstance(kd, bool) and "model.defeat.warmup_iters" not in keys:
        defeat.warmup_iters = scale_warmup(kd, old_max, new_max)
        if kd != defeat.warmup_iters:
            changes.append(f"model.defeat.warmup_iters {kd} -> {defeat.warmup_iters}")
    return _note("train.max_iter", old_max, new_max, changes, "lr_multiplier.* / model.defeat.warmup_iters")


def _rescale_lr(cfg, before: Dict[str, Any], old_max: int, new_max: int) -> List[str]:
    warm, multistep = _parts(cfg.lr_multiplier)
    changes = []
    if multistep is not None and before["steps"] is not None:
        steps = scale_steps(before["steps"], old_max, new_max)
        multistep["values"] = list(multistep["values"])[: len(steps) + 1]
        multistep.milestones = steps
        multistep.num_updates = new_max
        changes.append(f"LR steps {before['steps']} -> {steps}")
    elif multistep is None:
        inner = warm.get("scheduler", None) if warm is not None else cfg.lr_multiplier
        name = getattr(_target(inner), "__name__", "lr_multiplier")
        changes.append(f"{name} is a function of the fraction of training: it stretches with the run")
    if warm is not None and before["warmup"] is not None:
        warmup = scale_warmup(before["warmup"], old_max, new_max)
        warm.warmup_length = min(warmup / new_max, 1.0)
        changes.append(f"LR warm-up {before['warmup']} -> {warmup}")
    return changes
