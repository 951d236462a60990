"""DeFeat Mask R-CNN: the mask head trains as in plain Mask R-CNN; train -> plain eval, box and mask AP."""

import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import PolygonMasks
from detectron2.utils.events import EventStorage
from helpers import (
    CONFIGS,
    capture_sampled_rois,
    data_opts,
    make_cfg,
    metrics_rows,
    save_random_weights,
    synthetic_batch,
    train_args,
)

DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
TINY = ("tiny_masks_train", "tiny_masks_val")


@pytest.fixture(scope="module")
def mask_teacher(tmp_path_factory):
    return save_random_weights(f"{CONFIGS}/tiny_mask_teacher.yaml", tmp_path_factory.mktemp("mask_t"))


def mask_cfg(weights, *opts):
    return make_cfg(f"{CONFIGS}/tiny_mask_defeat.yaml", "MODEL.DEFEAT.TEACHER.WEIGHTS", weights, *opts)


def mask_batch():
    """synthetic_batch with a polygon mask (the box's inscribed diamond) per instance."""
    batch = synthetic_batch(boxes_per_image=(3, 1))
    for x in batch:
        polys = []
        for x0, y0, x1, y1 in x["instances"].gt_boxes.tensor.tolist():
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            polys.append([np.array([cx, y0, x1, cy, cx, y1, x0, cy], dtype=np.float64)])
        x["instances"].gt_masks = PolygonMasks(polys)
    return batch


def _losses(model, batch, seed=3):
    torch.manual_seed(seed)
    with EventStorage(0):
        return model(batch)


def test_mask_losses_are_plain_mask_rcnns(mask_teacher):
    """Student-RoI mode consumes no extra randomness: with the same weights and seed, every
    Mask R-CNN loss (mask included) equals the plain model's, and the mask head gets gradients."""
    torch.manual_seed(0)
    m = build_model(mask_cfg(mask_teacher, "MODEL.DEFEAT.HEAD.PROPOSALS", "student")).train()
    plain = build_model(make_cfg(f"{CONFIGS}/tiny_mask_base.yaml")).train()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("distiller.")}, strict=True)
    batch = mask_batch()
    got, expected = _losses(m, batch), _losses(plain, batch)
    assert set(got) == set(expected) | DEFEAT_KEYS and "loss_mask" in expected
    for k in expected:
        assert got[k].item() == pytest.approx(expected[k].item(), rel=1e-6), k
    sum(got.values()).backward()
    assert m.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0


def test_merged_box_pass_leaves_the_mask_loss_intact(mask_teacher):
    """Teacher-RoI mode (the teacher's RoIs ride along in the student's box-head pass): the mask
    loss equals the mask head's loss recomputed on the student's own sampled RoIs."""
    torch.manual_seed(0)
    m = build_model(mask_cfg(mask_teacher)).train()
    captured = capture_sampled_rois(m)
    batch = mask_batch()
    losses = _losses(m, batch)
    assert DEFEAT_KEYS <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad(), EventStorage(0):
        feats = m.backbone(m.preprocess_image(batch).tensor)
        again = m.roi_heads._forward_mask(feats, captured["rois"])["loss_mask"]
    assert losses["loss_mask"].item() == pytest.approx(again.item(), rel=1e-6)


def _write_mask_dataset(root, name, count, seed):
    """A COCO-format split of 64 px images, each with 1-3 filled triangles/quads and their polygons."""
    from detectron2.data.datasets import register_coco_instances

    rng = np.random.default_rng(seed)
    img_dir = os.path.join(root, name)
    os.makedirs(img_dir)
    images, anns = [], []
    for i in range(count):
        img = np.full((64, 64, 3), 40, np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            c, r = rng.uniform(16, 48, 2), rng.uniform(8, 16)
            k = int(rng.integers(3, 5))
            ang = rng.uniform(0, 2 * np.pi) + np.arange(k) * 2 * np.pi / k
            pts = np.stack([c[0] + r * np.cos(ang), c[1] + r * np.sin(ang)], 1).clip(0, 63)
            cls = int(rng.integers(0, 10))
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], tuple(int(v) for v in rng.integers(80, 255, 3)))
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "iscrowd": 0,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0)),
                    "segmentation": [pts.flatten().tolist()],
                }
            )
        cv2.imwrite(os.path.join(img_dir, f"{i:04d}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i:04d}.png", "width": 64, "height": 64})
    js = os.path.join(root, f"{name}.json")
    with open(js, "w") as f:
        json.dump(
            {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": f"c{k}"} for k in range(10)]},
            f,
        )
    register_coco_instances(name, {}, js, img_dir)


@pytest.fixture(scope="module")
def tiny_mask_dataset(tmp_path_factory):
    from detectron2.data import DatasetCatalog

    root = str(tmp_path_factory.mktemp("masks"))
    for name, count, seed in ((TINY[0], 8, 0), (TINY[1], 4, 1)):
        if name not in DatasetCatalog.list():
            _write_mask_dataset(root, name, count, seed)
    return TINY


def test_train_net_defeat_mask_rcnn_then_plain_eval_box_and_mask(tiny_mask_dataset, mask_teacher, tmp_path):
    import train_net

    out = str(tmp_path / "defeat")
    train_net.main(
        train_args(
            f"{CONFIGS}/tiny_mask_defeat.yaml",
            *data_opts(out, TINY),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            mask_teacher,
            "SOLVER.MAX_ITER",
            2,
        )
    )
    rows = [r for r in metrics_rows(out) if "loss_mask" in r]
    assert rows and all(math.isfinite(r[k]) for r in rows for k in DEFEAT_KEYS | {"loss_mask"})
    own = [r for r in metrics_rows(out) if "segm/AP" in r][-1]

    plain = str(tmp_path / "plain")
    res = train_net.main(
        train_args(
            f"{CONFIGS}/tiny_mask_base.yaml",
            *data_opts(plain, TINY),
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
            eval_only=True,
        )
    )
    for task in ("bbox", "segm"):
        for k in ("AP", "AP50"):
            a, b = res[task][k], own[f"{task}/{k}"]
            assert (math.isnan(a) and math.isnan(b)) or a == b, (task, k)
    dets = [json.load(open(os.path.join(d, "inference", "coco_instances_results.json"))) for d in (out, plain)]
    assert len(dets[0]) > 0 and "segmentation" in dets[0][0] and dets[0] == dets[1]
