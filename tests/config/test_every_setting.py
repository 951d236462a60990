"""Every row of the settings table (``defeat.config.validation.RULES``) declared once and alive:
its default is the config's and the docs', a legal non-default value arrives the same through
YAML and LazyConfig, and it changes exactly the loss terms it is declared to change; a value
that cannot act in the run's combination is refused or warned about, naming the key."""

import ast
import logging
import math
import os
import re

import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, REPO, defeat_cfg, lazy_cfg, make_cfg, synthetic_batch

from defeat.config.files import defeat_settings
from defeat.config.validation import APPLIES, RULES, DeFeatConfigError, setting_name, validate_settings
from defeat.modeling.schedule import kd_weight

# Every loss term on (neck, head, box, cross-head), so that a setting of any of them can act.
ALL_ON = {
    ("head", "enabled"): True,
    ("box", "enabled"): True,
    ("cross_head", "enabled"): True,
    ("neck", "adapter_init_std"): 0.2,  # adapters far from zero: the cross-head logits depend on them
}
NECK = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}
HEAD = {"loss_defeat_head_obj", "loss_defeat_head_bg"}
CROSS = {"loss_defeat_cross_obj", "loss_defeat_cross_bg"}
BOX = {"loss_defeat_box"}
ROI_TERMS = HEAD | CROSS | BOX
ALL_TERMS = NECK | ROI_TERMS
ITERATION = 30  # the step at which the losses are compared (the KD schedule settings act there)

# path -> (a legal value other than the default, the loss_defeat_* terms it must change, how):
# "scaled" (by the value / the default: a weight), "scheduled" (every term by the KD weight),
# "changed" (other values), "removed" (the terms are no longer returned), "balanced" (unchanged
# while the KD balance measures, then every term by TARGET_RATIO / the measured ratio).
PROBES = {
    ("neck", "enabled"): (False, NECK | CROSS, "removed"),  # with the cross-head loss off (it needs the neck)
    ("neck", "in_features"): (["p2", "p3", "p4", "p5"], NECK, "changed"),
    ("neck", "obj_weight"): (2.5, {"loss_defeat_neck_obj"}, "scaled"),
    ("neck", "bg_weight"): (10.0, {"loss_defeat_neck_bg"}, "scaled"),
    ("neck", "adapter"): ("conv1x1", NECK | CROSS, "changed"),
    ("neck", "adapter_init_std"): (0.05, NECK | CROSS, "changed"),
    ("neck", "feature_norm"): ("channel", NECK, "changed"),
    ("neck", "mask_assign"): ("all", NECK, "changed"),
    ("neck", "scale_base"): (2.0, NECK, "changed"),
    ("head", "enabled"): (False, HEAD, "removed"),
    ("head", "proposals"): ("student", ROI_TERMS, "changed"),
    ("head", "obj_weight"): (0.75, {"loss_defeat_head_obj"}, "scaled"),
    ("head", "bg_weight"): (3.0, {"loss_defeat_head_bg"}, "scaled"),
    ("head", "temperature"): (2.5, HEAD | CROSS, "changed"),
    ("head", "rois_per_image"): (4, ROI_TERMS, "changed"),  # one object RoI per image: fewer than the GT boxes
    ("box", "enabled"): (False, BOX, "removed"),
    ("box", "weight"): (0.5, {"loss_defeat_box"}, "scaled"),
    ("box", "loss"): ("giou", BOX, "changed"),
    ("cross_head", "enabled"): (False, CROSS, "removed"),
    ("cross_head", "obj_weight"): (0.75, {"loss_defeat_cross_obj"}, "scaled"),
    ("cross_head", "bg_weight"): (3.0, {"loss_defeat_cross_bg"}, "scaled"),
    ("loss_schedule",): ("cosine", ALL_TERMS, "scheduled"),
    ("warmup_iters",): (100, ALL_TERMS, "scheduled"),
    ("max_iter",): (60, ALL_TERMS, "scheduled"),  # with loss_schedule linear (BASE below)
    ("teacher_input_scale",): (2.0, ALL_TERMS, "changed"),
    ("inherit",): (["roi_heads.box_predictor"], set(), "inherit"),  # acts on the weights at a fresh start
    ("balance", "target_ratio"): (2.0, ALL_TERMS, "balanced"),
    ("balance", "iters"): (5, ALL_TERMS, "balanced"),  # with target_ratio on (EXTRA)
}
BASE = {**ALL_ON, ("loss_schedule",): "linear", ("max_iter",): 200}  # max_iter probe: the linear decay's end
# What a probe needs besides its own value to be legal.
EXTRA = {
    ("neck", "enabled"): {("cross_head", "enabled"): False},
    ("balance", "iters"): {("balance", "target_ratio"): 0.5},
}


def _probe_changes(path):
    return {**BASE, **EXTRA.get(path, {}), path: PROBES[path][0]}


def _yaml_key(path):
    return setting_name(path)


def _yaml_opts(changes):
    out = []
    for path, value in changes.items():
        out += [_yaml_key(path), value]
    return out


def _lazy_opts(changes):
    out = []
    for path, value in changes.items():
        key = "train.max_iter" if path == ("max_iter",) else "model.defeat." + ".".join(path)
        text = (
            repr(value).replace("'", "")
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        out.append(f"{key}={text}")
    return out


def test_every_row_has_a_probe_and_a_legal_non_default_value():
    """Every row is probed at a value other than the compared run's (``BASE``, where the switches
    that are off by default are on), so one of the two is away from the package default."""
    assert set(PROBES) == set(RULES)
    for path, (value, _, _) in PROBES.items():
        assert value != BASE.get(path, RULES[path].default), path
    validate_settings(_settings(BASE))  # the compared run is legal


def test_the_table_is_what_the_config_holds_and_the_docs_say():
    """``add_defeat_config`` puts the table's defaults in the config; docs/config_reference.md has
    a row for every key with the same default (a changed default in one place fails here)."""
    cfg = make_cfg(f"{CONFIGS}/tiny_base.yaml")
    from defeat.config.settings import settings_from_cfg

    yaml_settings = settings_from_cfg(cfg)
    text = open(os.path.join(REPO, "docs", "config_reference.md")).read()
    documented = {}
    for keys, values in re.findall(r"^\| (`[A-Z_.]+`(?: / `[A-Z_.]+`)*) \| (`[^|]+`(?: / `[^|]+`)*) \|", text, re.M):
        for key, value in zip(re.findall(r"`([^`]+)`", keys), re.findall(r"`([^`]+)`", values)):
            documented[key] = ast.literal_eval(value)
    for path, rule in RULES.items():
        node = yaml_settings
        for k in path:
            node = node[k]
        if path != ("max_iter",):  # Detectron2's SOLVER.MAX_ITER
            assert node == rule.default, path
            key = setting_name(path)[len("MODEL.DEFEAT.") :]
            assert key in documented, f"docs/config_reference.md has no row for {key}"
            assert documented[key] == rule.default, (key, documented[key], rule.default)


@pytest.mark.parametrize("path", sorted(RULES), ids=lambda p: ".".join(p))
def test_a_non_default_value_arrives_the_same_through_yaml_and_lazyconfig(path, teacher_weights):
    value = PROBES[path][0]
    changes = _probe_changes(path)
    yaml = defeat_settings(defeat_cfg(teacher_weights, *_yaml_opts(changes)))
    lazy = defeat_settings(
        lazy_cfg(f"{CONFIGS}/tiny_defeat.py", f"model.teacher.weights={teacher_weights}", *_lazy_opts(changes))
    )
    for settings in (yaml, lazy):
        node = settings
        for k in path:
            node = node[k]
        assert node == value, (path, node)
    assert yaml == lazy


def _losses(model, batch):
    torch.manual_seed(1)
    with EventStorage(ITERATION):
        out = model(batch)
    return {k: float(v) for k, v in out.items() if k.startswith("loss_defeat_")}


def _models(teacher_weights, changes, kind):
    torch.manual_seed(0)
    if kind == "yaml":
        return build_model(defeat_cfg(teacher_weights, *_yaml_opts(changes))).train()
    cfg = lazy_cfg(f"{CONFIGS}/tiny_defeat.py", f"model.teacher.weights={teacher_weights}", *_lazy_opts(changes))
    return instantiate(cfg.model).train()


@pytest.fixture(scope="module")
def baselines(teacher_weights):
    batch = synthetic_batch(boxes_per_image=(4, 2))
    return batch, {kind: _losses(_models(teacher_weights, BASE, kind), batch) for kind in ("yaml", "lazy")}


@pytest.mark.heavy(seconds=60)
@pytest.mark.parametrize("kind", ["yaml", "lazy"])
@pytest.mark.parametrize("path", sorted(p for p in RULES if PROBES[p][2] != "inherit"), ids=lambda p: ".".join(p))
def test_a_non_default_value_changes_what_the_table_declares(path, kind, teacher_weights, baselines):
    batch, base = baselines[0], baselines[1][kind]
    assert set(base) == ALL_TERMS and all(v > 0 for v in base.values())
    value, terms, how = PROBES[path]
    got = _losses(_models(teacher_weights, _probe_changes(path), kind), batch)
    untouched = ALL_TERMS - terms
    for k in untouched:
        assert got[k] == pytest.approx(base[k], rel=1e-5), (path, k)
    if how == "removed":
        assert not terms & set(got)
    elif how == "scaled":
        ratio = value / RULES[path].default
        for k in terms:
            assert got[k] == pytest.approx(base[k] * ratio, rel=1e-5), (path, k)
    elif how == "scheduled":
        s = _probe_changes(path)
        old = kd_weight(ITERATION, BASE[("max_iter",)], BASE[("loss_schedule",)], 0)
        new = kd_weight(ITERATION, s[("max_iter",)], s[("loss_schedule",)], s.get(("warmup_iters",), 0))
        assert not math.isclose(old, new)
        for k in terms:
            assert got[k] == pytest.approx(base[k] * new / old, rel=1e-5), (path, k)
    elif how == "balanced":
        for k in terms:  # factor 1 while measuring: as without the balance
            assert got[k] == pytest.approx(base[k], rel=1e-5), (path, k)
        model = _models(teacher_weights, _probe_changes(path), kind)
        factor = _measure_balance(model)
        got = _losses(model, batch)
        for k in terms:
            assert got[k] == pytest.approx(base[k] * factor, rel=1e-5), (path, k)
    else:
        for k in terms:
            assert not math.isclose(got[k], base[k], rel_tol=1e-6), (path, k)


def _measure_balance(model):
    """Run the engine's KDTargetRatioHook on ``model`` over iterations logging KD terms of 3 (at
    the linear schedule's weight of each iteration) and detection terms of 1.5: the factor it sets
    is TARGET_RATIO / 2 (the ratio at full weight), after exactly BALANCE.ITERS iterations."""
    from types import SimpleNamespace

    from defeat.engine.kd_balance import KDTargetRatioHook

    d, hook = model.distiller, KDTargetRatioHook()
    storage = EventStorage(0)
    hook.trainer = SimpleNamespace(storage=storage, model=model, iter=0)
    with storage:
        hook.before_train()
        for i in range(d.balance_iters):
            assert d.kd_balance() is None
            storage.iter = hook.trainer.iter = i
            w = kd_weight(i, BASE[("max_iter",)], BASE[("loss_schedule",)], 0)
            storage.put_scalars(loss_cls=1.0, loss_box_reg=0.5, loss_defeat_neck_bg=2.0 * w, loss_defeat_head_bg=w)
            hook.after_step()
    factor, at = d.kd_balance()
    assert at == d.balance_iters - 1 and factor == pytest.approx(d.balance_target / 2.0, rel=1e-6)
    return factor


@pytest.mark.parametrize("kind", ["yaml", "lazy"])
def test_inherit_copies_the_named_tensors_at_a_fresh_start(kind, teacher_weights, tmp_path):
    from defeat.checkpoint import AtomicDetectionCheckpointer
    from defeat.engine.start import load_or_resume

    PROBES[("inherit",)][0]
    model = _models(teacher_weights, _probe_changes(("inherit",)), kind)
    load_or_resume(AtomicDetectionCheckpointer(model, str(tmp_path)), "", False)
    ours, theirs = model.state_dict(), model.teacher.state_dict()
    names = [n for n in ours if n.startswith("roi_heads.box_predictor")]
    assert names and all(torch.equal(ours[n], theirs[n]) for n in names)


# ---- values that cannot act in the run's combination ----

REFUSED = [
    (
        {("head", "rois_per_image"): 16, ("head", "proposals"): "student"},
        r"MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE = 16 cannot take effect: HEAD.PROPOSALS is 'student'",
    ),
    (
        {("neck", "adapter_init_std"): 0.01, ("neck", "adapter"): "none"},
        r"MODEL.DEFEAT.NECK.ADAPTER_INIT_STD = 0.01 cannot take effect: NECK.ADAPTER is 'none'",
    ),
    (
        {("neck", "scale_base"): "auto", ("neck", "mask_assign"): "all"},
        r"MODEL.DEFEAT.NECK.SCALE_BASE = 'auto' cannot take effect: NECK.MASK_ASSIGN is 'all'",
    ),
]
WARNED = [
    (
        {("head", "rois_per_image"): 16, ("head", "enabled"): False},
        "MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE = 16 has no effect",
    ),
    ({("head", "temperature"): 2.0}, "MODEL.DEFEAT.HEAD.TEMPERATURE = 2.0 has no effect"),
    ({("box", "loss"): "giou"}, "MODEL.DEFEAT.BOX.LOSS = 'giou' has no effect"),
    ({("cross_head", "bg_weight"): 2.0}, "MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT = 2.0 has no effect"),
    (
        {("neck", "scale_base"): 8.0, ("neck", "mask_assign"): "coupled"},
        "MODEL.DEFEAT.NECK.SCALE_BASE = 8.0 has no effect",
    ),
    (
        {("neck", "enabled"): False, ("neck", "bg_weight"): 8.0, ("head", "enabled"): True},
        "MODEL.DEFEAT.NECK.BG_WEIGHT = 8.0 has no effect",
    ),
    ({("balance", "iters"): 50}, "MODEL.DEFEAT.BALANCE.ITERS = 50 has no effect: the KD balance is off"),
]


def _settings(changes):
    from defeat.config.settings import default_settings

    out = default_settings()
    for path, value in changes.items():
        node = out
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return out


@pytest.mark.parametrize("changes, message", REFUSED)
def test_a_value_that_cannot_act_is_refused_in_yaml_and_lazyconfig(changes, message, teacher_weights):
    with pytest.raises(DeFeatConfigError, match=message):
        validate_settings(_settings(changes))
    with pytest.raises(DeFeatConfigError, match=message):
        build_model(defeat_cfg(teacher_weights, *_yaml_opts(changes)))
    with pytest.raises(DeFeatConfigError, match=message):
        lazy_cfg(f"{CONFIGS}/tiny_defeat.py", f"model.teacher.weights={teacher_weights}", *_lazy_opts(changes))


@pytest.mark.parametrize("changes, message", WARNED)
def test_a_value_whose_part_is_switched_off_is_named_in_a_warning(changes, message, caplog):
    with caplog.at_level(logging.WARNING, logger="defeat.config.validation"):
        validate_settings(_settings(changes))
    assert message in caplog.text


def test_every_applies_rule_fires_for_some_combination():
    """Each "when it applies" rule of the table is reachable: some legal combination of the other
    settings makes a non-default value of it inactive (a rule that can never fire is dead)."""
    switches = [
        {("neck", "enabled"): False, ("head", "enabled"): True},
        {("head", "enabled"): False},
        {("box", "enabled"): False},
        {("cross_head", "enabled"): False},
        {("head", "proposals"): "student", ("head", "enabled"): True},
        {("neck", "adapter"): "none"},
        {("neck", "mask_assign"): "coupled"},
    ]
    from defeat.config.validation import inactive_settings

    for path in APPLIES:
        value = PROBES[path][0]
        fired = False
        for switch in switches:
            if path in switch:
                continue
            s = _settings({**switch, path: value})
            if path in inactive_settings(s):
                fired = True
        assert fired, path
