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

After the rule, the schedule is derived from and checked against the run's one length
(:func:`check_yaml_schedule`, :func:`settle_lazy_schedule`), before anything is written or
built: LR steps strictly increasing and inside the run, LR and KD warm-ups no longer than the
run, the KD balance's measurement (``MODEL.DEFEAT.BALANCE.ITERS``, when on) ending inside it, the KD
schedule ending at the run's end (``model.defeat.max_iter`` is ``train.max_iter``),
and a LazyConfig's ``MultiStepParamScheduler`` counting the run's iterations (``num_updates`` is
``train.max_iter``; milestones given on the command line are iterations of the run) with one value
more than milestones. A contradiction raises ``ConfigFileError`` (the LR schedule) or
``DeFeatConfigError`` (the KD schedule) naming the key in both spellings and the fix.
"""

import logging
import numbers
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf

from ..errors import ConfigFileError, DeFeatConfigError

__all__ = [
    "scale_warmup",
    "scale_steps",
    "rescale_yaml",
    "lazy_schedule",
    "rescale_lazy",
    "first_iteration",
    "check_yaml_schedule",
    "settle_lazy_schedule",
]

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


def first_iteration(milestone: int, num_updates: int, max_iter: int) -> int:
    """The first iteration of a ``max_iter``-iteration run from which a ``MultiStepParamScheduler``
    milestone of ``num_updates`` applies, as fvcore evaluates it under Detectron2's
    ``LRMultiplier`` (``int((iter / max_iter + 1e-6) * num_updates) >= milestone``)."""
    from fvcore.common.param_scheduler import ParamScheduler

    eps = ParamScheduler.WHERE_EPSILON
    i = max(0, int((milestone / num_updates - eps) * max_iter) - 1)  # just below the answer
    while int((i / max_iter + eps) * num_updates) < milestone:
        i += 1
    return i


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
        steps = [first_iteration(int(m), int(total), max_iter) for m in milestones]
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


# ---- the run's one length: every other count derived from it, contradictions refused ----

_KEEP_SCALED = "or leave it out of the command line so that a changed run length scales the file's value"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _override_keys(overrides: Sequence[str]) -> List[str]:
    return [str(o).split("=", 1)[0].strip().lstrip("+") for o in overrides]


def _check_steps(steps: Sequence[Any], max_iter: int, key: str, twin: str, length: str) -> None:
    """LR steps ``steps`` of a ``max_iter``-iteration run: whole numbers, strictly increasing,
    strictly between 0 and the end. ``key``/``twin``: the setting in this config and in the
    other kind; ``length``: the run's length key in this config."""
    where = f"({twin})"
    if not all(_is_int(s) for s in steps):
        raise ConfigFileError(f"{key} = {list(steps)} must hold whole iteration numbers {where}")
    steps = [int(s) for s in steps]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ConfigFileError(
            f"{key} = {steps} must be strictly increasing {where}: each step decays the LR once; "
            "sort them and drop repeats"
        )
    outside = [s for s in steps if s <= 0 or s >= max_iter]
    if outside:
        raise ConfigFileError(
            f"{key} = {steps}: {outside} lie outside the run's {max_iter} iterations ({length} = {max_iter}) "
            f"{where}, so they never decay the LR; give steps between 1 and {max_iter - 1}, {_KEEP_SCALED}"
        )


def _check_kd_warmup(warmup: Any, max_iter: int) -> None:
    """The KD warm-up fits in the run (the gate checks its type and sign)."""
    if _is_int(warmup) and warmup > max_iter:
        raise DeFeatConfigError(
            f"MODEL.DEFEAT.WARMUP_ITERS = {warmup} is longer than the run's {max_iter} iterations "
            f"(SOLVER.MAX_ITER; LazyConfig: model.defeat.warmup_iters, train.max_iter): the KD weight would "
            f"never reach 1; give at most {max_iter}, {_KEEP_SCALED}"
        )


def _check_kd_balance(balance: Any, max_iter: int, yaml: bool) -> None:
    """With the KD balance on, its measurement ends inside the run (the gate checks types and signs)."""
    if not hasattr(balance, "get"):
        return
    target = balance.get("TARGET_RATIO" if yaml else "target_ratio", 0)
    iters = balance.get("ITERS" if yaml else "iters", 0)
    if isinstance(target, numbers.Real) and target > 0 and _is_int(iters) and iters >= max_iter:
        raise DeFeatConfigError(
            f"MODEL.DEFEAT.BALANCE.ITERS = {iters} is not shorter than the run's {max_iter} iterations "
            f"(SOLVER.MAX_ITER; LazyConfig: model.defeat.balance.iters, train.max_iter): the KD balance factor "
            f"would be measured to the end and never applied; give at most {max_iter - 1}, or set "
            "MODEL.DEFEAT.BALANCE.TARGET_RATIO 0 to train without the balance"
        )


def check_yaml_schedule(cfg) -> None:
    """Refuse a YAML config whose iteration counts contradict its length ``SOLVER.MAX_ITER``
    (after the overrides and the rule): ``SOLVER.STEPS`` (with the multi-step LR scheduler) not
    strictly increasing or outside the run, ``SOLVER.WARMUP_ITERS`` or
    ``MODEL.DEFEAT.WARMUP_ITERS`` longer than the run, the KD balance's measurement
    (``MODEL.DEFEAT.BALANCE.ITERS``, when on) not ending before it. The KD schedule's length is
    ``SOLVER.MAX_ITER`` itself (``defeat.config.settings.settings_from_cfg``).

    Raises:
        ConfigFileError: an LR step or the LR warm-up.
        DeFeatConfigError: the KD warm-up or balance.
    """
    max_iter = cfg.SOLVER.MAX_ITER
    if not _is_int(max_iter) or max_iter <= 0:
        return
    if cfg.SOLVER.get("LR_SCHEDULER_NAME", "WarmupMultiStepLR") == "WarmupMultiStepLR":
        _check_steps(
            list(cfg.SOLVER.STEPS),
            max_iter,
            "SOLVER.STEPS",
            "LazyConfig: lr_multiplier.scheduler.milestones",
            "SOLVER.MAX_ITER",
        )
    warmup = cfg.SOLVER.get("WARMUP_ITERS", 0)
    if _is_int(warmup) and warmup > max_iter:
        raise ConfigFileError(
            f"SOLVER.WARMUP_ITERS = {warmup} is longer than the run's {max_iter} iterations (SOLVER.MAX_ITER; "
            f"LazyConfig: lr_multiplier.warmup_length = {warmup}/{max_iter} > 1): the LR warm-up would outlast "
            "the run (Detectron2 cuts it at the end, so SOLVER.BASE_LR is reached only there); "
            f"give at most {max_iter}, {_KEEP_SCALED}"
        )
    defeat = cfg.MODEL.get("DEFEAT", None)
    if defeat is not None:
        _check_kd_warmup(defeat.get("WARMUP_ITERS", 0), max_iter)
        _check_kd_balance(defeat.get("BALANCE", None), max_iter, yaml=True)


def settle_lazy_schedule(cfg, overrides: Sequence[str]) -> Optional[str]:
    """Derive a LazyConfig's iteration counts from ``train.max_iter`` and refuse contradictions,
    after the overrides and the rule (:func:`rescale_lazy`).

    ``MultiStepParamScheduler`` (``lr_multiplier`` or its warm-up's ``scheduler``): its
    ``num_updates`` follows ``train.max_iter``. Milestones given on the command line count the
    run's iterations (``num_updates`` becomes ``train.max_iter``); the file's milestones of another
    ``num_updates`` are restated in the run's iterations (the same decays, logged). Then the
    milestones must be whole numbers, strictly increasing, inside the run, with one more value
    than milestones, and ``warmup_length`` a fraction in [0, 1]; the scheduler is built once
    here so that any other fault is a one-line error now rather than a traceback after the model
    was built. ``model.defeat.max_iter`` must be ``train.max_iter`` and
    ``model.defeat.warmup_iters`` at most that, ``model.defeat.balance.iters`` (balance on) less.
    Returns the line to log (None: nothing restated).

    Raises:
        ConfigFileError: the LR schedule (``num_updates`` overridden to another length,
            milestones, values, warm-up, or a scheduler that cannot be built).
        DeFeatConfigError: the KD schedule's length or warm-up.
    """
    max_iter = OmegaConf.select(cfg, "train.max_iter", default=None, throw_on_resolution_failure=False)
    if not _is_int(max_iter) or max_iter <= 0:
        return None
    note = _settle_lr(cfg, _override_keys(overrides), max_iter) if "lr_multiplier" in cfg else None
    defeat = cfg.model.get("defeat", None) if hasattr(cfg.model, "get") else None
    if hasattr(defeat, "get"):
        kd_max = OmegaConf.select(cfg, "model.defeat.max_iter", default=None, throw_on_resolution_failure=False)
        if _is_int(kd_max) and kd_max != max_iter:
            raise DeFeatConfigError(
                f"model.defeat.max_iter = {kd_max} differs from train.max_iter = {max_iter}: the linear and "
                "cosine KD schedules end at model.defeat.max_iter, which is the run's length (YAML: "
                'SOLVER.MAX_ITER is both); write model.defeat.max_iter = "${train.max_iter}" in the config '
                "and drop any model.defeat.max_iter override"
            )
        _check_kd_warmup(defeat.get("warmup_iters", 0), max_iter)
        _check_kd_balance(defeat.get("balance", None), max_iter, yaml=False)
    return note


def _settle_lr(cfg, keys: List[str], max_iter: int) -> Optional[str]:
    warm, multistep = _parts(cfg.lr_multiplier)
    note = None
    if multistep is not None:
        note = _settle_multistep(
            multistep, "lr_multiplier.scheduler" if warm is not None else "lr_multiplier", keys, max_iter
        )
    if warm is not None:
        length = warm.get("warmup_length", None)
        if not isinstance(length, numbers.Real) or isinstance(length, bool) or not 0 <= length <= 1:
            raise ConfigFileError(
                f"lr_multiplier.warmup_length = {length!r} is not a fraction of the run: the LR warm-up lasts "
                f"warmup_length * train.max_iter iterations, so give a number between 0 and 1, e.g. "
                f"{min(100, max_iter) / max_iter:g} for {min(100, max_iter)} of {max_iter} iterations (YAML: "
                "SOLVER.WARMUP_ITERS, at most SOLVER.MAX_ITER)"
            )
    try:
        from detectron2.config import instantiate

        instantiate(cfg.lr_multiplier)
    except Exception as e:  # any other argument fvcore or Detectron2 refuses
        detail = " ".join(f"{type(e).__name__}: {e}".split())
        raise ConfigFileError(
            f"lr_multiplier cannot be built ({detail}); check the lr_multiplier.* overrides against the "
            "scheduler's arguments"
        ) from e
    return note


def _settle_multistep(node, prefix: str, keys: List[str], max_iter: int) -> Optional[str]:
    """``num_updates`` of a ``MultiStepParamScheduler`` node made ``max_iter`` (see
    :func:`settle_lazy_schedule`), then its milestones and values checked."""
    milestones = node.get("milestones", None)
    if milestones is None:  # fvcore splits num_updates evenly: fractions of the run
        return None
    milestones = list(milestones)
    total = node.get("num_updates", None)
    if f"{prefix}.num_updates" in keys and total != max_iter:
        raise ConfigFileError(
            f"{prefix}.num_updates = {total} differs from train.max_iter = {max_iter}: Detectron2 evaluates the "
            f"LR multiplier at iteration / train.max_iter, so the milestones count the run's iterations only when "
            f"num_updates is train.max_iter; drop the override (the config sets it), or give {prefix}.num_updates="
            f"{max_iter} (YAML: SOLVER.STEPS count SOLVER.MAX_ITER's iterations)"
        )
    given = any(k in (f"{prefix}.milestones", prefix, "lr_multiplier") for k in keys)
    note = None
    if given:
        node.num_updates = max_iter  # milestones given now are iterations of the run
    elif total != max_iter:
        if total is None and milestones:  # fvcore: the last milestone is the end
            milestones, total = milestones[:-1], milestones[-1]
        if _is_int(total) and total > 0 and all(_is_int(m) for m in milestones):
            steps = scale_steps([first_iteration(int(m), int(total), max_iter) for m in milestones], max_iter, max_iter)
            values = list(node.get("values", None) or [])
            if len(values) == len(milestones) + 1:
                node["values"] = values[: len(steps) + 1]
            node.milestones, node.num_updates = steps, max_iter
            note = (
                f"{prefix}.milestones {milestones} of num_updates {total} -> {steps} of train.max_iter {max_iter} "
                "(the same decays, counted in the run's iterations)"
            )
            milestones = steps
    _check_steps(list(node.milestones), max_iter, f"{prefix}.milestones", "YAML: SOLVER.STEPS", "train.max_iter")
    values = node.get("values", None)
    count = len(list(node.milestones)) + 1
    if values is None or len(list(values)) != count:
        shown = list(values) if values is not None else None
        raise ConfigFileError(
            f"{prefix}.milestones = {list(node.milestones)} need {count} LR factors in {prefix}.values "
            f"(one before the first milestone and one after each), got {shown}; give both on the command line, "
            f"e.g. {prefix}.values=[{','.join(f'{0.1**i:g}' for i in range(count))}]"
        )
    return note
