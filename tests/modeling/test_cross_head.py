"""Cross-head distillation (``loss_defeat_cross_{obj,bg}``): the student's adapted maps through the
teacher's frozen box head, checked against a computation written out here, its gradients, and
the configurations it refuses."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, capture_sampled_rois, defeat_cfg, make_cfg, save_random_weights, synthetic_batch

from defeat.config.settings import DeFeatConfigError

CROSS_ONLY = (
    "MODEL.DEFEAT.CROSS_HEAD.ENABLED",
    True,
    "MODEL.DEFEAT.HEAD.ENABLED",
    False,
    "MODEL.DEFEAT.NECK.OBJ_WEIGHT",
    0.0,
    "MODEL.DEFEAT.NECK.BG_WEIGHT",
    0.0,
    # Adapters far from zero, so that the cross logits depend on the student's maps.
    "MODEL.DEFEAT.NECK.ADAPTER_INIT_STD",
    0.2,
)


def _spy_rois(model):
    """The head loss's RoIs as ``defeat_losses`` took them (teacher's or student's)."""
    seen, orig = {}, model.defeat_losses

    def spy(features, gt, teacher_out, sampled=None, *rest):
        seen["rois"] = teacher_out["rois"] if model.head_proposals == "teacher" else sampled
        seen["features"], seen["teacher"] = features, teacher_out
        return orig(features, gt, teacher_out, sampled, *rest)

    model.defeat_losses = spy
    return seen


def _kl_rows(student_logits, teacher_logits):
    """Per-row ``sum_k p_t (log p_t - log p_s)`` with Python floats."""
    out = []
    for s, t in zip(student_logits.tolist(), teacher_logits.tolist()):
        ls = [v - math.log(sum(math.exp(x) for x in s)) for v in s]
        lt = [v - math.log(sum(math.exp(x) for x in t)) for v in t]
        out.append(sum(math.exp(b) * (b - a) for a, b in zip(ls, lt)))
    return out


@pytest.mark.parametrize("proposals", ["teacher", "student"])
def test_cross_head_loss_matches_independent_computation(teacher_weights, proposals):
    torch.manual_seed(4)
    opts = [*CROSS_ONLY, "MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT", 0.5, "MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT", 2.0]
    m = build_model(defeat_cfg(teacher_weights, *opts, "MODEL.DEFEAT.HEAD.PROPOSALS", proposals)).train()
    batch = synthetic_batch(boxes_per_image=(4, 2))
    seen = _spy_rois(m)
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(batch)
    rois = seen["rois"]
    boxes = [r.proposal_boxes for r in rois]
    th = m.teacher.roi_heads
    with torch.no_grad():
        # Written out: adapters on the student's maps, then the teacher's pooler, head, classifier.
        adapted = [m.distiller.adapters[f](seen["features"][f]) for f in th.box_in_features]
        cross = th.box_predictor(th.box_head(th.box_pooler(adapted, boxes)))[0]
        own = th.box_predictor(
            th.box_head(th.box_pooler([seen["teacher"]["features"][f] for f in th.box_in_features], boxes))
        )[0]
    labels = torch.cat([r.gt_classes for r in rois]).tolist()
    kl = _kl_rows(cross.double(), own.double())
    obj = [v for v, c in zip(kl, labels) if c < th.num_classes]
    bg = [v for v, c in zip(kl, labels) if c == th.num_classes]
    assert obj and bg
    assert losses["loss_defeat_cross_obj"].item() == pytest.approx(0.5 * sum(obj) / len(obj), rel=1e-4)
    assert losses["loss_defeat_cross_bg"].item() == pytest.approx(2.0 * sum(bg) / len(bg), rel=1e-4)
    assert losses["loss_defeat_cross_obj"].item() > 1e-4  # the adapted maps are not the teacher's
    assert not {"loss_defeat_head_obj", "loss_defeat_box"} & set(losses)


def test_cross_head_gradients_reach_the_student_maps_not_its_head(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights, *CROSS_ONLY)).train()
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(4, 2)))
    (losses["loss_defeat_cross_obj"] + losses["loss_defeat_cross_bg"]).backward()
    assert m.distiller.adapters["p2"].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.backbone.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.roi_heads.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())
    assert not any(p.requires_grad for p in m.teacher.parameters())


def test_cross_head_alone_runs_no_extra_student_box_head_rows(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights, *CROSS_ONLY)).train()
    rows, captured = [], capture_sampled_rois(m)
    m.roi_heads.box_head.register_forward_pre_hook(lambda mod, args: rows.append(args[0].shape[0]))
    with EventStorage(0):
        m(synthetic_batch(boxes_per_image=(4, 2)))
    assert rows == [sum(len(r) for r in captured["rois"])]  # only its own sampled RoIs


def test_cross_head_on_a_cascade_is_the_stage_mean(tmp_path):
    from defeat.modeling.meta_arch.box_heads import stage_logits

    teacher = save_random_weights(f"{CONFIGS}/tiny_cascade_teacher.yaml", tmp_path)
    cfg = make_cfg(f"{CONFIGS}/tiny_cascade_defeat.yaml", "MODEL.DEFEAT.TEACHER.WEIGHTS", teacher, *CROSS_ONLY)
    m = build_model(cfg).train()
    seen = _spy_rois(m)
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(4, 2)))
    boxes = [r.proposal_boxes for r in seen["rois"]]
    labels = torch.cat([r.gt_classes for r in seen["rois"]])
    is_obj = labels < m.roi_heads.num_classes
    th = m.teacher.roi_heads
    with torch.no_grad():
        cross = stage_logits(th, m.distiller.adapt(seen["features"]), boxes)
        own = stage_logits(th, seen["teacher"]["features"], boxes)
    assert len(cross) == 3
    per_stage = []
    for c, t in zip(cross, own):
        kl = torch.tensor(_kl_rows(c.double(), t.double()))
        per_stage.append(float(kl[is_obj].mean()) * 0.25)
    assert losses["loss_defeat_cross_obj"].item() == pytest.approx(sum(per_stage) / 3, rel=1e-4)


@pytest.mark.parametrize(
    "opts,match",
    [
        (("MODEL.DEFEAT.NECK.ENABLED", False), r"cross-head loss.*NECK.ENABLED is False"),
        (("MODEL.DEFEAT.NECK.IN_FEATURES", ["p3", "p4", "p5", "p6"]), r"NECK.IN_FEATURES .* lacks \['p2'\]"),
    ],
)
def test_cross_head_needs_adapted_maps_on_the_teachers_box_levels(teacher_weights, opts, match):
    with pytest.raises(DeFeatConfigError, match=match + ".*CROSS_HEAD.ENABLED False"):
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.CROSS_HEAD.ENABLED", True, *opts))


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT", -0.5, r"MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT = -0.5 must be >= 0"),
        ("MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT", -1, r"MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT = -1.0 must be >= 0"),
    ],
)
def test_cross_head_settings_are_checked(teacher_weights, key, value, match):
    with pytest.raises(DeFeatConfigError, match=match):
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.CROSS_HEAD.ENABLED", True, key, value))


def test_cross_head_alone_is_a_loss_and_zero_weights_are_refused(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights, *CROSS_ONLY)).train()
    assert m.distiller.cross_enabled
    zero = ("MODEL.DEFEAT.CROSS_HEAD.OBJ_WEIGHT", 0.0, "MODEL.DEFEAT.CROSS_HEAD.BG_WEIGHT", 0.0)
    with pytest.raises(DeFeatConfigError, match="no DeFeat loss is enabled.*CROSS_HEAD"):
        build_model(defeat_cfg(teacher_weights, *CROSS_ONLY, *zero))


def test_cross_head_refused_for_a_teacher_of_other_classes(tmp_path):
    teacher = save_random_weights(f"{CONFIGS}/tiny_teacher.yaml", tmp_path)
    cfg = defeat_cfg(teacher, "MODEL.ROI_HEADS.NUM_CLASSES", 5, "MODEL.DEFEAT.CROSS_HEAD.ENABLED", True)
    with pytest.raises(DeFeatConfigError, match=r"class by class.*CROSS_HEAD.ENABLED False"):
        build_model(cfg)


def test_cross_head_refused_for_dense_students(tmp_path):
    teacher = save_random_weights(f"{CONFIGS}/tiny_retinanet_teacher.yaml", tmp_path)
    cfg = make_cfg(
        f"{CONFIGS}/tiny_retinanet_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher,
        "MODEL.DEFEAT.CROSS_HEAD.ENABLED",
        True,
    )
    with pytest.raises(DeFeatConfigError, match=r"two-stage students \(DeFeatRCNN\), not DeFeatRetinaNet"):
        build_model(cfg)


def test_cross_head_refused_for_a_teacher_of_another_family(tmp_path):
    teacher = save_random_weights(f"{CONFIGS}/tiny_retinanet_teacher.yaml", tmp_path)
    cfg = defeat_cfg(
        teacher,
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_retinanet_teacher.yaml",
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
        "MODEL.DEFEAT.CROSS_HEAD.ENABLED",
        True,
    )
    with pytest.raises(DeFeatConfigError, match=r"same family.*set MODEL.DEFEAT.CROSS_HEAD.ENABLED False"):
        build_model(cfg)


@pytest.mark.parametrize(
    "given,match",
    [
        ({"enabled": "false"}, r"CROSS_HEAD.ENABLED = 'false' must be True or False.*model.defeat.cross_head.enabled"),
        ({"bg_weight": float("nan")}, r"CROSS_HEAD.BG_WEIGHT = nan must be finite"),
        ({"obj_weight": "0.5"}, r"CROSS_HEAD.OBJ_WEIGHT = '0.5' must be a number"),
    ],
)
def test_lazy_cross_head_settings_are_type_checked(given, match):
    from defeat.config.settings import resolve_settings

    with pytest.raises(DeFeatConfigError, match=match):
        resolve_settings({"cross_head": given})
