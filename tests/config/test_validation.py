"""Every DeFeat setting is type- and range-checked at model build, on the YAML and LazyConfig paths."""

import math

import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from helpers import CONFIGS, defeat_cfg

from defeat import DeFeatConfigError, TeacherLoadError
from defeat.config.settings import default_settings, resolve_settings
from defeat.config.validation import RULES, setting_name, validate_settings


def _settings(**changes):
    """Default settings with ``changes`` given as ``"neck.bg_weight": value``."""
    s = default_settings()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = s
        for p in parents:
            node = node[p]
        node[leaf] = value
    return s


def test_every_setting_has_a_rule():
    s = default_settings()
    leaves = {(k,) for k, v in s.items() if not isinstance(v, dict)}
    leaves |= {(k, kk) for k, v in s.items() if isinstance(v, dict) for kk in v}
    assert leaves == set(RULES)
    assert validate_settings(s) == s  # the defaults pass unchanged


# (dotted setting, bad value, expected words); each is refused naming the setting in both forms.
BAD = [
    ("neck.bg_weight", math.inf, "must be finite"),
    ("neck.obj_weight", math.nan, "must be finite"),
    ("head.temperature", math.inf, "must be finite"),
    ("head.bg_weight", -1.0, "must be >= 0"),
    ("head.temperature", 0.0, "must be > 0"),
    ("neck.scale_base", -56.0, "must be > 0"),
    ("neck.adapter_init_std", 0, "must be > 0"),
    ("neck.obj_weight", "abc", "must be a number, not str"),
    ("neck.obj_weight", True, "must be a number, not bool"),
    ("warmup_iters", 2.7, "must be a whole number"),
    ("warmup_iters", -3, "must be >= 0"),
    ("max_iter", "9000", "must be a number"),
    ("neck.enabled", "false", "must be True or False"),
    ("head.enabled", 1, "must be True or False"),
    ("neck.in_features", "p3", "not a string"),
    ("neck.in_features", [], "is empty"),
    ("neck.in_features", ["p3", "p4", "p3"], r"lists \['p3'\] more than once"),
    ("neck.in_features", ["p3", 4], "must hold level names"),
    ("neck.adapter", "conv5x5", "is not supported; choose one of"),
    ("neck.mask_assign", 3, "is not supported"),
    ("neck.feature_norm", "chanel", "is not supported; choose one of"),
    ("neck.feature_norm", None, "is not supported"),
    ("head.proposals", "both", "is not supported"),
    ("loss_schedule", "Linear", "is not supported"),
    ("neck.scale_base", "Auto", "must be a number or 'auto', not str"),
    ("neck.scale_base", None, "must be a number or 'auto', not NoneType"),
    ("neck.obj_weight", "auto", "must be a number, not str"),  # the word is SCALE_BASE's only
    ("balance.target_ratio", -0.5, "must be >= 0"),
    ("balance.target_ratio", "2", "must be a number, not str"),
    ("balance.iters", 0, "must be >= 1"),
    ("balance.iters", 2.5, "must be a whole number"),
]


@pytest.mark.parametrize("dotted, value, words", BAD, ids=[f"{d}={v!r}" for d, v, _ in BAD])
def test_bad_setting_is_refused_naming_it(dotted, value, words):
    path = tuple(dotted.split("."))
    with pytest.raises(DeFeatConfigError, match=words) as e:
        validate_settings(_settings(**{dotted: value}))
    msg = str(e.value)
    assert msg.startswith(f"{setting_name(path)} = {value!r}")
    assert f"(LazyConfig: model.defeat.{dotted})" in msg


def test_integral_values_are_normalised():
    s = validate_settings(_settings(**{"warmup_iters": 5.0, "neck.in_features": ("p3", "p4")}))
    assert s["warmup_iters"] == 5 and type(s["warmup_iters"]) is int
    assert s["neck"]["in_features"] == ["p3", "p4"]


@pytest.mark.parametrize(
    "changes",
    [
        {"neck.enabled": False, "head.enabled": False},
        {"neck.obj_weight": 0.0, "neck.bg_weight": 0.0, "head.enabled": False},
        {"neck.enabled": False, "head.enabled": True, "head.obj_weight": 0.0, "head.bg_weight": 0.0},
    ],
)
def test_no_defeat_loss_enabled_is_refused(changes):
    with pytest.raises(
        DeFeatConfigError, match="no DeFeat loss is enabled.*To train the plain student.*GeneralizedRCNN"
    ):
        validate_settings(_settings(**changes))


# ---- the YAML path: build_model refuses before the teacher is even loaded ----


def test_yaml_infinite_values_fail_the_build(teacher_weights, tmp_path):
    for key in ("NECK:\n      BG_WEIGHT: .inf", "HEAD:\n      TEMPERATURE: .inf"):
        f = tmp_path / "inf.yaml"
        f.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nMODEL:\n  DEFEAT:\n    {key}\n')
        from helpers import make_cfg

        cfg = make_cfg(str(f), "MODEL.DEFEAT.TEACHER.WEIGHTS", teacher_weights)
        name = "BG_WEIGHT" if "BG" in key else "TEMPERATURE"
        with pytest.raises(DeFeatConfigError, match=rf"MODEL\.DEFEAT\.(NECK|HEAD)\.{name} = inf must be finite"):
            build_model(cfg)


def test_yaml_settings_are_checked_before_the_teacher_is_built():
    """A bad setting is reported even when the teacher weights are missing too."""
    cfg = defeat_cfg("missing.pth")
    cfg.MODEL.DEFEAT.NECK.OBJ_WEIGHT = float("nan")
    with pytest.raises(DeFeatConfigError, match="MODEL.DEFEAT.NECK.OBJ_WEIGHT = nan"):
        build_model(cfg)
    with pytest.raises(TeacherLoadError):  # the same config with a good value gets to the teacher
        build_model(defeat_cfg("missing.pth"))


def test_yaml_no_loss_is_refused(teacher_weights):
    with pytest.raises(DeFeatConfigError, match="no DeFeat loss is enabled"):
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.ENABLED", False, "MODEL.DEFEAT.HEAD.ENABLED", False))


# ---- the LazyConfig path: overrides as typed on the command line ----


def _lazy_model(teacher_weights, *overrides):
    cfg = LazyConfig.load(f"{CONFIGS}/tiny_defeat.py")
    cfg = LazyConfig.apply_overrides(cfg, [f"model.teacher.weights={teacher_weights}", *overrides])
    return instantiate(cfg.model)


@pytest.mark.parametrize(
    "override, match",
    [
        (
            "model.defeat.neck.obj_weight=abc",
            r"MODEL\.DEFEAT\.NECK\.OBJ_WEIGHT = 'abc' must be a number.*model\.defeat\.neck\.obj_weight",
        ),
        ("model.defeat.neck.bg_weight=inf", "NECK.BG_WEIGHT = inf must be finite"),
        ("model.defeat.neck.in_features=p3", r"IN_FEATURES = 'p3' must be a list of level names, e\.g\. \['p3'\]"),
        ("model.defeat.neck.in_features=[p3,p3]", "more than once"),
        ("model.defeat.neck.enabled='false'", "NECK.ENABLED = 'false' must be True or False"),
        ("model.defeat.warmup_iters=2.7", "WARMUP_ITERS = 2.7 must be a whole number"),
        ("model.defeat.head.temperature=nan", "TEMPERATURE = nan must be finite"),
    ],
)
def test_lazy_overrides_are_checked_naming_the_key(teacher_weights, override, match):
    with pytest.raises(DeFeatConfigError, match=match):
        _lazy_model(teacher_weights, override)


def test_lazy_settings_resolve_to_the_checked_form():
    s = resolve_settings({"neck": {"in_features": ("p3", "p4")}, "warmup_iters": 4.0})
    assert s["neck"]["in_features"] == ["p3", "p4"] and s["warmup_iters"] == 4 and type(s["warmup_iters"]) is int


def test_level_that_neither_model_has_is_an_error_across_families(tmp_path):
    """A RetinaNet student with a Faster R-CNN teacher keeps the shared levels; a typo is not one."""
    from detectron2.checkpoint import DetectionCheckpointer
    from helpers import make_cfg

    teacher = build_model(make_cfg(f"{CONFIGS}/tiny_teacher.yaml"))
    DetectionCheckpointer(teacher, str(tmp_path)).save("t")
    cfg = make_cfg(
        f"{CONFIGS}/tiny_retinanet_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_teacher.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        str(tmp_path / "t.pth"),
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
        "MODEL.DEFEAT.NECK.IN_FEATURES",
        "['p3','p33']",
    )
    with pytest.raises(DeFeatConfigError, match=r"\['p33'\] are produced by neither"):
        build_model(cfg)
