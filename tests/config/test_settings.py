"""The nested lowercase DeFeat settings: the one mapping between YAML keys, LazyConfig and the distiller."""

import inspect

import pytest
from helpers import CONFIGS, make_cfg
from omegaconf import OmegaConf

from defeat import DeFeatConfigError, DeFeatDistiller
from defeat.config.settings import default_settings, distiller_kwargs, resolve_settings, settings_from_cfg


def test_settings_are_the_yaml_keys_in_lowercase():
    cfg = make_cfg(f"{CONFIGS}/tiny_defeat.yaml", "MODEL.DEFEAT.NECK.BG_WEIGHT", 7.0, "SOLVER.MAX_ITER", 9)
    s = settings_from_cfg(cfg)
    assert "teacher" not in s and s["max_iter"] == 9
    assert s["neck"]["bg_weight"] == 7.0 and s["neck"]["scale_base"] == 8.0 and s["head"]["enabled"] is True
    yaml_keys = {k.lower() for k in cfg.MODEL.DEFEAT} - {"teacher"}
    assert set(s) == yaml_keys | {"max_iter", "teacher_input_scale"}
    assert s["teacher_input_scale"] == cfg.MODEL.DEFEAT.TEACHER.INPUT_SCALE == 1.0
    for group in ("neck", "head"):
        assert set(s[group]) == {k.lower() for k in cfg.MODEL.DEFEAT[group.upper()]}


def test_distiller_keywords_name_settings_of_the_table():
    """Each keyword of the distiller's keyword form stands for one row of the settings table, and
    the distiller takes the checked settings object itself (no keyword per setting)."""
    from defeat.config.settings import DISTILLER_ARGS
    from defeat.config.validation import RULES

    assert all(path in RULES for _, path in DISTILLER_ARGS)
    assert len({path for _, path in DISTILLER_ARGS}) == len(DISTILLER_ARGS)
    params = set(inspect.signature(DeFeatDistiller.__init__).parameters) - {"self"}
    assert params == {"student_shapes", "teacher_shapes", "settings", "shared_levels_only", "keyword_settings"}
    assert set(distiller_kwargs(default_settings())) == {arg for arg, _ in DISTILLER_ARGS}


def test_a_distiller_built_directly_takes_the_package_defaults_and_the_gate():
    """No defaults of its own: left-out settings are add_defeat_config's; given ones are checked
    by the one gate (its messages name the config key)."""
    from detectron2.layers import ShapeSpec

    from defeat import DeFeatConfigError

    shapes = {f: ShapeSpec(channels=8, stride=s) for f, s in zip(("p2", "p3", "p4", "p5", "p6"), (4, 8, 16, 32, 64))}
    d = DeFeatDistiller(student_shapes=shapes, teacher_shapes=shapes)
    defaults = default_settings()
    assert d.neck_weights == (defaults["neck"]["obj_weight"], defaults["neck"]["bg_weight"]) == (1.0, 4.0)
    assert d.head_enabled is defaults["head"]["enabled"] is False
    assert d.head_weights == (defaults["head"]["obj_weight"], defaults["head"]["bg_weight"])
    assert d.in_features == defaults["neck"]["in_features"] and d.schedule == defaults["loss_schedule"]
    with pytest.raises(DeFeatConfigError, match=r"MODEL.DEFEAT.NECK.BG_WEIGHT = -1.0 must be >= 0"):
        DeFeatDistiller(student_shapes=shapes, teacher_shapes=shapes, neck_bg_weight=-1.0)
    with pytest.raises(DeFeatConfigError, match=r"MODEL.DEFEAT.HEAD.ENABLED = 'true' must be True or False"):
        DeFeatDistiller(student_shapes=shapes, teacher_shapes=shapes, head_enabled="true")


def test_checked_settings_pass_the_gate_once():
    """Settings that passed the gate are not checked again: resolve_settings returns them as they are."""
    from defeat.config.validation import CheckedSettings, validate_settings

    checked = resolve_settings({"neck": {"bg_weight": 2}})
    assert isinstance(checked, CheckedSettings) and checked["neck"]["bg_weight"] == 2
    assert resolve_settings(checked) is checked and validate_settings(checked) is checked


def test_partial_settings_fill_in_defaults_and_resolve_interpolations():
    root = OmegaConf.create(
        {"train": {"max_iter": 123}, "defeat": {"neck": {"bg_weight": 2.5}, "max_iter": "${train.max_iter}"}}
    )
    s = resolve_settings(root.defeat)
    expected = default_settings()
    expected["neck"]["bg_weight"], expected["max_iter"] = 2.5, 123
    assert s == expected
    assert default_settings()["neck"]["bg_weight"] == 4.0  # defaults are not mutated


@pytest.mark.parametrize(
    "given, match",
    [
        ({"neck": {"bg_wieght": 1.0}}, r"unknown DeFeat setting model\.defeat\.neck\.bg_wieght"),
        ({"teacher": {"weights": "x"}}, r"unknown DeFeat setting model\.defeat\.teacher"),
        ({"head": 3}, r"model\.defeat\.head must be a mapping"),
    ],
)
def test_bad_settings_are_errors(given, match):
    with pytest.raises(DeFeatConfigError, match=match):
        resolve_settings(given)


def test_settings_from_distiller_kwargs_refuses_unknown_names():
    from defeat.config.settings import settings_from_distiller_kwargs

    with pytest.raises(DeFeatConfigError, match=r"unknown DeFeatDistiller arguments \['bg_weight'\]"):
        settings_from_distiller_kwargs({"bg_weight": 1.0})
    assert settings_from_distiller_kwargs({"neck_bg_weight": 2.0})["neck"]["bg_weight"] == 2.0


def test_the_settings_module_is_public_as_defeat_settings():
    """``defeat.settings`` (the public name of the nested lowercase settings) is the module itself."""
    import defeat
    import defeat.config.settings

    assert defeat.settings is defeat.config.settings and "settings" in defeat.__all__
