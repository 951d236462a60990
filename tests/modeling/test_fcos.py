"""DeFeatFCOS (LazyConfig) and the dense-detector rules it shares with DeFeatRetinaNet."""

import json
import math
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import GeneralizedRCNN, RetinaNet, build_model
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.utils.events import EventStorage
from helpers import (
    CONFIGS,
    assert_same_detections,
    defeat_cfg,
    make_cfg,
    reference_sigmoid_kl,
    retina_cfg,
    save_random_weights,
    synthetic_batch,
)

from defeat import DeFeatConfigError, DeFeatFCOS, DeFeatRetinaNet

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
NECK_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}
FCOS_KEYS = {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}


def lazy(path, *overrides):
    return LazyConfig.apply_overrides(LazyConfig.load(path), list(overrides))


@pytest.fixture(scope="module")
def fcos_teacher(tmp_path_factory):
    """A random tiny FCOS teacher (FPN 48) saved with DetectionCheckpointer."""
    return save_random_weights(f"{CONFIGS}/tiny_fcos_teacher.py", tmp_path_factory.mktemp("fcos_t"))


def fcos_student(weights, *overrides, teacher_config=f"{CONFIGS}/tiny_fcos_teacher.py"):
    cfg = lazy(
        f"{CONFIGS}/tiny_fcos_defeat.py",
        f"model.teacher.weights={weights}",
        f"model.teacher.config_file={teacher_config}",
        "model.teacher.device=cpu",
        *overrides,
    )
    torch.manual_seed(0)
    return instantiate(cfg.model)


def _losses(model, batch):
    with EventStorage(0):
        return model(batch)


def test_losses_gradients_and_hidden_teacher(fcos_teacher):
    m = fcos_student(fcos_teacher).train()
    assert type(m) is DeFeatFCOS and isinstance(m, FCOS)
    assert m.distiller.in_features == ["p3", "p4", "p5", "p6", "p7"] and m.distiller.strides == [8, 16, 32, 64, 128]
    assert not any(k.startswith("teacher") for k in m.state_dict())
    losses = _losses(m, synthetic_batch(boxes_per_image=(3, 0)))
    assert set(losses) == FCOS_KEYS | DEFEAT_KEYS
    assert all(torch.isfinite(v) for v in losses.values()) and all(losses[k] > 0 for k in DEFEAT_KEYS)
    sum(losses.values()).backward()
    assert m.distiller.adapters["p7"].weight.grad.abs().sum() > 0
    assert m.head.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def _fcos_logits_by_hand(model, images_tensor):
    """[N, R, K] from the full FCOS head forward and an explicit reshape (one location per cell)."""
    feats = model.backbone(images_tensor)
    logits, _, _ = model.head([feats[f] for f in model.head_in_features])
    return torch.cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, model.num_classes) for x in logits], 1)


def test_head_loss_is_the_sigmoid_kl_over_fcos_locations(fcos_teacher):
    m = fcos_student(
        fcos_teacher,
        "model.defeat.head.temperature=2.0",
        "model.defeat.head.obj_weight=3.0",
        "model.defeat.head.bg_weight=0.5",
    ).train()
    batch = synthetic_batch(boxes_per_image=(4, 2))
    losses = _losses(m, batch)
    with torch.no_grad():
        images = m.preprocess_image(batch)
        s = _fcos_logits_by_hand(m, images.tensor).double().flatten(0, 1)
        t = _fcos_logits_by_hand(m.teacher, images.tensor).double().flatten(0, 1)
        anchors = m.anchor_generator([m.backbone(images.tensor)[f] for f in m.head_in_features])
        labels = torch.stack(m.label_anchors(anchors, [x["instances"] for x in batch])[0]).flatten()
    kl = reference_sigmoid_kl(s, t, 2.0)
    obj, bg = labels.lt(10), labels.eq(10)
    assert obj.sum() > 0 and bg.sum() > 0 and (obj | bg).all()  # FCOS ignores no location
    assert losses["loss_defeat_head_obj"].item() == pytest.approx(3.0 * kl[obj].mean().item(), rel=1e-4)
    assert losses["loss_defeat_head_bg"].item() == pytest.approx(0.5 * kl[bg].mean().item(), rel=1e-4)


def test_eval_mode_is_plain_fcos(fcos_teacher):
    m = fcos_student(fcos_teacher).eval()
    plain = instantiate(lazy(f"{CONFIGS}/tiny_fcos_base.py").model).eval()
    assert type(plain) is FCOS
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("distiller.")}, strict=True)
    m.teacher.backbone.forward = None  # the teacher must not run
    batch = [{"image": x["image"], "height": 64, "width": 64} for x in synthetic_batch()]
    with torch.no_grad():
        a, b = m(batch), plain(batch)
    assert sum(len(x["instances"]) for x in a) > 0
    assert_same_detections(a, b)


def test_fcos_from_yaml_is_a_clear_error():
    from detectron2.modeling import META_ARCH_REGISTRY

    assert META_ARCH_REGISTRY.get("DeFeatFCOS") is DeFeatFCOS
    cfg = make_cfg(f"{CONFIGS}/tiny_retinanet_defeat.yaml", "MODEL.META_ARCHITECTURE", "DeFeatFCOS")
    with pytest.raises(DeFeatConfigError, match="configures FCOS with LazyConfig only"):
        build_model(cfg)


# --- across families: the neck only, on the levels both share; the head loss refused ---------------


def test_retinanet_teacher_for_fcos_student(retina_teacher):
    m = fcos_student(
        retina_teacher, "model.defeat.head.enabled=False", teacher_config=f"{CONFIGS}/tiny_retinanet_teacher.yaml"
    ).train()
    assert isinstance(m.teacher, RetinaNet) and m.distiller.in_features == ["p3", "p4", "p5", "p6", "p7"]
    losses = _losses(m, synthetic_batch())
    assert set(losses) == FCOS_KEYS | NECK_KEYS and all(torch.isfinite(v) for v in losses.values())


def test_fcos_teacher_for_retinanet_and_rcnn_students(fcos_teacher):
    teacher = (
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_fcos_teacher.py",
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
    )
    r = build_model(retina_cfg(fcos_teacher, *teacher)).train()
    assert isinstance(r, DeFeatRetinaNet) and isinstance(r.teacher, FCOS)
    assert set(_losses(r, synthetic_batch())) & DEFEAT_KEYS == NECK_KEYS
    g = build_model(defeat_cfg(fcos_teacher, *teacher)).train()
    assert isinstance(g, GeneralizedRCNN) and g.distiller.in_features == ["p3", "p4", "p5", "p6"]
    torch.manual_seed(0)
    assert set(_losses(g, synthetic_batch())) & DEFEAT_KEYS == NECK_KEYS


@pytest.mark.parametrize("pair", ["fcos<-retinanet", "retinanet<-fcos"])
def test_head_loss_across_dense_families_is_an_error(fcos_teacher, retina_teacher, pair):
    with pytest.raises(DeFeatConfigError, match="HEAD.ENABLED False to distil the neck only across families"):
        if pair == "fcos<-retinanet":
            fcos_student(retina_teacher, teacher_config=f"{CONFIGS}/tiny_retinanet_teacher.yaml")
        else:
            build_model(retina_cfg(fcos_teacher, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", f"{CONFIGS}/tiny_fcos_teacher.py"))


def test_fcos_head_loss_needs_the_same_locations(tmp_path):
    """A teacher whose head reads P3-P6 only has other locations than the P3-P7 student."""
    cfg_file = tmp_path / "t.py"
    cfg_file.write_text(
        "from detectron2.config import LazyConfig\nfrom detectron2.layers import ShapeSpec\n"
        f"model = LazyConfig.load({CONFIGS + '/tiny_fcos_teacher.py'!r}).model\n"
        'model.head_in_features = ["p3", "p4", "p5", "p6"]\n'
        "model.head.input_shape = [ShapeSpec(channels=48)] * 4\n"
    )
    model = instantiate(lazy(str(cfg_file)).model)
    DetectionCheckpointer(model, str(tmp_path)).save("t")
    with pytest.raises(DeFeatConfigError, match="anchors differ"):
        fcos_student(str(tmp_path / "t.pth"), teacher_config=str(cfg_file))


def test_retinanet_on_a_faster_rcnn_backbone_is_a_clear_error(retina_teacher):
    """A user switching a Faster R-CNN config to DeFeatRetinaNet (P2-P6 backbone, P3-P7 head)."""
    cfg = defeat_cfg(
        retina_teacher,
        "MODEL.META_ARCHITECTURE",
        "DeFeatRetinaNet",
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        f"{CONFIGS}/tiny_retinanet_teacher.yaml",
    )
    with pytest.raises(
        DeFeatConfigError,
        match=r"IN_FEATURES .* names level 'p7', which the backbone "
        r"build_resnet_fpn_backbone does not produce",
    ):
        build_model(cfg)


def test_lazy_dense_student_with_missing_head_levels_is_a_clear_error(fcos_teacher):
    with pytest.raises(DeFeatConfigError, match=r"head reads levels \['p8'\] that its backbone does not produce"):
        fcos_student(fcos_teacher, "model.head_in_features=[p3,p4,p5,p6,p8]")


# --- lazy_train_net.py: train DeFeatFCOS, evaluate with the plain FCOS config --------------------


@pytest.fixture(scope="module")
def tiny_fcos_data(tmp_path_factory):
    from defeat.demo.data import register_demo_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    return register_demo_dataset(str(root), name_prefix="tiny_fcos", num_train=8, num_val=4, image_size=64)


def _run(config, out, *overrides, eval_only=False):
    from detectron2.engine import default_argument_parser

    import lazy_train_net

    argv = ["--config-file", config] + (["--eval-only"] if eval_only else [])
    argv += [
        f"train.output_dir={out}",
        "dataloader.train.dataset.names=tiny_fcos_train",
        "dataloader.test.dataset.names=tiny_fcos_val",
        *overrides,
    ]
    return lazy_train_net.main(default_argument_parser().parse_args(argv))


def test_lazy_train_net_defeat_fcos_then_plain_fcos_eval(tiny_fcos_data, fcos_teacher, tmp_path):
    out = str(tmp_path / "defeat")
    _run(
        f"{CONFIGS}/tiny_fcos_defeat.py",
        out,
        f"model.teacher.weights={fcos_teacher}",
        "train.max_iter=2",
        "train.log_period=1",
    )
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [r for r in map(json.loads, f) if "loss_defeat_head_obj" in r]
    assert rows and all(math.isfinite(r[k]) for r in rows for k in DEFEAT_KEYS)
    plain = str(tmp_path / "plain")
    res_plain = _run(
        f"{CONFIGS}/tiny_fcos_base.py", plain, f"train.init_checkpoint={out}/model_final.pth", eval_only=True
    )
    dets = [json.load(open(os.path.join(d, "inference", "coco_instances_results.json"))) for d in (out, plain)]
    assert len(dets[0]) > 0 and dets[0] == dets[1]
    assert set(res_plain["bbox"]) >= {"AP", "AP50"}
