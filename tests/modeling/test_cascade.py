"""Cascade R-CNN as DeFeat student and teacher: per-stage head loss, refused pairs, train -> plain eval."""

import json
import math
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads
from detectron2.utils.events import EventStorage
from helpers import (
    CONFIGS,
    capture_sampled_rois,
    data_opts,
    defeat_cfg,
    make_cfg,
    metrics_rows,
    save_random_weights,
    synthetic_batch,
    train_args,
)

from defeat import DeFeatConfigError
from defeat.modeling.meta_arch.box_heads import check_head_pair, stage_logits

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
NECK_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}
STAGE_KEYS = {f"loss_{k}_stage{s}" for k in ("cls", "box_reg") for s in range(3)}


@pytest.fixture(scope="module")
def cascade_teacher(tmp_path_factory):
    return save_random_weights(f"{CONFIGS}/tiny_cascade_teacher.yaml", tmp_path_factory.mktemp("cascade_t"))


def cascade_cfg(weights, *opts):
    return make_cfg(f"{CONFIGS}/tiny_cascade_defeat.yaml", "MODEL.DEFEAT.TEACHER.WEIGHTS", weights, *opts)


def _losses(model, batch, seed=0):
    torch.manual_seed(seed)  # RPN/ROI sampling is random
    with EventStorage(0):
        return model(batch)


@pytest.mark.parametrize("mode", ["teacher", "student"])
def test_cascade_pair_trains_every_stage_classifier(cascade_teacher, mode):
    torch.manual_seed(0)
    m = build_model(cascade_cfg(cascade_teacher, "MODEL.DEFEAT.HEAD.PROPOSALS", mode)).train()
    assert isinstance(m.roi_heads, CascadeROIHeads) and isinstance(m.teacher.roi_heads, CascadeROIHeads)
    losses = _losses(m, synthetic_batch(boxes_per_image=(3, 1)))
    assert set(losses) == STAGE_KEYS | {"loss_rpn_cls", "loss_rpn_loc"} | DEFEAT_KEYS
    assert all(torch.isfinite(v) for v in losses.values()) and all(losses[k] > 0 for k in DEFEAT_KEYS)
    sum(losses[k] for k in ("loss_defeat_head_obj", "loss_defeat_head_bg")).backward()
    for k in range(3):  # the head loss alone reaches every stage's classifier
        assert m.roi_heads.box_predictor[k].cls_score.weight.grad.abs().sum() > 0, k
    assert all(p.grad is None for p in m.teacher.parameters())


def test_cascade_head_loss_is_the_mean_of_per_stage_kls(cascade_teacher):
    """Student-RoI mode: per-stage KL recomputed by hand on the sampled RoIs, averaged over stages."""
    torch.manual_seed(5)
    m = build_model(
        cascade_cfg(cascade_teacher, "MODEL.DEFEAT.HEAD.PROPOSALS", "student", "MODEL.DEFEAT.NECK.ENABLED", False)
    ).train()
    captured = capture_sampled_rois(m)
    batch = synthetic_batch(boxes_per_image=(4, 2))
    losses = _losses(m, batch)
    labels = torch.cat([r.gt_classes for r in captured["rois"]])
    obj = labels < 10
    assert obj.any() and (~obj).any()
    with torch.no_grad():
        images = m.preprocess_image(batch)
        boxes = [r.proposal_boxes for r in captured["rois"]]

        # Independent of stage_logits: pool and run each stage's head and predictor explicitly.
        def per_stage(heads, feats):
            x = heads.box_pooler([feats[f] for f in heads.box_in_features], boxes)
            return [heads.box_predictor[k](heads.box_head[k](x))[0].double() for k in range(3)]

        s_all = per_stage(m.roi_heads, m.backbone(images.tensor))
        t_all = per_stage(m.teacher.roi_heads, m.teacher.backbone(images.tensor))
    obj_terms, bg_terms = [], []
    for s, t in zip(s_all, t_all):
        kl = (t.softmax(1) * (t.log_softmax(1) - s.log_softmax(1))).sum(1)
        obj_terms.append(kl[obj].mean().item())
        bg_terms.append(kl[~obj].mean().item())
    assert len(set(round(x, 6) for x in obj_terms)) == 3  # the stages really differ
    w_obj, w_bg = m.distiller.head_weights
    assert losses["loss_defeat_head_obj"].item() == pytest.approx(w_obj * sum(obj_terms) / 3, rel=1e-4)
    assert losses["loss_defeat_head_bg"].item() == pytest.approx(w_bg * sum(bg_terms) / 3, rel=1e-4)


# --- mixes: the head loss pairs stages one to one; the neck loss serves every mix -----------------


@pytest.mark.parametrize("student", ["cascade", "standard"])
def test_head_loss_across_cascade_and_standard_is_refused_neck_works(teacher_weights, cascade_teacher, student):
    if student == "cascade":  # cascade student, standard (Faster R-CNN) teacher
        opts = ("MODEL.DEFEAT.TEACHER.CONFIG_FILE", f"{CONFIGS}/tiny_teacher.yaml")
        cfg = lambda *o: cascade_cfg(teacher_weights, *opts, *o)  # noqa: E731
    else:  # standard student, cascade teacher
        opts = ("MODEL.DEFEAT.TEACHER.CONFIG_FILE", f"{CONFIGS}/tiny_cascade_teacher.yaml")
        cfg = lambda *o: defeat_cfg(cascade_teacher, *opts, *o)  # noqa: E731
    with pytest.raises(
        DeFeatConfigError,
        match=r"pairs box-classifier stages one to one, but the student's ROI "
        r"heads \((Cascade|Standard)ROIHeads\) have [13] stage",
    ):
        build_model(cfg())
    m = build_model(cfg("MODEL.DEFEAT.HEAD.ENABLED", False)).train()
    losses = _losses(m, synthetic_batch())
    assert set(losses) & DEFEAT_KEYS == NECK_KEYS and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert m.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_cascades_with_other_stage_counts_are_refused(cascade_teacher, tmp_path):
    two = tmp_path / "two_stages.yaml"
    two.write_text(
        f'_BASE_: "{CONFIGS}/tiny_cascade_teacher.yaml"\nMODEL:\n  ROI_BOX_CASCADE_HEAD:\n'
        "    IOUS: (0.5, 0.6)\n    BBOX_REG_WEIGHTS: ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0))\n"
    )
    DetectionCheckpointer(build_model(make_cfg(str(two))), str(tmp_path)).save("two")
    with pytest.raises(
        DeFeatConfigError,
        match=r"student's ROI heads \(CascadeROIHeads\) have 3 stage\(s\) and "
        r"the teacher's \(CascadeROIHeads\) 2",
    ):
        build_model(cascade_cfg(str(tmp_path / "two.pth"), "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(two)))


def test_roi_heads_without_a_pooled_box_classifier_are_refused(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights))
    assert isinstance(m.roi_heads, StandardROIHeads)
    check_head_pair(m.roi_heads, m.teacher.roi_heads)  # the standard pair passes
    heads = m.teacher.roi_heads
    del heads.box_pooler  # e.g. Res5ROIHeads (C4) pools with `pooler` and has no box_head
    with pytest.raises(
        DeFeatConfigError, match="the teacher's ROI heads are StandardROIHeads; set MODEL.DEFEAT.HEAD.ENABLED False"
    ):
        check_head_pair(m.roi_heads, heads)


def test_stage_logits_of_a_standard_head_is_one_stage(teacher_weights):
    m = build_model(defeat_cfg(teacher_weights)).eval()
    feats = m.backbone(torch.zeros(1, 3, 64, 64))
    from detectron2.structures import Boxes

    out = stage_logits(m.roi_heads, feats, [Boxes(torch.tensor([[0.0, 0.0, 20.0, 20.0]]))])
    assert len(out) == 1 and out[0].shape == (1, 11)


# --- end to end: train through train_net.py, evaluate with the plain Cascade config ---------------


def test_train_net_defeat_cascade_then_plain_cascade_eval(tiny_dataset, cascade_teacher, tmp_path):
    import train_net

    out = str(tmp_path / "defeat")
    train_net.main(
        train_args(
            f"{CONFIGS}/tiny_cascade_defeat.yaml",
            *data_opts(out),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            cascade_teacher,
            "SOLVER.MAX_ITER",
            2,
        )
    )
    rows = [r for r in metrics_rows(out) if "loss_defeat_head_obj" in r]
    assert rows and all(math.isfinite(r[k]) for r in rows for k in DEFEAT_KEYS)
    plain = str(tmp_path / "plain")
    res = train_net.main(
        train_args(
            f"{CONFIGS}/tiny_cascade_base.yaml",
            *data_opts(plain),
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
            eval_only=True,
        )
    )
    assert set(res["bbox"]) >= {"AP", "AP50"}
    dets = [json.load(open(os.path.join(d, "inference", "coco_instances_results.json"))) for d in (out, plain)]
    assert len(dets[0]) > 0 and dets[0] == dets[1]


def test_cascade_stage_analysis_script(tiny_dataset, cascade_teacher, tmp_path):
    """benchmarks/cascade_stages.py on the tiny pair: last-stage-only gives stages 0-1 no gradient,
    the average reaches all; the last stage agrees with itself."""
    import importlib.util
    import json as _json

    from helpers import REPO

    script = os.path.join(REPO, "benchmarks", "cascade_stages.py")
    spec = importlib.util.spec_from_file_location("cascade_stages", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "stages.json"
    res = mod.main(
        [
            "--defeat-config",
            f"{CONFIGS}/tiny_cascade_defeat.yaml",
            "--teacher-weights",
            cascade_teacher,
            "--batches",
            "1",
            "--json",
            str(out),
            "--opts",
            "DATASETS.TRAIN",
            "('tiny_shapes_train',)",
        ]
    )
    assert _json.loads(out.read_text()) == res
    assert res["grad_cls_last"][:2] == [0.0, 0.0] and res["grad_cls_last"][2] > 0
    assert all(g > 0 for g in res["grad_cls_mean"]) and res["stage_kl"][2] == [0.0, 0.0]
    assert all(v > 0 for pair in res["student_kl"] for v in pair)
