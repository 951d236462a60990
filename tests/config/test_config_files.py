"""defeat.config.files: one loader for YAML and LazyConfig files, used by every tool."""

import os
import sys

import pytest
import torch
from helpers import CONFIGS, REPO

from defeat.config.files import (
    ConfigFileError,
    architecture,
    build_model_from_config,
    defeat_settings,
    image_format,
    inference_augmentations,
    is_defeat_config,
    load_config,
    model_weights,
    pixel_stats,
    train_dataset_names,
)


def test_yaml_and_lazy_twins_read_the_same_facts():
    yaml, lazy = load_config(f"{CONFIGS}/tiny_defeat.yaml"), load_config(f"{CONFIGS}/tiny_defeat.py")
    for read in (pixel_stats, image_format, train_dataset_names, model_weights):
        assert read(yaml) == read(lazy), read.__name__
    a, b = defeat_settings(yaml), defeat_settings(lazy)
    assert a == b and a["neck"]["scale_base"] == 8.0 and a["head"]["enabled"] is True and a["max_iter"] == 4
    (ra,), (rb,) = inference_augmentations(yaml), inference_augmentations(lazy)
    assert (ra.short_edge_length, ra.max_size) == (rb.short_edge_length, rb.max_size) == ((64, 64), 64)
    assert architecture(yaml).__name__ == architecture(lazy).__name__ == "DeFeatRCNN"


def test_is_defeat_config_by_class_not_by_name():
    sys.path.insert(0, os.path.join(REPO, "examples"))  # as tests/test_mixin.py: one module, one registration
    import custom_rcnn  # noqa: F401  (registers CustomDeFeatRCNN, a DeFeatMixin subclass)

    assert is_defeat_config(load_config(f"{CONFIGS}/tiny_defeat.yaml"))
    assert is_defeat_config(load_config(f"{CONFIGS}/tiny_defeat.py"))
    assert is_defeat_config(load_config(f"{CONFIGS}/tiny_defeat.yaml", ["MODEL.META_ARCHITECTURE", "CustomDeFeatRCNN"]))
    assert not is_defeat_config(load_config(f"{CONFIGS}/tiny_base.yaml"))
    assert not is_defeat_config(load_config(f"{CONFIGS}/tiny_base.py"))


def test_overrides_reach_the_built_model(teacher_weights):
    yaml = load_config(f"{CONFIGS}/tiny_base.yaml", ["MODEL.FPN.OUT_CHANNELS", "16"])
    lazy = load_config(f"{CONFIGS}/tiny_base.py", ["model.backbone.out_channels=16"])
    for cfg in (yaml, lazy):
        assert build_model_from_config(cfg).backbone.output_shape()["p2"].channels == 16
    torch.manual_seed(0)
    cfg = load_config(f"{CONFIGS}/tiny_defeat.py", [f"model.teacher.weights={teacher_weights}"])
    model = build_model_from_config(cfg)
    assert type(model).__name__ == "DeFeatRCNN" and "distiller.adapters.p2.weight" in model.state_dict()


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigFileError, match="config file not found: 'nope.yaml'"):
        load_config("nope.yaml")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("MODEL: [unclosed\n")
    with pytest.raises(ConfigFileError, match=f"cannot read config '{bad_yaml}'"):
        load_config(str(bad_yaml))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("MODEL:\n  NO_SUCH_KEY: 1\n")
    with pytest.raises(ConfigFileError, match="cannot read config.*NO_SUCH_KEY"):
        load_config(str(unknown))
    with pytest.raises(ConfigFileError, match="cannot apply overrides"):
        load_config(f"{CONFIGS}/tiny_base.yaml", ["MODEL.FPN.OUT_CHANNELS"])  # odd count
    broken = tmp_path / "broken.py"
    broken.write_text("model = (\n")
    with pytest.raises(ConfigFileError, match=f"cannot load LazyConfig '{broken}'"):
        load_config(str(broken))
    no_model = tmp_path / "no_model.py"
    no_model.write_text("train = dict(max_iter=1)\n")
    with pytest.raises(ConfigFileError, match="has no 'model' entry"):
        load_config(str(no_model))
    with pytest.raises(ConfigFileError, match="overrides of a LazyConfig are key=value"):
        load_config(f"{CONFIGS}/tiny_base.py", ["MODEL.FPN.OUT_CHANNELS", "16"])


def test_whole_number_for_a_float_key_is_taken_as_a_float():
    """yacs refuses ``8`` where the default is ``8.0``; the loader writes it as a float, and only there."""
    from defeat.config.files import floats_where_expected, load_config

    cfg = load_config(
        os.path.join(CONFIGS, "tiny_defeat.yaml"),
        ["MODEL.DEFEAT.NECK.SCALE_BASE", "8", "MODEL.DEFEAT.BOX.WEIGHT", 0, "SOLVER.MAX_ITER", "7"],
    )
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == 8.0 and isinstance(cfg.MODEL.DEFEAT.NECK.SCALE_BASE, float)
    assert cfg.MODEL.DEFEAT.BOX.WEIGHT == 0.0 and cfg.SOLVER.MAX_ITER == 7 and isinstance(cfg.SOLVER.MAX_ITER, int)
    # booleans, strings and other types are left to yacs' own checks
    out = floats_where_expected(cfg, ["MODEL.DEFEAT.BOX.WEIGHT", "True", "MODEL.DEFEAT.NECK.SCALE_BASE", "abc"])
    assert out == ["MODEL.DEFEAT.BOX.WEIGHT", "True", "MODEL.DEFEAT.NECK.SCALE_BASE", "abc"]
    with pytest.raises(Exception, match="MODEL.DEFEAT.BOX.WEIGHT"):
        load_config(os.path.join(CONFIGS, "tiny_defeat.yaml"), ["MODEL.DEFEAT.BOX.WEIGHT", "True"])
