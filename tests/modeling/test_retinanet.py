"""DeFeatRetinaNet and cross-family teachers on tiny models and through train_net.py."""

import json
import math
import os

import pytest
import torch
from detectron2.modeling import GeneralizedRCNN, RetinaNet, build_model
from detectron2.utils.events import EventStorage
from helpers import (
    CONFIGS,
    assert_same_detections,
    data_opts,
    defeat_cfg,
    make_cfg,
    metrics_rows,
    reference_sigmoid_kl,
    retina_cfg,
    save_weights,
    synthetic_batch,
    train_args,
)

from defeat import DeFeatConfigError

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
NECK_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}


def _losses(model, batch, iteration=0):
    with EventStorage(iteration):
        return model(batch)


def test_losses_finite_gradients_to_student_only_and_hidden_teacher(retina_teacher):
    torch.manual_seed(0)
    m = build_model(retina_cfg(retina_teacher)).train()
    assert type(m).__name__ == "DeFeatRetinaNet" and isinstance(m, RetinaNet)
    assert m.distiller.strides == [8, 16, 32, 64, 128]
    assert not any(k.startswith("teacher") for k in m.state_dict())
    assert not m.teacher.training and all(not p.requires_grad for p in m.teacher.parameters())
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}

    losses = _losses(m, synthetic_batch(boxes_per_image=(3, 0)))
    assert set(losses) == {"loss_cls", "loss_box_reg"} | DEFEAT_KEYS
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    assert all(losses[k] > 0 for k in DEFEAT_KEYS)
    sum(losses.values()).backward()
    assert m.distiller.adapters["p7"].weight.grad.abs().sum() > 0
    assert m.head.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in m.teacher.state_dict().items())


def _dense_logits_by_hand(model, images_tensor):
    """[N, R, K] logits from the full head forward and an explicit reshape (no shortcut)."""
    feats = model.backbone(images_tensor)
    logits, _ = model.head([feats[f] for f in model.head_in_features])
    k = model.num_classes
    out = []
    for x in logits:  # [N, A*K, H, W] -> [N, H, W, A, K] -> [N, H*W*A, K]
        n, _, h, w = x.shape
        out.append(x.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k))
    return torch.cat(out, 1)


def test_head_loss_matches_independent_sigmoid_kl_without_ignored_anchors(retina_teacher):
    torch.manual_seed(0)
    m = build_model(
        retina_cfg(
            retina_teacher,
            "MODEL.DEFEAT.HEAD.TEMPERATURE",
            2.0,
            "MODEL.DEFEAT.HEAD.OBJ_WEIGHT",
            3.0,
            "MODEL.DEFEAT.HEAD.BG_WEIGHT",
            0.5,
        )
    ).train()
    batch = synthetic_batch(boxes_per_image=(4, 2))
    losses = _losses(m, batch)
    with torch.no_grad():
        images = m.preprocess_image(batch)
        s = _dense_logits_by_hand(m, images.tensor).double()
        t = _dense_logits_by_hand(m.teacher, images.tensor).double()
        anchors = m.anchor_generator([m.backbone(images.tensor)[f] for f in m.head_in_features])
        labels = torch.stack(m.label_anchors(anchors, [x["instances"] for x in batch])[0])
    kl = reference_sigmoid_kl(s.flatten(0, 1), t.flatten(0, 1), 2.0)
    labels = labels.flatten()
    obj, bg = labels.ge(0) & labels.lt(10), labels.eq(10)
    assert obj.sum() > 0 and bg.sum() > 0 and labels.eq(-1).sum() > 0  # ignored anchors exist
    assert losses["loss_defeat_head_obj"].item() == pytest.approx(3.0 * kl[obj].mean().item(), rel=1e-4)
    assert losses["loss_defeat_head_bg"].item() == pytest.approx(0.5 * kl[bg].mean().item(), rel=1e-4)


def test_batch_without_boxes_gives_zero_object_terms(retina_teacher):
    m = build_model(retina_cfg(retina_teacher)).train()
    losses = _losses(m, synthetic_batch(boxes_per_image=(0,)))
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_defeat_neck_obj"].item() == 0.0 and losses["loss_defeat_head_obj"].item() == 0.0
    assert losses["loss_defeat_neck_bg"].item() > 0 and losses["loss_defeat_head_bg"].item() > 0


def test_eval_mode_is_plain_retinanet_and_teacher_not_run(retina_teacher):
    torch.manual_seed(2)
    low = ("MODEL.RETINANET.SCORE_THRESH_TEST", 0.0)  # untrained: keep low-score detections
    m = build_model(retina_cfg(retina_teacher, *low)).eval()
    plain = build_model(make_cfg(f"{CONFIGS}/tiny_retinanet_base.yaml", *low)).eval()
    assert type(plain) is RetinaNet
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("distiller.")}, strict=True)
    m.teacher.backbone.forward = None
    batch = [{"image": x["image"], "height": 64, "width": 64} for x in synthetic_batch()]
    with torch.no_grad():
        a, b = m(batch), plain(batch)
    assert sum(len(x["instances"]) for x in a) > 0
    assert_same_detections(a, b)


def test_head_loss_needs_the_same_anchors(retina_teacher, tmp_path):
    cfg_t = tmp_path / "t.yaml"
    cfg_t.write_text(
        f'_BASE_: "{CONFIGS}/tiny_retinanet_teacher.yaml"\nMODEL:\n  ANCHOR_GENERATOR:\n'
        "    ASPECT_RATIOS: [[1.0, 2.0, 0.5]]\n"
    )
    weights = save_weights(build_model(make_cfg(str(cfg_t))), tmp_path, "t")
    with pytest.raises(DeFeatConfigError, match="anchors differ"):
        build_model(retina_cfg(weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(cfg_t)))
    # The neck loss alone does not pair anchors.
    m = build_model(
        retina_cfg(weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(cfg_t), "MODEL.DEFEAT.HEAD.ENABLED", False)
    )
    assert set(_losses(m.train(), synthetic_batch())) & DEFEAT_KEYS == NECK_KEYS


def test_retinanet_class_count_mismatch(retina_teacher):
    with pytest.raises(DeFeatConfigError, match="teacher has 10 classes but the student 4"):
        build_model(retina_cfg(retina_teacher, "MODEL.RETINANET.NUM_CLASSES", 4))


# --- teachers of another family: neck only, on the levels both FPNs share ---------------------


def test_rcnn_teacher_for_retinanet_student(teacher_weights):
    cfg = retina_cfg(
        teacher_weights,
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_teacher.yaml",
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
    )
    m = build_model(cfg).train()
    assert isinstance(m.teacher, GeneralizedRCNN)
    assert m.distiller.in_features == ["p3", "p4", "p5", "p6"] and m.distiller.strides == [8, 16, 32, 64]
    losses = _losses(m, synthetic_batch())
    assert set(losses) & DEFEAT_KEYS == NECK_KEYS and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert m.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert set(m.distiller.adapters) == {"p3", "p4", "p5", "p6"}


def test_retinanet_teacher_for_rcnn_student(retina_teacher):
    cfg = defeat_cfg(
        retina_teacher,
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_retinanet_teacher.yaml",
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
    )
    m = build_model(cfg).train()
    assert type(m).__name__ == "DeFeatRCNN" and isinstance(m.teacher, RetinaNet)
    assert m.distiller.in_features == ["p3", "p4", "p5", "p6"]
    torch.manual_seed(0)
    losses = _losses(m, synthetic_batch())
    assert set(losses) & DEFEAT_KEYS == NECK_KEYS and all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("student", ["retinanet", "rcnn"])
def test_head_loss_across_families_is_an_error(teacher_weights, retina_teacher, student):
    if student == "retinanet":
        cfg = retina_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", f"{CONFIGS}/tiny_teacher.yaml")
    else:
        cfg = defeat_cfg(retina_teacher, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", f"{CONFIGS}/tiny_retinanet_teacher.yaml")
    with pytest.raises(DeFeatConfigError, match="HEAD.ENABLED False to distil the neck only across families"):
        build_model(cfg)


def test_no_shared_level_across_families_is_an_error(teacher_weights):
    cfg = retina_cfg(
        teacher_weights,
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_teacher.yaml",
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
        "MODEL.DEFEAT.NECK.IN_FEATURES",
        "['p7']",
    )
    with pytest.raises(DeFeatConfigError, match=r"no level of MODEL.DEFEAT.NECK.IN_FEATURES \['p7'\]"):
        build_model(cfg)


# --- end to end through train_net.py ------------------------------------------------------------


def _retina_opts(out):
    return data_opts(out) + ["MODEL.RETINANET.SCORE_THRESH_TEST", 0.0]


def test_train_net_defeat_retinanet_then_plain_eval(tiny_dataset, retina_teacher, tmp_path):
    import train_net

    out = str(tmp_path / "defeat")
    train_net.main(
        train_args(
            f"{CONFIGS}/tiny_retinanet_defeat.yaml",
            *_retina_opts(out),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            retina_teacher,
            "SOLVER.MAX_ITER",
            3,
        )
    )
    rows = [r for r in metrics_rows(out) if "loss_defeat_head_obj" in r]
    assert rows and all(math.isfinite(r[k]) for r in rows for k in DEFEAT_KEYS)
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)["model"]
    assert not any(k.startswith("teacher") for k in ckpt) and any(k.startswith("distiller.") for k in ckpt)

    plain_out = str(tmp_path / "plain")
    train_net.main(
        train_args(
            f"{CONFIGS}/tiny_retinanet_base.yaml",
            *_retina_opts(plain_out),
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
            eval_only=True,
        )
    )
    preds = [json.load(open(os.path.join(d, "inference", "coco_instances_results.json"))) for d in (out, plain_out)]
    assert len(preds[0]) > 0 and preds[0] == preds[1]


def test_train_net_cross_family_smoke(tiny_dataset, teacher_weights, tmp_path):
    import train_net

    out = str(tmp_path / "cross")
    train_net.main(
        train_args(
            f"{CONFIGS}/tiny_retinanet_defeat.yaml",
            *_retina_opts(out),
            "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
            f"{CONFIGS}/tiny_teacher.yaml",
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            teacher_weights,
            "MODEL.DEFEAT.HEAD.ENABLED",
            False,
            "SOLVER.MAX_ITER",
            2,
            "TEST.EVAL_PERIOD",
            0,
        )
    )
    rows = [r for r in metrics_rows(out) if "loss_defeat_neck_bg" in r]
    assert rows and all(math.isfinite(r[k]) for r in rows for k in NECK_KEYS)
    assert not any("loss_defeat_head_obj" in r for r in metrics_rows(out))


def test_lazycall_construction_equals_yaml(retina_teacher):
    """LazyConfig path: explicit RetinaNet parts + teacher module + nested settings, same losses."""
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate

    from defeat import DeFeatRetinaNet, build_teacher

    torch.manual_seed(0)
    yaml_model = build_model(retina_cfg(retina_teacher)).train()
    parts = RetinaNet.from_config(make_cfg(f"{CONFIGS}/tiny_retinanet_base.yaml"))
    lazy = L(DeFeatRetinaNet)(
        teacher=L(build_teacher)(
            config_file=f"{CONFIGS}/tiny_retinanet_teacher.yaml", weights=retina_teacher, device="cpu"
        ),
        defeat={
            "neck": {"in_features": ["p3", "p4", "p5", "p6", "p7"], "scale_base": 12.0},
            "head": {"enabled": True},
            "max_iter": 4,
        },
        **parts,
    )
    lazy_model = instantiate(lazy).train()
    lazy_model.load_state_dict(yaml_model.state_dict(), strict=True)
    batch = synthetic_batch(boxes_per_image=(3, 1))
    a, b = _losses(yaml_model, batch), _losses(lazy_model, batch)
    assert set(a) == set(b) == {"loss_cls", "loss_box_reg"} | DEFEAT_KEYS
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
