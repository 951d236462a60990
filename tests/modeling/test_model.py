"""DeFeatRCNN wiring on tiny models: losses, gradients, frozen hidden teacher, eval == parent."""

import math

import pytest
import torch
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, assert_same_detections, capture_sampled_rois, defeat_cfg, make_cfg, synthetic_batch

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
PARENT_KEYS = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def _losses(model, batch, iteration=0, seed=0):
    torch.manual_seed(seed)  # RPN/ROI sampling is random
    with EventStorage(iteration) as storage:
        losses = model(batch)
    return losses, storage


@pytest.fixture(scope="module")
def model(teacher_weights):
    torch.manual_seed(1)
    m = build_model(defeat_cfg(teacher_weights))
    m.train()
    return m


def test_teacher_is_hidden_frozen_and_eval(model):
    assert type(model).__name__ == "DeFeatRCNN"
    assert not any(k.startswith("teacher") for k in model.state_dict())
    own = {id(p) for p in model.parameters()}
    assert all(id(p) not in own for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    model.train()
    assert model.training and not model.teacher.training
    assert any(k.startswith("distiller.adapters.p2") for k in model.state_dict())


@pytest.mark.parametrize("mode", ["teacher", "student"])
def test_losses_finite_and_gradients_reach_student_only(teacher_weights, mode):
    torch.manual_seed(0)
    m = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.PROPOSALS", mode))
    m.train()
    losses, storage = _losses(m, synthetic_batch(boxes_per_image=(3, 0)))
    assert set(losses) == PARENT_KEYS | DEFEAT_KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_defeat_neck_bg"] > 0 and losses["loss_defeat_head_bg"] > 0
    sum(losses.values()).backward()
    assert m.distiller.adapters["p2"].weight.grad.abs().sum() > 0
    assert m.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    assert storage.history("defeat/kd_weight").latest() == 1.0


def test_teacher_state_bit_identical_after_training_steps(teacher_weights):
    torch.manual_seed(0)
    m = build_model(defeat_cfg(teacher_weights))
    m.train()
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01)
    for it in range(2):
        losses, _ = _losses(m, synthetic_batch(seed=it), iteration=it)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    after = m.teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    saved = torch.load(teacher_weights, map_location="cpu", weights_only=False)["model"]
    assert all(torch.equal(saved[k], after[k]) for k in after)


def test_only_enabled_losses_are_returned(teacher_weights):
    neck_only = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.ENABLED", False)).train()
    losses, _ = _losses(neck_only, synthetic_batch())
    assert set(losses) & DEFEAT_KEYS == {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}
    head_only = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.ENABLED", False)).train()
    losses, _ = _losses(head_only, synthetic_batch())
    assert set(losses) & DEFEAT_KEYS == {"loss_defeat_head_obj", "loss_defeat_head_bg"}
    assert not any("adapters" in k for k in head_only.state_dict())


def test_weights_and_warmup_scale_the_losses(teacher_weights):
    torch.manual_seed(3)
    base = build_model(defeat_cfg(teacher_weights)).train()
    state = base.state_dict()
    ref, _ = _losses(base, synthetic_batch())
    torch.manual_seed(3)
    scaled = build_model(
        defeat_cfg(
            teacher_weights,
            "MODEL.DEFEAT.NECK.OBJ_WEIGHT",
            8.0,
            "MODEL.DEFEAT.NECK.BG_WEIGHT",
            4.0,
            "MODEL.DEFEAT.HEAD.OBJ_WEIGHT",
            1.0,
            "MODEL.DEFEAT.HEAD.BG_WEIGHT",
            0.0,
            "MODEL.DEFEAT.WARMUP_ITERS",
            10,
            "SOLVER.MAX_ITER",
            10,  # a warm-up no longer than the run
        )
    ).train()
    scaled.load_state_dict(state)
    got, storage = _losses(scaled, synthetic_batch(), iteration=4)  # warm-up factor 5/10
    assert storage.history("defeat/kd_weight").latest() == pytest.approx(0.5)
    d = base.distiller
    for key, factor in (
        ("loss_defeat_neck_obj", 8.0 / d.neck_weights[0]),
        ("loss_defeat_neck_bg", 4.0 / d.neck_weights[1]),
        ("loss_defeat_head_obj", 1.0 / d.head_weights[0]),
        ("loss_defeat_head_bg", 0.0),
    ):
        assert got[key].item() == pytest.approx(0.5 * factor * ref[key].item(), rel=1e-5), key
    for key in PARENT_KEYS:
        assert got[key].item() == pytest.approx(ref[key].item(), rel=1e-6)


def test_head_loss_matches_independent_kl(teacher_weights):
    """Student-RoI mode: recompute the KL from both box heads on the sampled RoIs by hand."""
    from defeat.modeling.meta_arch.rcnn import box_head_logits

    torch.manual_seed(5)
    m = build_model(
        defeat_cfg(
            teacher_weights,
            "MODEL.DEFEAT.HEAD.PROPOSALS",
            "student",
            "MODEL.DEFEAT.NECK.ENABLED",
            False,
            "MODEL.DEFEAT.HEAD.TEMPERATURE",
            2.0,
        )
    ).train()
    captured = capture_sampled_rois(m)
    batch = synthetic_batch(boxes_per_image=(4, 2))
    losses, _ = _losses(m, batch)
    with torch.no_grad():
        images = m.preprocess_image(batch)
        boxes = [r.proposal_boxes for r in captured["rois"]]
        s = box_head_logits(m.roi_heads, m.backbone(images.tensor), boxes).double()
        t = box_head_logits(m.teacher.roi_heads, m.teacher.backbone(images.tensor), boxes).double()
    labels = torch.cat([r.gt_classes for r in captured["rois"]])
    obj_terms, bg_terms = [], []
    for r in range(len(labels)):
        pt = torch.softmax(t[r] / 2.0, 0)
        ps = torch.softmax(s[r] / 2.0, 0)
        kl = float((pt * (pt.log() - ps.log())).sum()) * 4.0
        (obj_terms if labels[r] < 10 else bg_terms).append(kl)
    assert obj_terms and bg_terms
    w_obj, w_bg = m.distiller.head_weights
    assert losses["loss_defeat_head_obj"].item() == pytest.approx(w_obj * sum(obj_terms) / len(obj_terms), rel=1e-4)
    assert losses["loss_defeat_head_bg"].item() == pytest.approx(w_bg * sum(bg_terms) / len(bg_terms), rel=1e-4)


def test_eval_mode_is_the_plain_student(teacher_weights):
    torch.manual_seed(2)
    m = build_model(defeat_cfg(teacher_weights)).eval()
    plain = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml")).eval()
    assert isinstance(plain, GeneralizedRCNN) and type(plain) is GeneralizedRCNN
    student_state = {k: v for k, v in m.state_dict().items() if not k.startswith("distiller.")}
    plain.load_state_dict(student_state, strict=True)
    m.teacher.backbone.forward = None  # the teacher must not run at inference
    batch = [{"image": x["image"], "height": 64, "width": 64} for x in synthetic_batch()]
    with torch.no_grad():
        a, b = m(batch), plain(batch)
    assert_same_detections(a, b)


def test_all_empty_batch_trains_without_nan(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights)).train()
    losses, _ = _losses(m, synthetic_batch(boxes_per_image=(0,)))
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_defeat_neck_obj"].item() == 0.0


def test_kd_losses_are_fp32_under_autocast(teacher_weights):
    """Mixed precision (bf16 autocast on CPU here; fp16 on GPU): DeFeat losses stay fp32 and finite."""
    m = build_model(defeat_cfg(teacher_weights)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses, _ = _losses(m, synthetic_batch())
    for key in DEFEAT_KEYS:
        assert losses[key].dtype == torch.float32 and torch.isfinite(losses[key]), key
    sum(losses.values()).backward()
    assert torch.isfinite(m.distiller.adapters["p2"].weight.grad).all()


def test_one_box_head_pass_equals_two(teacher_weights, monkeypatch):
    """Teacher-RoI mode runs the teacher's RoIs through the student's normal box-head call;
    the losses and gradients equal those of a separate second pass."""
    from defeat.modeling.meta_arch import box_tap

    def run(merge):
        monkeypatch.setattr(box_tap, "rows_independent", lambda head: merge)
        torch.manual_seed(4)
        m = build_model(defeat_cfg(teacher_weights)).train()
        calls = []
        m.roi_heads.box_pooler.register_forward_hook(lambda *a: calls.append(1))
        losses, _ = _losses(m, synthetic_batch(boxes_per_image=(4, 1)), seed=9)
        assert len(calls) == (1 if merge else 2)  # student box-head passes per step
        sum(losses.values()).backward()
        grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
        return losses, grads

    merged, g1 = run(True)
    separate, g2 = run(False)
    assert merged.keys() == separate.keys()
    for k in merged:
        assert merged[k].item() == pytest.approx(separate[k].item(), rel=1e-5, abs=1e-7), k
    assert g1.keys() == g2.keys()
    for k in g1:
        assert torch.allclose(g1[k], g2[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("mode", ["teacher", "student"])
def test_teacher_runs_once_per_step_and_keeps_no_graph(teacher_weights, mode):
    """Neck and head share one teacher backbone pass; nothing the teacher computes is saved for
    backward, and its outputs carry no graph (they are plain tensors for the losses)."""
    torch.manual_seed(0)
    m = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.PROPOSALS", mode)).train()
    calls, saved = [], []
    m.teacher.backbone.register_forward_hook(lambda *a: calls.append(1))
    batch = synthetic_batch(boxes_per_image=(3, 1))
    images = m.preprocess_image(batch)
    gt = [x["instances"] for x in batch]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = m.defeat_teacher(batch, images, gt)
    assert saved == [] and len(calls) == 1
    tensors = list(out["features"].values()) + (list(out["logits"]) if out["logits"] is not None else [])
    assert tensors and all(t.grad_fn is None and not t.requires_grad for t in tensors)
    calls.clear()
    losses, _ = _losses(m, batch)
    assert len(calls) == 1 and DEFEAT_KEYS <= set(losses)
