"""Box distillation (``loss_defeat_box``): the pure loss, and its wiring in two-stage, cascade and
dense students, each checked against a computation written out here by hand."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, capture_sampled_rois, defeat_cfg, make_cfg, save_random_weights, synthetic_batch

from defeat.config.settings import DeFeatConfigError
from defeat.modeling.losses import box_distillation_loss, generalized_iou

# ---- the pure loss ----


def _giou_by_hand(a, b):
    """GIoU of two XYXY boxes, written with Python floats."""
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    area_a = max(ax2 - ax1, 0) * max(ay2 - ay1, 0)
    area_b = max(bx2 - bx1, 0) * max(by2 - by1, 0)
    iw, ih = max(min(ax2, bx2) - max(ax1, bx1), 0), max(min(ay2, by2) - max(ay1, by1), 0)
    inter = iw * ih
    union = area_a + area_b - inter
    c = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union - (c - union) / c


def test_generalized_iou_matches_hand_and_torchvision():
    from torchvision.ops import generalized_box_iou

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30 + 1], 1)
    xy = torch.rand(20, 2, generator=g) * 50
    b = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30 + 1], 1)
    got = generalized_iou(a, b)
    ref = torch.diagonal(generalized_box_iou(a.double(), b.double()))
    assert torch.allclose(got.double(), ref, atol=1e-5)
    for i in range(3):
        assert got[i].item() == pytest.approx(_giou_by_hand(a[i].tolist(), b[i].tolist()), abs=1e-5)
    # identical boxes: 1; far apart boxes: below 0
    assert torch.allclose(generalized_iou(a, a), torch.ones(20))
    far = generalized_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[10.0, 10, 11, 11]]))
    assert far.item() == pytest.approx(2 / 121 - 1, abs=1e-6)


@pytest.mark.parametrize("kind", ["l1", "giou"])
def test_box_loss_is_the_weighted_object_mean(kind):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(6, 2, generator=g) * 20
    s = torch.cat([xy, xy + 5 + torch.rand(6, 2, generator=g) * 10], 1).requires_grad_()
    xy = torch.rand(6, 2, generator=g) * 20
    t = torch.cat([xy, xy + 5 + torch.rand(6, 2, generator=g) * 10], 1)
    w = torch.rand(6, generator=g)
    obj = torch.tensor([True, False, True, True, False, False])
    got = box_distillation_loss(s, t, w, obj, kind)
    terms = []
    for r in range(6):
        if not obj[r]:
            continue
        if kind == "l1":
            per = sum(abs(x - y) for x, y in zip(s[r].tolist(), t[r].tolist()))
        else:
            per = 1 - _giou_by_hand(s[r].tolist(), t[r].tolist())
        terms.append(w[r].item() * per)
    assert got.item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    all_rows = box_distillation_loss(s, t, w, obj, kind, per_entry=True)
    assert all_rows.item() == pytest.approx(sum(terms) / 6, rel=1e-5)
    got.backward()
    assert s.grad[~obj].abs().sum() == 0  # background rows get no gradient
    assert s.grad[obj].abs().sum() > 0


def test_box_loss_ignores_non_finite_background_rows_and_bad_input():
    s = torch.tensor([[0.0, 0, 1, 1], [0.0, 0, 1, 1]], requires_grad=True)
    t = torch.tensor([[0.0, 0, 2, 2], [float("-inf"), 0, 1, 1]])
    loss = box_distillation_loss(s, t, torch.ones(2), torch.tensor([True, False]), "l1")
    loss.backward()
    assert loss.item() == pytest.approx(2.0) and torch.isfinite(s.grad).all()
    # no object row: 0, not NaN
    assert box_distillation_loss(s, t, torch.ones(2), torch.tensor([False, False])).item() == 0.0
    with pytest.raises(ValueError, match="not one of"):
        box_distillation_loss(s, t, torch.ones(2), torch.tensor([True, False]), "smooth")
    with pytest.raises(ValueError, match=r"\[R, 4\]"):
        box_distillation_loss(s[:, :3], t[:, :3], torch.ones(2), torch.tensor([True, False]))


# ---- settings ----

NECK_HEAD_OFF = ("MODEL.DEFEAT.NECK.ENABLED", False, "MODEL.DEFEAT.HEAD.ENABLED", False)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("MODEL.DEFEAT.BOX.LOSS", "smoothl1", r"MODEL.DEFEAT.BOX.LOSS = 'smoothl1' is not supported"),
        ("MODEL.DEFEAT.BOX.WEIGHT", -1.0, r"MODEL.DEFEAT.BOX.WEIGHT = -1.0 must be >= 0"),
    ],
)
def test_box_settings_are_checked(teacher_weights, key, value, match):
    with pytest.raises(DeFeatConfigError, match=match):
        build_model(defeat_cfg(teacher_weights, key, value))


def test_box_alone_is_a_loss_and_all_off_is_refused(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights, *NECK_HEAD_OFF, "MODEL.DEFEAT.BOX.ENABLED", True)).train()
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(3, 2)))
    assert {k for k in losses if k.startswith("loss_defeat")} == {"loss_defeat_box"}
    with pytest.raises(DeFeatConfigError, match="no DeFeat loss is enabled.*BOX"):
        build_model(
            defeat_cfg(teacher_weights, *NECK_HEAD_OFF, "MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.BOX.WEIGHT", 0)
        )


# ---- two-stage wiring ----


def spy_teacher_rois(model):
    """Wrap ``model.teacher_rois`` so that each call stores the RoIs it returns under ``"rois"``."""
    seen, orig = {}, model.teacher_rois

    def spy(*args):
        seen["rois"] = orig(*args)
        return seen["rois"]

    model.teacher_rois = spy
    return seen


def _by_hand_roi_box_loss(m, batch, rois, kind):
    """The box loss recomputed from both box heads run separately on ``rois``, row by row."""
    with torch.no_grad():
        images = m.preprocess_image(batch)
        boxes = [r.proposal_boxes for r in rois]
        sh, th = m.roi_heads, m.teacher.roi_heads
        xs = sh.box_pooler([m.backbone(images.tensor)[f] for f in sh.box_in_features], boxes)
        xt = th.box_pooler([m.teacher.backbone(images.tensor)[f] for f in th.box_in_features], boxes)
        _, s_deltas = sh.box_predictor(sh.box_head(xs))
        t_logits, t_deltas = th.box_predictor(th.box_head(xt))
    roi = torch.cat([b.tensor for b in boxes])
    labels = torch.cat([r.gt_classes for r in rois])
    tf = sh.box_predictor.box2box_transform
    total, n_obj = 0.0, 0
    for r in range(len(labels)):
        c = int(labels[r])
        if c >= sh.num_classes:
            continue
        n_obj += 1
        t_box = m.teacher.roi_heads.box_predictor.box2box_transform.apply_deltas(
            t_deltas[r : r + 1, 4 * c : 4 * c + 4], roi[r : r + 1]
        )
        s_d = s_deltas[r : r + 1, 4 * c : 4 * c + 4]
        if kind == "l1":
            per = (s_d - tf.get_deltas(roi[r : r + 1], t_box)).abs().sum().item()
        else:
            s_box = tf.apply_deltas(s_d, roi[r : r + 1])
            per = 1 - _giou_by_hand(s_box[0].tolist(), t_box[0].tolist())
        total += torch.softmax(t_logits[r].double(), 0)[c].item() * per
    assert 0 < n_obj < len(labels)
    return total / len(labels)  # over all sampled RoIs, as Detectron2's box-regression loss


@pytest.mark.parametrize("kind", ["l1", "giou"])
@pytest.mark.parametrize("proposals", ["student", "teacher"])
@pytest.mark.parametrize("reg_weights", [None, (5.0, 5.0, 2.0, 2.0)], ids=["same_transform", "student_transform"])
def test_rcnn_box_loss_matches_independent_computation(teacher_weights, kind, proposals, reg_weights):
    """Also with a student whose box transform differs from the teacher's (``BBOX_REG_WEIGHTS``):
    the teacher's deltas are decoded with its own transform, the target encoded with the student's."""
    torch.manual_seed(5)
    opts = ["MODEL.DEFEAT.NECK.ENABLED", False, "MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.BOX.LOSS", kind]
    if reg_weights:
        opts += ["MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", reg_weights]
    opts += ["MODEL.DEFEAT.BOX.WEIGHT", 0.5, "MODEL.DEFEAT.HEAD.PROPOSALS", proposals, "MODEL.DEFEAT.HEAD.ENABLED"]
    m = build_model(defeat_cfg(teacher_weights, *opts, True)).train()
    batch = synthetic_batch(boxes_per_image=(4, 2))
    captured = capture_sampled_rois(m)
    teacher_rois = spy_teacher_rois(m)  # the teacher's sampled RoIs, as the model took them
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(batch)
    rois = captured["rois"] if proposals == "student" else teacher_rois["rois"]
    if reg_weights:
        assert m.roi_heads.box_predictor.box2box_transform.weights == reg_weights
        assert m.teacher.roi_heads.box_predictor.box2box_transform.weights != reg_weights
    expected = 0.5 * _by_hand_roi_box_loss(m, batch, rois, kind)
    assert losses["loss_defeat_box"].item() == pytest.approx(expected, rel=1e-4)
    assert {"loss_defeat_head_obj", "loss_defeat_head_bg"} <= set(losses)


def test_rcnn_box_loss_gradients_reach_the_box_regression(teacher_weights):
    opts = ["MODEL.DEFEAT.NECK.ENABLED", False, "MODEL.DEFEAT.BOX.ENABLED", True]
    m = build_model(defeat_cfg(teacher_weights, *opts)).train()
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(4, 2)))
    losses["loss_defeat_box"].backward()
    pred = m.roi_heads.box_predictor
    assert pred.bbox_pred.weight.grad.abs().sum() > 0
    assert pred.cls_score.weight.grad is None or pred.cls_score.weight.grad.abs().sum() == 0
    assert all(p.grad is None for p in m.teacher.parameters())


def test_box_loss_refused_for_a_teacher_of_other_classes(tmp_path):
    teacher = save_random_weights(f"{CONFIGS}/tiny_teacher.yaml", tmp_path)
    cfg = defeat_cfg(teacher, "MODEL.ROI_HEADS.NUM_CLASSES", 5, "MODEL.DEFEAT.BOX.ENABLED", True)
    with pytest.raises(DeFeatConfigError, match="Set MODEL.DEFEAT.HEAD.ENABLED and MODEL.DEFEAT.BOX.ENABLED False"):
        build_model(cfg)
    cfg = defeat_cfg(
        teacher, "MODEL.ROI_HEADS.NUM_CLASSES", 5, "MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.HEAD.ENABLED", False
    )
    with pytest.raises(DeFeatConfigError, match=r"class by class.*Set MODEL.DEFEAT.BOX.ENABLED False to distil"):
        build_model(cfg)


def test_box_loss_on_a_cascade_is_the_stage_mean(tmp_path):
    from defeat.modeling.meta_arch.box_heads import box_transforms, stage_outputs
    from defeat.modeling.meta_arch.box_kd import roi_box_terms

    teacher = save_random_weights(f"{CONFIGS}/tiny_cascade_teacher.yaml", tmp_path)
    cfg = make_cfg(
        f"{CONFIGS}/tiny_cascade_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher,
        "MODEL.DEFEAT.NECK.ENABLED",
        False,
        "MODEL.DEFEAT.BOX.ENABLED",
        True,
        "MODEL.DEFEAT.HEAD.PROPOSALS",
        "student",
    )
    m = build_model(cfg).train()
    batch = synthetic_batch(boxes_per_image=(4, 2))
    # The RoIs, features and teacher outputs the loss saw (a cascade's heads sample per stage).
    seen = {}
    orig = m.defeat_losses

    def spy(features, gt, teacher_out, sampled=None, *rest):
        seen["rois"], seen["features"], seen["teacher"] = sampled, features, teacher_out
        return orig(features, gt, teacher_out, sampled, *rest)

    m.defeat_losses = spy
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(batch)
    rois = seen["rois"]
    boxes = [r.proposal_boxes for r in rois]
    roi = torch.cat([b.tensor for b in boxes])
    labels = torch.cat([r.gt_classes for r in rois])
    with torch.no_grad():
        s_out = stage_outputs(m.roi_heads, seen["features"], boxes)
        t_out = stage_outputs(m.teacher.roi_heads, seen["teacher"]["features"], boxes)
    per_stage = []
    k = m.roi_heads.num_classes
    for (_, sd), (tl, td), sf, tf in zip(
        s_out, t_out, box_transforms(m.roi_heads), box_transforms(m.teacher.roi_heads)
    ):
        s, t, w, obj = roi_box_terms(sd, tf.apply_deltas(td, roi), tl, roi, labels, k, sf, "l1")
        per_stage.append(float((((s - t).abs().sum(1)) * w * obj).sum() / len(labels)))
    assert len(per_stage) == 3
    assert losses["loss_defeat_box"].item() == pytest.approx(sum(per_stage) / 3, rel=1e-4)


# ---- dense wiring ----


@pytest.fixture(scope="module")
def retinanet_teacher(tmp_path_factory):
    return save_random_weights(f"{CONFIGS}/tiny_retinanet_teacher.yaml", tmp_path_factory.mktemp("rt"))


def _retinanet(teacher, *opts):
    cfg = make_cfg(f"{CONFIGS}/tiny_retinanet_defeat.yaml", "MODEL.DEFEAT.TEACHER.WEIGHTS", teacher, *opts)
    torch.manual_seed(3)
    return build_model(cfg).train()


@pytest.mark.parametrize("kind", ["l1", "giou"])
def test_retinanet_box_loss_matches_independent_computation(retinanet_teacher, kind):
    m = _retinanet(retinanet_teacher, "MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.BOX.LOSS", kind)
    batch = synthetic_batch(boxes_per_image=(3, 1))
    with EventStorage(0):
        losses = m(batch)
    with torch.no_grad():
        images = m.preprocess_image(batch)
        fs = m.backbone(images.tensor)
        ft = m.teacher.backbone(images.tensor)
        levels = m.head_in_features
        s_logits, s_deltas = m.head([fs[f] for f in levels])
        t_logits, t_deltas = m.teacher.head([ft[f] for f in levels])
        anchors = m.anchor_generator([fs[f] for f in levels])
        gt = [x["instances"] for x in batch]
        labels, _ = m.label_anchors(anchors, gt)
    a = torch.cat([b.tensor for b in anchors])
    A = m.anchor_generator.num_cell_anchors[0]
    K = m.num_classes

    def flat(maps, d, n):  # [N, A*d, H, W] per level -> [R, d] of image n, anchor-major per cell
        return torch.cat([x[n].view(A, d, *x.shape[-2:]).permute(2, 3, 0, 1).reshape(-1, d) for x in maps])

    total, n_obj = 0.0, 0
    tf_s, tf_t = m.box2box_transform, m.teacher.box2box_transform
    for n in range(len(batch)):
        sd, td, tl = flat(s_deltas, 4, n), flat(t_deltas, 4, n), flat(t_logits, K, n)
        for r in torch.nonzero((labels[n] >= 0) & (labels[n] < K)).flatten().tolist():
            c = int(labels[n][r])
            t_box = tf_t.apply_deltas(td[r : r + 1], a[r : r + 1])
            if kind == "l1":
                per = (sd[r : r + 1] - tf_s.get_deltas(a[r : r + 1], t_box)).abs().sum().item()
            else:
                per = 1 - _giou_by_hand(tf_s.apply_deltas(sd[r : r + 1], a[r : r + 1])[0].tolist(), t_box[0].tolist())
            total += torch.sigmoid(tl[r, c]).item() * per
            n_obj += 1
    assert n_obj > 0
    assert losses["loss_defeat_box"].item() == pytest.approx(total / n_obj, rel=1e-4)


def test_dense_box_loss_refuses_a_scaled_teacher(retinanet_teacher):
    with pytest.raises(DeFeatConfigError, match="INPUT_SCALE is 2.0; set it to 1.0 or MODEL.DEFEAT.BOX.ENABLED False"):
        _retinanet(retinanet_teacher, "MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.TEACHER.INPUT_SCALE", 2.0)


def test_fcos_box_loss_trains(tmp_path):
    from detectron2.config import instantiate

    from defeat.config.files import load_config

    teacher = save_random_weights(f"{CONFIGS}/tiny_fcos_teacher.py", tmp_path)
    cfg = load_config(
        f"{CONFIGS}/tiny_fcos_defeat.py",
        [f"model.teacher.weights={teacher}", "model.defeat.box.enabled=True", "model.defeat.box.loss=giou"],
    )
    torch.manual_seed(0)
    m = instantiate(cfg.model).train()
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(3, 1)))
    assert torch.isfinite(losses["loss_defeat_box"]) and losses["loss_defeat_box"].item() > 0
    losses["loss_defeat_box"].backward()
    assert m.head.bbox_pred.weight.grad.abs().sum() > 0


# ---- fewer teacher RoIs ----


def test_rois_per_image_samples_fewer_teacher_rois_and_restores_the_teacher(teacher_weights):
    opts = ["MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE", 8, "MODEL.DEFEAT.BOX.ENABLED", True]
    m = build_model(defeat_cfg(teacher_weights, *opts)).train()
    own = m.teacher.roi_heads.batch_size_per_image
    seen = spy_teacher_rois(m)
    torch.manual_seed(0)
    with EventStorage(0):
        losses = m(synthetic_batch(boxes_per_image=(4, 2)))
    assert [len(r) for r in seen["rois"]] == [8, 8] and own == 32
    assert m.teacher.roi_heads.batch_size_per_image == own  # the teacher's own setting is left as it was
    assert torch.isfinite(losses["loss_defeat_head_obj"]) and torch.isfinite(losses["loss_defeat_box"])


def test_rois_per_image_is_checked(teacher_weights):
    from defeat.config.settings import resolve_settings

    with pytest.raises(DeFeatConfigError, match="MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE = -1 must be >= 0"):
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE", -1))
    with pytest.raises(Exception, match="MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE"):  # yacs: a float for an int key
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.ROIS_PER_IMAGE", 2.5))
    with pytest.raises(DeFeatConfigError, match=r"ROIS_PER_IMAGE = 2.5 must be a whole number.*head.rois_per_image"):
        resolve_settings({"head": {"rois_per_image": 2.5}})  # a LazyConfig's value
