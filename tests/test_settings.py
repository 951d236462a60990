"""The nested lowercase DeFeat settings: the one mapping between YAML keys, LazyConfig and the distiller."""

import inspect

import pytest
from conftest import CONFIGS, make_cfg
from omegaconf import OmegaConf

from defeat import DeFeatConfigError, DeFeatDistiller
from defeat.settings import default_settings, distiller_kwargs, resolve_settings, settings_from_cfg


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


def test_distiller_kwargs_cover_every_distiller_setting():
    params = set(inspect.signature(DeFeatDistiller.__init__.__wrapped__).parameters) - {"self"}
    assert set(distiller_kwargs(default_settings())) == params - {"student_shapes", "teacher_shapes"}


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
