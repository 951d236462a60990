"""Type and range checks of every DeFeat setting: one table, used by the YAML and LazyConfig paths.

A setting is checked in its nested lowercase form (``defeat.settings``); an error names it as
``MODEL.DEFEAT.NECK.BG_WEIGHT = <value> <problem> (LazyConfig: model.defeat.neck.bg_weight)``,
so both kinds of config get the same message. A new setting is one row of :data:`RULES`.
"""

import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import DeFeatConfigError

__all__ = [
    "DeFeatConfigError",
    "Rule",
    "RULES",
    "ADAPTERS",
    "FEATURE_NORMS",
    "SCHEDULES",
    "MASK_MODES",
    "PROPOSAL_MODES",
    "BOX_LOSSES",
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


@dataclass(frozen=True)
class Rule:
    """What one setting may hold.

    kind: ``"bool"`` (a real bool), ``"number"`` (finite int/float), ``"int"`` (integral),
        ``"choice"`` (one of ``choices``), ``"levels"`` (a non-empty list of distinct level names)
        or ``"prefixes"`` (a list, possibly empty, of distinct module-name prefixes).
    low: smallest allowed number (``None``: no bound); ``strict``: ``> low`` instead of ``>= low``.
    high: largest allowed number (``None``: no bound).
    hint: appended to a range error (what the value means).
    """

    kind: str
    low: Optional[float] = None
    strict: bool = False
    choices: Tuple[str, ...] = ()
    hint: str = ""
    high: Optional[float] = None


_WEIGHT = Rule("number", low=0.0, hint="(0 disables that part)")

RULES: Dict[Tuple[str, ...], Rule] = {
    ("neck", "enabled"): Rule("bool"),
    ("neck", "in_features"): Rule("levels"),
    ("neck", "obj_weight"): _WEIGHT,
    ("neck", "bg_weight"): _WEIGHT,
    ("neck", "adapter"): Rule("choice", choices=ADAPTERS),
    ("neck", "adapter_init_std"): Rule("number", low=0.0, strict=True),
    ("neck", "feature_norm"): Rule("choice", choices=FEATURE_NORMS),
    ("neck", "mask_assign"): Rule("choice", choices=MASK_MODES),
    ("neck", "scale_base"): Rule("number", low=0.0, strict=True, hint="(box size in pixels of the first level)"),
    ("head", "enabled"): Rule("bool"),
    ("head", "proposals"): Rule("choice", choices=PROPOSAL_MODES),
    ("head", "obj_weight"): _WEIGHT,
    ("head", "bg_weight"): _WEIGHT,
    ("head", "temperature"): Rule("number", low=0.0, strict=True),
    ("head", "rois_per_image"): Rule("int", low=0, hint="(0: the teacher's ROI_HEADS.BATCH_SIZE_PER_IMAGE)"),
    ("box", "enabled"): Rule("bool"),
    ("box", "weight"): _WEIGHT,
    ("box", "loss"): Rule("choice", choices=BOX_LOSSES),
    ("cross_head", "enabled"): Rule("bool"),
    ("cross_head", "obj_weight"): _WEIGHT,
    ("cross_head", "bg_weight"): _WEIGHT,
    ("inherit",): Rule("prefixes"),
    ("loss_schedule",): Rule("choice", choices=SCHEDULES),
    ("warmup_iters",): Rule("int", low=0, hint="(0 disables the warm-up)"),
    ("max_iter",): Rule("int", low=0),
    # Beyond 1/8..8 the teacher would see a few pixels or a picture 64x the student's area: a typo
    # (a size in pixels, a percentage) rather than a resolution ratio.
    ("teacher_input_scale",): Rule(
        "number", low=0.125, high=8.0, hint="(the teacher's input size / the student's, e.g. 2 for twice the side)"
    ),
}


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
    if not _is_number(value):
        raise _fail(path, value, f"must be a number, not {type(value).__name__}")
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


class CheckedSettings(dict):
    """Complete nested settings that passed :func:`validate_settings` (the one gate): code past the
    gate takes them as they are. A plain ``dict`` otherwise (``settings["neck"]["bg_weight"]``)."""


def validate_settings(settings: Mapping) -> "CheckedSettings":
    """Check complete nested settings against :data:`RULES`; returns a normalised copy, marked
    as checked (:class:`CheckedSettings`; given one, returns it unchanged).

    Integral floats of ``int`` settings become ints and level tuples become lists.

    Raises:
        DeFeatConfigError: the first bad setting, named in both config forms; or no loss enabled.
    """
    import copy

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
    return CheckedSettings(out)
