"""DeFeatMixin in a user's own GeneralizedRCNN subclass (examples/custom_rcnn.py, docs/extending.md)."""

import os
import re
import sys

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import REPO, defeat_cfg, synthetic_batch

sys.path.insert(0, os.path.join(REPO, "examples"))
import custom_rcnn  # noqa: E402  (registers CustomDeFeatRCNN)

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
PARENT_KEYS = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def _build(teacher_weights, arch, *opts):
    torch.manual_seed(0)
    return build_model(defeat_cfg(teacher_weights, "MODEL.META_ARCHITECTURE", arch, *opts)).train()


def _losses(model, batch, seed=0):
    torch.manual_seed(seed)  # RPN/ROI sampling is random
    with EventStorage(0):
        return model(batch)


@pytest.mark.parametrize("mode", ["teacher", "student"])
def test_custom_model_equals_defeat_rcnn(teacher_weights, mode):
    """Same weights, batch and seed: the same losses as DeFeatRCNN (which saves a box-head pass)."""
    ref = _build(teacher_weights, "DeFeatRCNN", "MODEL.DEFEAT.HEAD.PROPOSALS", mode)
    custom = _build(teacher_weights, "CustomDeFeatRCNN", "MODEL.DEFEAT.HEAD.PROPOSALS", mode)
    assert type(custom) is custom_rcnn.CustomDeFeatRCNN
    assert custom.state_dict().keys() == ref.state_dict().keys()  # adapters in, teacher out
    custom.load_state_dict(ref.state_dict())
    batch = synthetic_batch(boxes_per_image=(4, 1))
    expected, got = _losses(ref, batch, seed=3), _losses(custom, batch, seed=3)
    assert set(got) == PARENT_KEYS | DEFEAT_KEYS == set(expected)
    for key in got:
        assert got[key].item() == pytest.approx(expected[key].item(), rel=1e-5, abs=1e-7), key


def test_gradients_reach_the_student_only(teacher_weights):
    model = _build(teacher_weights, "CustomDeFeatRCNN")
    losses = _losses(model, synthetic_batch())
    kd = sum(v for k, v in losses.items() if k in DEFEAT_KEYS)
    kd.backward()
    assert model.distiller.adapters["p2"].weight.grad.abs().sum() > 0
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0  # neck loss -> backbone
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0  # head loss -> box head
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not model.teacher.training


def test_student_rois_need_the_sampled_rois(teacher_weights):
    model = _build(teacher_weights, "CustomDeFeatRCNN", "MODEL.DEFEAT.HEAD.PROPOSALS", "student")
    batch = synthetic_batch()
    images = model.preprocess_image(batch)
    gt = [x["instances"] for x in batch]
    features = model.backbone(images.tensor)
    with EventStorage(0):
        teacher = model.defeat_teacher(batch, images, gt)
        assert teacher["rois"] is None  # the teacher samples RoIs only for the teacher-RoI mode
        with pytest.raises(ValueError, match="sampled"):
            model.defeat_losses(features, gt, teacher)


def test_eval_mode_does_not_run_the_teacher(teacher_weights):
    model = _build(teacher_weights, "CustomDeFeatRCNN").eval()
    model.teacher.backbone.forward = None
    with torch.no_grad():
        out = model([{"image": x["image"], "height": 64, "width": 64} for x in synthetic_batch()])
    assert len(out) == 2 and all("instances" in o for o in out)


def test_docs_show_the_tested_example():
    with open(os.path.join(REPO, "docs", "extending.md")) as f:
        doc = f.read()
    with open(os.path.join(REPO, "examples", "custom_rcnn.py")) as f:
        example = f.read()
    code = re.search(r"# --- docs/extending.md: begin ---\n(.*)# --- docs/extending.md: end ---", example, re.S)
    assert code and code.group(1).strip() in doc
