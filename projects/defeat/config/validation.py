"""Type and range checks of every DeFeat setting: one table, used by the YAML and LazyConfig paths.

A setting is checked in its nested lowercase form (``defeat.config.settings``); an error names it as
``MODEL.DEFEAT.NECK.BG_WEIGHT = <value> <problem> (LazyConfig: model.defeat.neck.bg_weight)``,
so both kinds of config get the same message. A new setting is one row of :data:`RULES`.
"""

import copy
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import DeFeatConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "DeFeatConfigError",
    "Rule",
    "RULES",
    "APPLIES",
    "defaults",
    "inactive_settings",
    "ADAPTERS",
    "FEATURE_NORMS",
    "SCHEDULES",
    "MASK_MODES",
    "PROPOSAL_MODES",
    "BOX_LOSSES",
    "AUTO",
    "setting_name",
    "validate_settings",
    "CheckedSettings",
]


# The choices of the settings that name a kind (the modules that implement them import these).
ADAPTERS = ("conv3x3", "conv1x1", "none")  # the neck adapter per level (docs/algorithm.md, section 2)
FEATURE_NORMS = ("none", "channel")  # maps standardised per image and channel before the neck loss
SCHEDULES = ("constant", "linear", "cosine")  # the KD weight over training
# "scale"/"all" place GT boxes on levels (docs/algorithm.md, section 1); "coupled" is the ablation without
# decoupling: one region covering every cell, reported as the object term (background term 0).
MASK_MODES = ("scale", "all", "coupled")
# Whose sampled RoIs the head loss compares the two box heads on (docs/algorithm.md, section 3).
PROPOSAL_MODES = ("teacher", "student")
# The box-distillation loss: L1 on the student's box deltas, or 1 - GIoU on decoded boxes.
BOX_LOSSES = ("l1", "giou")
# NECK.SCALE_BASE's word: the number is computed from the training set when a training run starts
# (defeat.data.box_levels.resolve_scale_base) and recorded in the run's config.yaml.
AUTO = "auto"


@dataclass(frozen=True)
class Rule:
    """One setting: what it may hold, its default, what it changes and when it can act.

    kind: ``"bool"`` (a real bool, or numpy's), ``"number"`` (finite int/float), ``"int"`` (integral),
        ``"choice"`` (one of ``choices``), ``"levels"`` (a non-empty list of distinct level names)
        or ``"prefixes"`` (a list, possibly empty, of distinct module-name prefixes).
    words: strings a ``"number"`` setting also takes (``NECK.SCALE_BASE``: ``"auto"``).
    default: the value ``add_defeat_config`` puts in a config (the package default).
    effect: what the setting changes (a loss key it scales, a count, a schedule), for the docs
        and the every-setting test; ``term``: the ``loss_defeat_*`` key a weight multiplies.
    low: smallest allowed number (``None``: no bound); ``strict``: ``> low`` instead of ``>= low``.
    high: largest allowed number (``None``: no bound).
    hint: appended to a range error (what the value means).
    """

    kind: str
    default: Any
    effect: str
    low: Optional[float] = None
    strict: bool = False
    choices: Tuple[str, ...] = ()
    hint: str = ""
    high: Optional[float] = None
    term: str = ""
    words: Tuple[str, ...] = ()


def _weight(term: str) -> Rule:
    return Rule("number", _DEFAULTS[term], f"multiplies {term}", low=0.0, hint="(0 disables that part)", term=term)


# Package defaults of the loss weights (benchmarks/RESULTS.md: neck 1/4 beat the paper's COCO 4/16
# on the from-scratch demo students; the head and cross-head terms at 0.25/1 keep the KL gradient
# on the logits at or below the classification loss's).
_DEFAULTS = {
    "loss_defeat_neck_obj": 1.0,
    "loss_defeat_neck_bg": 4.0,
    "loss_defeat_head_obj": 0.25,
    "loss_defeat_head_bg": 1.0,
    "loss_defeat_box": 1.0,
    "loss_defeat_cross_obj": 0.25,
    "loss_defeat_cross_bg": 1.0,
}

RULES: Dict[Tuple[str, ...], Rule] = {
    ("neck", "enabled"): Rule("bool", True, "adds loss_defeat_neck_{obj,bg} (feature imitation)"),
    ("neck", "in_features"): Rule("levels", ["p2", "p3", "p4", "p5", "p6"], "the FPN levels imitated"),
    ("neck", "obj_weight"): _weight("loss_defeat_neck_obj"),
    ("neck", "bg_weight"): _weight("loss_defeat_neck_bg"),
    ("neck", "adapter"): Rule("choice", "conv3x3", "the student -> teacher map per level", choices=ADAPTERS),
    ("neck", "adapter_init_std"): Rule(
        "number", 1e-4, "std of the conv adapters' initial weights", low=0.0, strict=True
    ),
    ("neck", "feature_norm"): Rule(
        "choice", "none", "maps standardised per image and channel before the neck loss", choices=FEATURE_NORMS
    ),
    ("neck", "mask_assign"): Rule("choice", "scale", "which level's mask a GT box marks", choices=MASK_MODES),
    ("neck", "scale_base"): Rule(
        "number",
        56.0,
        "the box side (px) of the first level",
        low=0.0,
        strict=True,
        hint="(box size in pixels of the first level)",
        words=(AUTO,),
    ),
    ("head", "enabled"): Rule("bool", False, "adds loss_defeat_head_{obj,bg} (classification KL)"),
    ("head", "proposals"): Rule(
        "choice", "teacher", "whose sampled RoIs the RoI losses compare on", choices=PROPOSAL_MODES
    ),
    ("head", "obj_weight"): _weight("loss_defeat_head_obj"),
    ("head", "bg_weight"): _weight("loss_defeat_head_bg"),
    ("head", "temperature"): Rule(
        "number", 1.0, "softmax temperature of the head and cross-head KL (scaled by T^2)", low=0.0, strict=True
    ),
    ("head", "rois_per_image"): Rule(
        "int",
        0,
        "RoIs per image the teacher samples for the RoI losses",
        low=0,
        hint="(0: the teacher's ROI_HEADS.BATCH_SIZE_PER_IMAGE)",
    ),
    ("box", "enabled"): Rule("bool", False, "adds loss_defeat_box (box distillation)"),
    ("box", "weight"): _weight("loss_defeat_box"),
    ("box", "loss"): Rule("choice", "l1", "the form of loss_defeat_box", choices=BOX_LOSSES),
    ("cross_head", "enabled"): Rule("bool", False, "adds loss_defeat_cross_{obj,bg} (cross-head KL)"),
    ("cross_head", "obj_weight"): _weight("loss_defeat_cross_obj"),
    ("cross_head", "bg_weight"): _weight("loss_defeat_cross_bg"),
    # KD/detection balance (the engine's KDTargetRatioHook measures, the distiller applies the factor).
    ("balance", "target_ratio"): Rule(
        "number",
        0.0,
        "scales every loss_defeat_* term by TARGET_RATIO / the KD/detection ratio measured over BALANCE.ITERS",
        low=0.0,
        hint="(the wanted loss_defeat_* / detection loss ratio; 0 disables the balance)",
    ),
    ("balance", "iters"): Rule(
        "int", 20, "iterations over which the KD/detection ratio is measured", low=1, hint="(at least 1)"
    ),
    ("inherit",): Rule("prefixes", [], "student tensors copied from the teacher at a fresh start"),
    ("loss_schedule",): Rule("choice", "constant", "the KD weight over training", choices=SCHEDULES),
    ("warmup_iters",): Rule(
        "int", 0, "iterations of the KD weight's ramp from 0 to 1", low=0, hint="(0 disables the warm-up)"
    ),
    ("max_iter",): Rule("int", 40000, "the end of the linear/cosine KD schedules (SOLVER.MAX_ITER)", low=0),
    # Beyond 1/8..8 the teacher would see a few pixels or a picture 64x the student's area: a typo
    # (a size in pixels, a percentage) rather than a resolution ratio.
    ("teacher_input_scale",): Rule(
        "number",
        1.0,
        "the teacher's input size / the student's",
        low=0.125,
        high=8.0,
        hint="(the teacher's input size / the student's, e.g. 2 for twice the side)",
    ),
}


def _roi_losses(s: Mapping) -> bool:
    return s["head"]["enabled"] or s["box"]["enabled"] or s["cross_head"]["enabled"]


def _off(section: str, what: str):
    return lambda s: None if s[section]["enabled"] else f"{what} is off (MODEL.DEFEAT.{section.upper()}.ENABLED False)"


def _rois_per_image(s: Mapping) -> Optional[str]:
    if s["head"]["proposals"] == "student":
        return REFUSE + "HEAD.PROPOSALS is 'student': the RoI losses use the student's own sampled RoIs"
    return None if _roi_losses(s) else "no RoI loss is on (HEAD, BOX and CROSS_HEAD are off)"


# Prefix of a reason that makes a non-default value an error (otherwise it is logged as a warning:
# switching a part off with its ENABLED key, its other settings kept, is a documented use).
REFUSE = "!"

# When a setting can act: path -> a function of the complete settings giving the reason a
# non-default value of it cannot act in this combination, or None.
APPLIES: Dict[Tuple[str, ...], Callable[[Mapping], Optional[str]]] = {
    **{
        ("neck", k): _off("neck", "the neck loss")
        for k in ("in_features", "obj_weight", "bg_weight", "adapter", "feature_norm", "mask_assign", "scale_base")
    },
    ("neck", "adapter_init_std"): lambda s: (
        _off("neck", "the neck loss")(s)
        or (
            REFUSE + "NECK.ADAPTER is 'none': there is no adapter to initialise"
            if s["neck"]["adapter"] == "none"
            else None
        )
    ),
    ("neck", "scale_base"): lambda s: (
        _off("neck", "the neck loss")(s)
        or (
            # "auto" would read the training data for a number nothing uses: refused
            (REFUSE if s["neck"]["scale_base"] == AUTO else "")
            + f"NECK.MASK_ASSIGN is {s['neck']['mask_assign']!r}: only 'scale' places boxes by size"
            if s["neck"]["mask_assign"] != "scale"
            else None
        )
    ),
    ("balance", "iters"): lambda s: (
        None if s["balance"]["target_ratio"] > 0 else "the KD balance is off (MODEL.DEFEAT.BALANCE.TARGET_RATIO 0)"
    ),
    ("head", "obj_weight"): _off("head", "the head loss"),
    ("head", "bg_weight"): _off("head", "the head loss"),
    ("head", "proposals"): lambda s: None if _roi_losses(s) else "no RoI loss is on (HEAD, BOX and CROSS_HEAD are off)",
    ("head", "temperature"): lambda s: (
        None
        if s["head"]["enabled"] or s["cross_head"]["enabled"]
        else "neither the head nor the cross-head loss is on (HEAD.ENABLED, CROSS_HEAD.ENABLED)"
    ),
    ("head", "rois_per_image"): _rois_per_image,
    ("box", "weight"): _off("box", "the box loss"),
    ("box", "loss"): _off("box", "the box loss"),
    ("cross_head", "obj_weight"): _off("cross_head", "the cross-head loss"),
    ("cross_head", "bg_weight"): _off("cross_head", "the cross-head loss"),
}


def defaults() -> Dict[str, Any]:
    """Every setting at its package default, nested (``defaults()["neck"]["bg_weight"]``)."""
    out: Dict[str, Any] = {}
    for path, rule in RULES.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = copy.deepcopy(rule.default)
    return out


def setting_name(path: Sequence[str]) -> str:
    """``MODEL.DEFEAT.NECK.BG_WEIGHT`` for ``("neck", "bg_weight")`` (``max_iter``: ``SOLVER.MAX_ITER``)."""
    if tuple(path) == ("max_iter",):
        return "SOLVER.MAX_ITER"
    if tuple(path) == ("teacher_input_scale",):
        return "MODEL.DEFEAT.TEACHER.INPUT_SCALE"
    return "MODEL.DEFEAT." + ".".join(p.upper() for p in path)


def _fail(path: Sequence[str], value: Any, problem: str) -> DeFeatConfigError:
    lazy = "model.defeat." + ".".join(path)
    return DeFeatConfigError(f"{setting_name(path)} = {value!r} {problem} (LazyConfig: {lazy})")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_range(path, value, rule: Rule) -> None:
    if rule.high is not None and rule.low is not None and not rule.low <= value <= rule.high:
        raise _fail(path, value, f"must be between {rule.low:g} and {rule.high:g} {rule.hint}".rstrip())
    if rule.low is None:
        return
    ok = value > rule.low if rule.strict else value >= rule.low
    if not ok:
        op = ">" if rule.strict else ">="
        raise _fail(path, value, f"must be {op} {rule.low:g} {rule.hint}".rstrip())


def _check_one(path: Tuple[str, ...], value: Any, rule: Rule) -> Any:
    """The checked (and normalised) value of one setting."""
    if rule.kind == "bool":
        if isinstance(value, np.bool_):  # numpy's booleans (a comparison of arrays) count as booleans
            value = bool(value)
        if not isinstance(value, bool):
            raise _fail(path, value, "must be True or False (a boolean, not a string or number)")
        return value
    if rule.kind == "choice":
        if not isinstance(value, str) or value not in rule.choices:
            raise _fail(path, value, f"is not supported; choose one of {list(rule.choices)}")
        return value
    if rule.kind == "levels":
        return _check_names(path, value, "level names", "['p2', 'p3', 'p4', 'p5', 'p6']", empty_ok=False)
    if rule.kind == "prefixes":
        return _check_names(path, value, "module-name prefixes", "['backbone.fpn_', 'proposal_generator']", True)
    if rule.words and isinstance(value, str) and value in rule.words:
        return value
    if not _is_number(value):
        words = "".join(f" or {w!r}" for w in rule.words)
        raise _fail(path, value, f"must be a number{words}, not {type(value).__name__}")
    if not math.isfinite(value):
        raise _fail(path, value, "must be finite")
    if rule.kind == "int":
        if value != int(value):
            raise _fail(path, value, "must be a whole number (an iteration count)")
        value = int(value)
    _check_range(path, value, rule)
    return value


def _check_names(path, value, what: str, example: str, empty_ok: bool) -> list:
    """A list of distinct non-empty strings (``what``: what they name, for the messages)."""
    if isinstance(value, str):
        raise _fail(path, value, f"must be a list of {what}, e.g. [{value!r}], not a string")
    if not isinstance(value, (list, tuple)):
        raise _fail(path, value, f"must be a list of {what} such as {example}")
    names = list(value)
    if not names and not empty_ok:
        raise _fail(path, value, f"is empty; list the {what}, e.g. {example}")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise _fail(path, value, f"must hold {what} (non-empty strings); {bad!r} are not")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _fail(path, value, f"lists {repeated} more than once; each counts once")
    return names


def _get(settings: Mapping, path: Tuple[str, ...]) -> Any:
    node = settings
    for key in path:
        node = node[key]
    return node


def _set(settings: Dict, path: Tuple[str, ...], value: Any) -> None:
    node = settings
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _check_some_loss(settings: Mapping) -> None:
    """A DeFeat model with no loss that can be non-zero only pays for its teacher."""

    def pair_on(term: str) -> bool:  # a decoupled term: on, with a non-zero object or background weight
        t = settings[term]
        return t["enabled"] and (t["obj_weight"] > 0 or t["bg_weight"] > 0)

    neck_on, head_on, cross_on = pair_on("neck"), pair_on("head"), pair_on("cross_head")
    box_on = settings["box"]["enabled"] and settings["box"]["weight"] > 0
    if not (neck_on or head_on or box_on or cross_on):
        raise DeFeatConfigError(
            "no DeFeat loss is enabled (MODEL.DEFEAT.NECK, MODEL.DEFEAT.HEAD, MODEL.DEFEAT.BOX and "
            "MODEL.DEFEAT.CROSS_HEAD are each disabled or have their weights 0), so the teacher would run at "
            "every step and contribute nothing. "
            "To train the plain student, use its parent architecture without a teacher "
            "(MODEL.META_ARCHITECTURE GeneralizedRCNN or RetinaNet; in a LazyConfig, model._target_ and no "
            "model.teacher/model.defeat); otherwise enable NECK, HEAD, BOX or CROSS_HEAD with a weight > 0"
        )


def inactive_settings(settings: Mapping) -> Dict[Tuple[str, ...], str]:
    """``{path: reason}`` of the settings whose value differs from the default but cannot act in
    this combination (:data:`APPLIES`); a reason starting with :data:`REFUSE` makes it an error."""
    out = {}
    for path, reason_of in APPLIES.items():
        if _get(settings, path) != RULES[path].default:
            reason = reason_of(settings)
            if reason:
                out[path] = reason
    return out


def _check_inactive(settings: Mapping) -> None:
    """Refuse a non-default value that cannot act here (a contradiction such as HEAD.ROIS_PER_IMAGE
    with the student's RoIs); warn for one whose part is switched off by its ENABLED key."""
    for path, reason in inactive_settings(settings).items():
        value = _get(settings, path)
        if reason.startswith(REFUSE):
            raise _fail(
                path,
                value,
                f"cannot take effect: {reason[len(REFUSE) :]}; set it back to its default "
                f"{RULES[path].default!r} or change the setting that rules it out",
            )
        logger.warning("%s = %r has no effect: %s", setting_name(path), value, reason)


class CheckedSettings(dict):
    """Complete nested settings that passed :func:`validate_settings` (the settings gate): code past the
    gate takes them as they are. A plain ``dict`` otherwise (``settings["neck"]["bg_weight"]``)."""


def validate_settings(settings: Mapping) -> "CheckedSettings":
    """Check complete nested settings against :data:`RULES`; returns a normalised copy, marked
    as checked (:class:`CheckedSettings`; given one, returns it unchanged).

    Integral floats of ``int`` settings become ints and level tuples become lists.

    Raises:
        DeFeatConfigError: the first bad setting, named in both config forms; or no loss enabled.
    """
    if isinstance(settings, CheckedSettings):
        return settings
    out = copy.deepcopy(dict(settings))
    for path, rule in RULES.items():
        try:
            value = _get(out, path)
        except (KeyError, TypeError):
            raise DeFeatConfigError(f"DeFeat setting {setting_name(path)} is missing") from None
        _set(out, path, _check_one(path, value, rule))
    _check_some_loss(out)
    _check_inactive(out)
    return CheckedSettings(out)
