"""Every bad setting fails at model build time (before training) with a message naming the fix."""

import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from helpers import CONFIGS, defeat_cfg, make_cfg, synthetic_batch

from defeat import DeFeatConfigError, TeacherLoadError


def _build(cfg):
    return build_model(cfg)


def test_missing_teacher_config(teacher_weights):
    with pytest.raises(TeacherLoadError, match="teacher config file not found.*nope.yaml"):
        _build(defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", "nope.yaml"))


def test_empty_teacher_config(teacher_weights):
    with pytest.raises(TeacherLoadError, match="CONFIG_FILE is empty"):
        _build(defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", ""))


def test_invalid_teacher_config(teacher_weights, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 3\n")
    with pytest.raises(TeacherLoadError, match="cannot load teacher config"):
        _build(defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(bad)))


def test_missing_teacher_weights(teacher_weights):
    with pytest.raises(TeacherLoadError, match="teacher weights not found.*missing.pth"):
        _build(defeat_cfg("missing.pth"))


def test_empty_teacher_weights():
    with pytest.raises(TeacherLoadError, match="WEIGHTS is empty"):
        _build(defeat_cfg(""))


def test_teacher_weights_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(TeacherLoadError, match="cannot read teacher weights"):
        _build(defeat_cfg(str(junk)))


def test_teacher_weights_of_another_width_fail_loudly(tmp_path):
    """The silent failure seen in practice: a checkpoint of another width leaves random tensors."""
    other = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml"))  # FPN 32 channels, teacher config says 48
    DetectionCheckpointer(other, str(tmp_path)).save("other")
    with pytest.raises(TeacherLoadError, match=r"tensors of another shape.*backbone\.fpn_lateral2\.weight"):
        _build(defeat_cfg(str(tmp_path / "other.pth")))


def test_teacher_weights_with_missing_keys(teacher_weights, tmp_path):
    state = torch.load(teacher_weights, map_location="cpu", weights_only=False)
    del state["model"]["roi_heads.box_predictor.cls_score.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(TeacherLoadError, match=r"1 tensors missing from the checkpoint.*cls_score\.weight"):
        _build(defeat_cfg(str(path)))


def test_class_count_mismatch_refused_for_the_head_loss(teacher_weights):
    with pytest.raises(DeFeatConfigError, match="teacher has 10 classes but the student 5.*HEAD.ENABLED False"):
        _build(defeat_cfg(teacher_weights, "MODEL.ROI_HEADS.NUM_CLASSES", 5, "MODEL.DEFEAT.HEAD.ENABLED", True))


def test_teacher_of_other_classes_teaches_the_neck(teacher_weights, caplog):
    """A teacher of 10 classes for a 5-class student: the neck loss only compares features."""
    import logging

    with caplog.at_level(logging.INFO, logger="defeat.modeling.meta_arch.common"):
        model = _build(
            defeat_cfg(teacher_weights, "MODEL.ROI_HEADS.NUM_CLASSES", 5, "MODEL.DEFEAT.HEAD.ENABLED", False)
        )
    assert model.roi_heads.num_classes == 5 and model.teacher.roi_heads.num_classes == 10
    assert "teacher detects 10 classes and the student 5" in caplog.text
    from detectron2.utils.events import EventStorage

    with EventStorage():
        losses = model.train()(synthetic_batch(n=2, boxes_per_image=(3, 2), num_classes=5))
    assert losses["loss_defeat_neck_obj"] > 0 and losses["loss_defeat_neck_bg"] > 0
    assert "loss_defeat_head_obj" not in losses


def test_neck_level_missing_in_student(teacher_weights):
    with pytest.raises(DeFeatConfigError, match=r"\['p7'\] are not produced by the student"):
        _build(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.IN_FEATURES", "['p2','p7']"))


def test_neck_level_missing_in_teacher(tmp_path):
    """A teacher FPN built on res3-res5 has no P2, which the student's default levels need."""
    cfg_t = tmp_path / "t.yaml"
    cfg_t.write_text(
        f'_BASE_: "{CONFIGS}/tiny_teacher.yaml"\nMODEL:\n  FPN:\n    IN_FEATURES: ["res3", "res4", "res5"]\n'
        '  RPN:\n    IN_FEATURES: ["p3", "p4", "p5", "p6"]\n  ANCHOR_GENERATOR:\n    SIZES: [[16], [32], [64], [128]]\n'
        '  ROI_HEADS:\n    IN_FEATURES: ["p3", "p4", "p5"]\n'
    )
    teacher = build_model(make_cfg(str(cfg_t)))
    DetectionCheckpointer(teacher, str(tmp_path)).save("t")
    cfg = defeat_cfg(str(tmp_path / "t.pth"), "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(cfg_t))
    with pytest.raises(DeFeatConfigError, match=r"\['p2'\] are not produced by the teacher"):
        _build(cfg)


def test_channel_mismatch_without_adapter(teacher_weights):
    with pytest.raises(
        ValueError, match="ADAPTER is 'none' but student features have 32 channels and teacher features 48"
    ):
        _build(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.ADAPTER", "none"))


@pytest.mark.parametrize(
    "key,value",
    [
        ("MODEL.DEFEAT.NECK.ADAPTER", "conv5x5"),
        ("MODEL.DEFEAT.NECK.MASK_ASSIGN", "fpn"),
        ("MODEL.DEFEAT.HEAD.PROPOSALS", "gt"),
        ("MODEL.DEFEAT.LOSS_SCHEDULE", "step"),
    ],
)
def test_unknown_enum_values(teacher_weights, key, value):
    with pytest.raises(ValueError, match=rf"{key.replace('.', '[.]')}.*{value}"):
        _build(defeat_cfg(teacher_weights, key, value))


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("MODEL.DEFEAT.NECK.BG_WEIGHT", -1.0, "must be >= 0"),
        ("MODEL.DEFEAT.HEAD.OBJ_WEIGHT", -0.5, "must be >= 0"),
        ("MODEL.DEFEAT.HEAD.TEMPERATURE", 0.0, "must be > 0"),
    ],
)
def test_negative_weights_and_bad_temperature(teacher_weights, key, value, match):
    with pytest.raises(DeFeatConfigError, match=match):
        _build(defeat_cfg(teacher_weights, key, value))


def test_teacher_that_is_itself_a_defeat_config(teacher_weights):
    with pytest.raises(TeacherLoadError, match="is itself a DeFeat config"):
        _build(defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", f"{CONFIGS}/tiny_defeat.yaml"))


def test_errors_come_before_training_in_train_net(teacher_weights, tmp_path):
    """train_net.py's Trainer fails in its constructor (model build), before any iteration."""
    import train_net

    cfg = defeat_cfg("missing.pth", "OUTPUT_DIR", str(tmp_path))
    cfg.freeze()
    with pytest.raises(TeacherLoadError):
        train_net.Trainer(cfg)
    assert not os.path.exists(tmp_path / "metrics.json")
