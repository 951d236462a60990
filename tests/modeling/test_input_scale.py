"""MODEL.DEFEAT.TEACHER.INPUT_SCALE: the teacher sees a resized batch; its maps and logits are brought
back to the student's grids, RoIs move between the two frames."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, ImageList
from detectron2.utils.events import EventStorage
from helpers import defeat_cfg, retina_cfg, synthetic_batch

from defeat import DeFeatConfigError
from defeat.modeling.align import align_to_grid, pad_at_least
from defeat.modeling.meta_arch.box_heads import stage_logits

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}


def test_align_to_grid_samples_student_cell_centres():
    """On a map linear in the teacher's cell coordinates bilinear sampling is exact: student cell
    (i, j) must read the value at teacher cell ((i + .5) s - .5, (j + .5) s - .5)."""
    ht, wt, s = 12, 20, 1.5
    y, x = torch.meshgrid(torch.arange(ht, dtype=torch.float32), torch.arange(wt, dtype=torch.float32), indexing="ij")
    teacher = torch.stack([3 * x + 1, -2 * y + 5])[None].repeat(2, 1, 1, 1)  # [2, 2, 12, 20]
    out = align_to_grid(teacher, (8, 13), s)
    assert out.shape == (2, 2, 8, 13)
    i = torch.arange(8, dtype=torch.float32)[:, None].expand(8, 13)
    j = torch.arange(13, dtype=torch.float32)[None].expand(8, 13)
    assert torch.allclose(out[0, 0], 3 * ((j + 0.5) * s - 0.5) + 1, atol=1e-4)
    assert torch.allclose(out[1, 1], -2 * ((i + 0.5) * s - 0.5) + 5, atol=1e-4)
    # At scale 1 a larger map (other padding) is cropped, exactly; a smaller one is a bug.
    assert torch.equal(align_to_grid(teacher, (8, 13), 1.0), teacher[..., :8, :13])
    with pytest.raises(ValueError, match="smaller than the student's grid"):
        align_to_grid(teacher, (16, 13), 1.0)


def test_pad_at_least_rounds_to_the_divisibility():
    images = ImageList(torch.ones(2, 3, 40, 50), [(40, 50), (30, 20)])
    out = pad_at_least(images, (70, 45), 32)
    assert out.tensor.shape == (2, 3, 96, 64) and out.image_sizes == images.image_sizes
    assert out.tensor[..., :40, :50].eq(1).all() and out.tensor[..., 40:, :].eq(0).all()
    assert pad_at_least(images, (40, 50), 32) is images


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_input_scale_is_an_error(teacher_weights, value):
    cfg = defeat_cfg(teacher_weights)
    cfg.MODEL.DEFEAT.TEACHER.INPUT_SCALE = value
    with pytest.raises(
        DeFeatConfigError, match=r"MODEL.DEFEAT.TEACHER.INPUT_SCALE = \S+ must be (between 0.125 and 8|finite)"
    ):
        build_model(cfg)


def _spy_teacher_input(m):
    seen = []
    m.teacher.backbone.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    return seen


@pytest.mark.parametrize("mode", ["teacher", "student"])
def test_rcnn_teacher_at_1_5x(teacher_weights, mode):
    torch.manual_seed(0)
    m = build_model(
        defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.INPUT_SCALE", 1.5, "MODEL.DEFEAT.HEAD.PROPOSALS", mode)
    ).train()
    seen = _spy_teacher_input(m)
    batch = synthetic_batch(boxes_per_image=(4, 2))
    with EventStorage(0):
        losses = m(batch)
    assert seen == [(2, 3, 96, 96)]  # 64 px resized to 96 (a multiple of 32 already)
    assert DEFEAT_KEYS <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    sum(losses[k] for k in DEFEAT_KEYS).backward()
    assert m.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert m.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert m.distiller.adapters["p2"].weight.grad.abs().sum() > 0


def test_teacher_rois_are_in_the_student_frame_and_its_logits_on_scaled_boxes(teacher_weights):
    torch.manual_seed(0)
    m = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.INPUT_SCALE", 2.0)).train()
    batch = synthetic_batch(boxes_per_image=(3, 1))
    images = m.preprocess_image(batch)
    gt = [x["instances"] for x in batch]
    seen = {}
    orig = m.teacher_rois

    def spy(t_images, t_features, t_gt):
        seen["gt"], seen["rois"] = t_gt, orig(t_images, t_features, t_gt)
        return seen["rois"]

    m.teacher_rois = spy
    with EventStorage(0):
        out = m.defeat_teacher(batch, images, gt)
    assert out["features"]["p2"].shape[-2:] == (32, 32)  # the teacher's 128 px batch at stride 4
    for g, t_g, rois, t_rois in zip(gt, seen["gt"], out["rois"], seen["rois"]):
        assert t_g.image_size == (128, 128) and torch.equal(t_g.gt_boxes.tensor, g.gt_boxes.tensor * 2)
        assert rois.image_size == (64, 64) and torch.equal(rois.gt_classes, t_rois.gt_classes)
        assert torch.equal(rois.proposal_boxes.tensor, t_rois.proposal_boxes.tensor * 0.5)
    scaled = [Boxes(r.proposal_boxes.tensor * 2.0) for r in out["rois"]]
    with torch.no_grad():
        expected = stage_logits(m.teacher.roi_heads, out["features"], scaled)
    assert torch.allclose(out["logits"][0], expected[0])


def test_neck_loss_compares_the_resampled_teacher_maps(teacher_weights):
    """loss_defeat_neck_* equal the decoupled loss against align_to_grid(teacher map, scale)."""
    from defeat.modeling.losses import decoupled_feature_loss

    torch.manual_seed(0)
    m = build_model(
        defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.INPUT_SCALE", 0.75, "MODEL.DEFEAT.HEAD.ENABLED", False)
    ).train()
    batch = synthetic_batch(boxes_per_image=(3, 1))
    with torch.no_grad():
        images = m.preprocess_image(batch)
        feats = m.backbone(images.tensor)
        _, t_feats = m.teacher_features(batch, images)
        d = m.distiller
        masks = d.masks([x["instances"].gt_boxes.tensor for x in batch], feats)
        t = [align_to_grid(t_feats[f], feats[f].shape[-2:], 0.75) for f in d.in_features]
        obj, bg = decoupled_feature_loss([d.adapters[f](feats[f]) for f in d.in_features], t, masks)
        # 48 px images padded to 64 (divisibility 32): the teacher's valid region is 12 of 16 cells.
        assert t_feats["p2"].shape[-1] == 16 and t[0].shape[-1] == 16
        assert not torch.equal(t[0], t_feats["p2"])  # resampled, not cropped
        torch.manual_seed(0)
        with EventStorage(0):
            losses = m(batch)
    assert losses["loss_defeat_neck_obj"].item() == pytest.approx(d.neck_weights[0] * obj.item(), rel=1e-5)
    assert losses["loss_defeat_neck_bg"].item() == pytest.approx(d.neck_weights[1] * bg.item(), rel=1e-5)


def test_retinanet_head_loss_at_another_input_scale(retina_teacher):
    torch.manual_seed(0)
    m = build_model(retina_cfg(retina_teacher, "MODEL.DEFEAT.TEACHER.INPUT_SCALE", 2.0)).train()
    seen = _spy_teacher_input(m)
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(3, 1)))
    assert seen == [(2, 3, 128, 128)]
    assert DEFEAT_KEYS <= set(losses) and all(math.isfinite(v.item()) for v in losses.values())
    sum(losses[k] for k in DEFEAT_KEYS).backward()
    assert m.head.cls_score.weight.grad.abs().sum() > 0


def test_lazy_config_names_it_teacher_input_scale(teacher_weights):
    from helpers import lazy_defeat

    m = lazy_defeat(teacher_weights, "model.defeat.teacher_input_scale=1.25")
    assert m.teacher_input_scale == 1.25
    with pytest.raises(
        DeFeatConfigError,
        match=r"INPUT_SCALE = -2(\.0)? must be between 0.125 and 8 .*\(LazyConfig: model.defeat.teacher_input_scale\)",
    ):
        lazy_defeat(teacher_weights, "model.defeat.teacher_input_scale=-2")
