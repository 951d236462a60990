"""Every cell of docs/compatibility.md: student family x teacher family, with the head loss on (it
either trains with all four DeFeat losses or is refused at build time) and off (the neck loss trains)."""

import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import GeneralizedRCNN, RetinaNet, build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, REPO, make_cfg, synthetic_batch

from defeat import DeFeatConfigError, DeFeatFCOS, DeFeatRCNN, DeFeatRetinaNet
from defeat.modeling.teacher import freeze

NECK = {"loss_defeat_neck_obj", "loss_defeat_neck_bg"}
HEAD = {"loss_defeat_head_obj", "loss_defeat_head_bg"}
TWO_STAGE = ("faster", "mask", "cascade")
STUDENTS = ("faster", "mask", "cascade", "retinanet", "fcos")
TEACHERS = ("faster", "mask", "cascade", "retinanet", "fcos", "vitdet", "resnext")
YAML = {
    "faster": "tiny_base.yaml",
    "mask": "tiny_mask_base.yaml",
    "cascade": "tiny_cascade_base.yaml",
    "retinanet": "tiny_retinanet_base.yaml",
    "resnext": "tiny_resnext_teacher.yaml",
}
# The families whose classifiers the head loss can compare; anything else is refused.
HEAD_FAMILY = {
    "faster": "rcnn1",
    "mask": "rcnn1",
    "vitdet": "rcnn1",
    "resnext": "rcnn1",
    "cascade": "rcnn3",
    "retinanet": "retinanet",
    "fcos": "fcos",
}


def expected(student, teacher):
    """``("head", None)`` when the head loss applies, else ``("neck", message pattern of the refusal)``."""
    s, t = HEAD_FAMILY[student], HEAD_FAMILY[teacher]
    if s == t:
        return "head", None
    if s.startswith("rcnn") and t.startswith("rcnn"):
        return "neck", "pairs box-classifier stages one to one"
    return "neck", "HEAD.ENABLED False to distil the neck only across families"


def _lazy(path):
    return LazyConfig.load(os.path.join(CONFIGS, path))


@pytest.fixture(scope="module")
def teachers():
    """One random, frozen tiny teacher per family (the loading path is tested elsewhere)."""
    out = {}
    torch.manual_seed(0)
    for name in TEACHERS:
        if name == "vitdet":
            if _has_timm():
                out[name] = instantiate(_lazy("tiny_vitdet_teacher.py").model)
        elif name == "fcos":
            out[name] = instantiate(_lazy("tiny_fcos_teacher.py").model)
        else:
            out[name] = build_model(make_cfg(os.path.join(CONFIGS, YAML[name])))
    return {k: freeze(v) for k, v in out.items()}


def _has_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def build_student(student, teacher, head):
    levels = ["p2", "p3", "p4", "p5", "p6"] if student in TWO_STAGE else ["p3", "p4", "p5", "p6", "p7"]
    defeat = {"neck": {"in_features": levels, "scale_base": 8.0}, "head": {"enabled": head}}
    torch.manual_seed(0)
    if student == "fcos":
        model_cfg = _lazy("tiny_fcos_base.py").model
        parts = {k: instantiate(v) for k, v in model_cfg.items() if k != "_target_"}
        return DeFeatFCOS(teacher=teacher, defeat=defeat, **parts)
    cfg = make_cfg(os.path.join(CONFIGS, YAML[student]))
    if student == "retinanet":
        return DeFeatRetinaNet(teacher=teacher, defeat=defeat, **RetinaNet.from_config(cfg))
    return DeFeatRCNN(teacher=teacher, defeat=defeat, **GeneralizedRCNN.from_config(cfg))


def _batch(student):
    batch = synthetic_batch(boxes_per_image=(3, 1))
    if student == "mask":
        import numpy as np
        from detectron2.structures import PolygonMasks

        for x in batch:
            boxes = x["instances"].gt_boxes.tensor.tolist()
            x["instances"].gt_masks = PolygonMasks(
                [[np.array([a, b, c, b, c, d, a, d], dtype=np.float64)] for a, b, c, d in boxes]
            )
    return batch


def _step(model, student):
    model.train()
    torch.manual_seed(0)
    with EventStorage(0):
        losses = model(_batch(student))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    return set(losses)


@pytest.mark.parametrize("teacher", TEACHERS)
@pytest.mark.parametrize("student", STUDENTS)
def test_compatibility_matrix(teachers, student, teacher):
    if teacher not in teachers:
        pytest.skip("Detectron2's ViT needs timm (requirements.txt)")
    t = teachers[teacher]
    kind, refusal = expected(student, teacher)
    if kind == "head":
        keys = _step(build_student(student, t, head=True), student)
        assert NECK | HEAD <= keys
    else:
        with pytest.raises(DeFeatConfigError, match=refusal):
            build_student(student, t, head=True)
    m = build_student(student, t, head=False)
    assert _step(m, student) & (NECK | HEAD) == NECK
    if (student in TWO_STAGE) != (teacher in TWO_STAGE + ("vitdet", "resnext")):  # P2-P6 vs P3-P7
        assert m.distiller.in_features == ["p3", "p4", "p5", "p6"]


def test_docs_table_lists_every_cell():
    """docs/compatibility.md has one row per student and one column per teacher, and each cell
    says what this test expects: "neck + head" or "neck" (the head loss refused)."""
    with open(os.path.join(REPO, "docs", "compatibility.md")) as f:
        rows = [line for line in f if line.startswith("| **")]
    table = {}
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        table[cells[0].split()[0].strip("*").lower()] = cells[1:]
    assert set(table) == set(STUDENTS)
    for student, cells in table.items():
        assert len(cells) == len(TEACHERS), student
        for teacher, cell in zip(TEACHERS, cells):
            kind, _ = expected(student, teacher)
            assert cell.startswith("neck + head" if kind == "head" else "neck"), (student, teacher, cell)
            assert (kind == "head") == cell.startswith("neck + head"), (student, teacher, cell)
