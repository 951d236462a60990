"""Teacher construction: config chains, model-zoo names, strict weight loading, freezing."""
import pytest
import torch

from conftest import CONFIGS
from defeat import TeacherLoadError, build_teacher
from defeat.teacher import load_teacher_config


def test_teacher_loads_every_tensor_and_is_frozen(teacher_weights):
    t = build_teacher(f"{CONFIGS}/tiny_teacher.yaml", teacher_weights, "cpu")
    saved = torch.load(teacher_weights, map_location="cpu", weights_only=False)["model"]
    state = t.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in state)
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    assert t.backbone.output_shape()["p2"].channels == 48  # _BASE_ chain of the teacher config applied


def test_model_zoo_prefix_resolves_a_bundled_config():
    cfg = load_teacher_config("model_zoo:COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml")
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.MODEL.DEVICE == "cpu"


def test_unknown_model_zoo_name():
    with pytest.raises(TeacherLoadError, match="unknown model-zoo teacher config"):
        load_teacher_config("model_zoo:COCO-Detection/nope.yaml")
