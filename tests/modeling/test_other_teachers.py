"""Teachers of other backbones: a ViTDet-style LazyConfig teacher (ViT + SimpleFeaturePyramid, square
padding, RGB) and a ResNeXt teacher from YAML, both for a ResNet-FPN student; the pairing table."""

import logging
import re

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, defeat_cfg, save_random_weights, synthetic_batch

from defeat.modeling.distiller import pairing_table

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
VIT = f"{CONFIGS}/tiny_vitdet_teacher.py"
RESNEXT = f"{CONFIGS}/tiny_resnext_teacher.yaml"


@pytest.fixture(scope="module")
def vit_teacher(tmp_path_factory):
    pytest.importorskip("timm", reason="Detectron2's ViT imports timm (listed in requirements.txt)")
    return save_random_weights(VIT, tmp_path_factory.mktemp("vit_t"))


@pytest.fixture(scope="module")
def resnext_teacher(tmp_path_factory):
    return save_random_weights(RESNEXT, tmp_path_factory.mktemp("rx_t"))


def _build(weights, config, *opts):
    torch.manual_seed(0)
    return build_model(defeat_cfg(weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", config, *opts)).train()


def _losses(model, batch):
    torch.manual_seed(0)
    with EventStorage(0):
        return model(batch)


def _batch_64x96():
    """Two non-square images: the student pads to 64x96, the ViT teacher to a 128 square."""
    batch = synthetic_batch(boxes_per_image=(3, 2))
    for x in batch:
        x["image"] = torch.cat([x["image"], x["image"][:, :, :32]], dim=2)
        x["instances"]._image_size = (64, 96)
    return batch


@pytest.mark.parametrize("mode", ["teacher", "student"])
def test_vitdet_teacher_for_resnet_fpn_student(vit_teacher, mode):
    m = _build(vit_teacher, VIT, "MODEL.DEFEAT.HEAD.PROPOSALS", mode)
    assert type(m.teacher.backbone).__name__ == "SimpleFeaturePyramid" and m.teacher.input_format == "RGB"
    assert m.distiller.in_features == ["p2", "p3", "p4", "p5", "p6"]
    seen = []
    m.teacher.backbone.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    losses = _losses(m, _batch_64x96())
    assert seen == [(2, 3, 128, 128)]  # square padding, larger than the student's 64x96 batch
    assert DEFEAT_KEYS <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    sum(losses[k] for k in DEFEAT_KEYS).backward()
    assert m.distiller.adapters["p2"].weight.grad.abs().sum() > 0
    assert m.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())


def test_vitdet_neck_loss_reads_the_cropped_teacher_maps(vit_teacher):
    """The neck loss equals the decoupled loss against the ViT's maps of the channel-flipped,
    square-padded batch, cropped top-left to the student's grids (computed here by hand)."""
    from detectron2.structures import ImageList

    from defeat.modeling.losses import decoupled_feature_loss

    m = _build(vit_teacher, VIT, "MODEL.DEFEAT.HEAD.ENABLED", False)
    batch = _batch_64x96()
    with torch.no_grad():
        feats = m.backbone(m.preprocess_image(batch).tensor)
        t = m.teacher
        rgb = [(x["image"].flip(0) - t.pixel_mean) / t.pixel_std for x in batch]
        padded = ImageList.from_tensors(rgb, 0).tensor
        padded = torch.nn.functional.pad(padded, (0, 128 - padded.shape[-1], 0, 128 - padded.shape[-2]))
        t_feats = t.backbone(padded)
        d = m.distiller
        masks = d.masks([x["instances"].gt_boxes.tensor for x in batch], feats)
        cropped = [t_feats[f][..., : feats[f].shape[-2], : feats[f].shape[-1]] for f in d.in_features]
        assert cropped[0].shape[-2:] == (16, 24) and t_feats["p2"].shape[-2:] == (32, 32)
        obj, bg = decoupled_feature_loss([d.adapters[f](feats[f]) for f in d.in_features], cropped, masks)
    losses = _losses(m, batch)
    assert losses["loss_defeat_neck_obj"].item() == pytest.approx(d.neck_weights[0] * obj.item(), rel=1e-5)
    assert losses["loss_defeat_neck_bg"].item() == pytest.approx(d.neck_weights[1] * bg.item(), rel=1e-5)


def test_resnext_teacher_from_yaml(resnext_teacher):
    m = _build(resnext_teacher, RESNEXT)
    assert m.teacher.backbone.bottom_up.res2[0].conv2.groups == 2
    levels = ("p2", "p3", "p4", "p5", "p6")
    assert {f: a.out_channels for f, a in m.distiller.adapters.items()} == {f: 48 for f in levels}
    losses = _losses(m, synthetic_batch(boxes_per_image=(3, 1)))
    assert DEFEAT_KEYS <= set(losses)
    assert all(torch.isfinite(losses[k]) and losses[k] > 0 for k in DEFEAT_KEYS)


def test_pairing_table_is_logged_before_training(resnext_teacher):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("defeat.modeling.distiller")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        _build(resnext_teacher, RESNEXT, "MODEL.DEFEAT.NECK.IN_FEATURES", "['p3', 'p5']")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(r.getMessage() for r in records if "pairing" in r.getMessage())
    assert re.search(r"student level\s*\|\s*teacher level\s*\|\s*stride\s*\|\s*channels\s*\|\s*adapter", text)
    assert re.search(r"\| p3\s*\| p3\s*\|\s*8 \| 32 -> 48\s*\| conv3x3", text)
    assert re.search(r"\| p5\s*\| p5\s*\|\s*32 \| 32 -> 48\s*\| conv3x3", text)
    assert "p2" not in text and "p4" not in text


def test_pairing_table_text():
    from detectron2.layers import ShapeSpec

    s = {"p3": ShapeSpec(channels=64, stride=8)}
    t = {"p3": ShapeSpec(channels=256, stride=8)}
    rows = pairing_table(["p3"], s, t, "conv1x1").splitlines()
    assert len(rows) == 3
    assert [c.strip() for c in rows[2].strip("|").split("|")] == ["p3", "p3", "8", "64 -> 256", "conv1x1"]
