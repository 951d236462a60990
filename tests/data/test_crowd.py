"""Crowd boxes (``iscrowd: 1``): regions of many objects, not objects. The data checks do not
count them as boxes to train on (nor warn that one outside its image is clipped), the distiller's
object masks never mark them (Detectron2's mapper drops them before the student's Instances, YAML
and LazyConfig alike), and the dataset inspector leaves them out of its counts."""

import json
import logging

import pytest
import torch
from coco_files import write_coco
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, defeat_cfg, lazy_cfg

from defeat.analysis.dataset_stats import compute_stats, format_report
from defeat.data.checks import check_dataset_boxes, check_dataset_has_boxes
from defeat.data.coco_json import check_coco_json
from defeat.data.datasets import register_coco_dataset
from defeat.errors import DataCheckError

OBJECT = (4, 4, 20, 20)  # XYWH: the one object of each image, class 0
CROWD = (36, 36, 24, 24)  # a crowd region of class 1, away from the object


def _record(*annotations):
    return {"file_name": "a.png", "height": 64, "width": 64, "annotations": list(annotations)}


def _ann(bbox, crowd=0, category=0):
    return {"bbox": list(bbox), "bbox_mode": BoxMode.XYWH_ABS, "category_id": category, "iscrowd": crowd}


def test_crowd_boxes_are_not_boxes_to_train_on():
    with pytest.raises(DataCheckError, match=r"no box to train on: 0 of its 2 boxes have zero width or height and 2 "):
        check_dataset_has_boxes([_record(_ann(CROWD, 1)), _record(_ann(OBJECT, 1))], "crowds")
    assert check_dataset_has_boxes([_record(_ann(OBJECT), _ann(CROWD, 1))], "mixed") == (1, 0)


def test_a_crowd_box_outside_its_image_is_not_reported_as_clipped_but_a_malformed_one_is_refused(caplog):
    outside = (50, 50, 30, 30)  # reaches 80 px in a 64-px image
    with caplog.at_level(logging.WARNING, logger="defeat.data.checks"):
        assert check_dataset_boxes([_record(_ann(outside, 1), _ann(OBJECT))], "d") == 0
        assert check_dataset_boxes([_record(_ann(outside, 0), _ann(OBJECT))], "d") == 1  # the same box, not crowd
    assert len([r for r in caplog.records if "extend outside their image" in r.getMessage()]) == 1
    with pytest.raises(ValueError, match="x2 < x1"):
        check_dataset_boxes([_record(_ann((30, 4, -10, 10), 1))], "d")


def test_a_category_with_crowd_boxes_only_is_empty(tmp_path):
    json_file, _ = write_coco(str(tmp_path), num_images=2, boxes=lambda i: [(*OBJECT, 0), (*CROWD, 1)])
    assert check_coco_json(json_file).empty_categories == []
    data = json.load(open(json_file))
    for a in data["annotations"]:
        a["iscrowd"] = int(a["category_id"] == 2)
    json.dump(data, open(json_file, "w"))
    summary = check_coco_json(json_file)
    assert summary.empty_categories == ["bar"] and summary.num_annotations == 4


def test_the_inspector_counts_no_crowd_box_as_an_object():
    dicts = [_record(_ann(OBJECT), _ann(CROWD, 1, category=1)), _record(_ann(CROWD, 1, category=1))]
    stats = compute_stats(dicts, "d", ["square", "bar"], 64, 64, ["p2", "p3"], [4, 8], 32)
    assert stats.class_counts.tolist() == [1, 0] and stats.skipped["crowd"] == 2
    assert stats.sides.tolist() == pytest.approx([20.0]) and int(stats.level_counts.sum()) == 1
    report = format_report(stats)
    assert "2 images, 1 boxes used (2 crowd and 0 zero-area boxes left out)" in report
    assert "  square       1\n  bar          0" in report


@pytest.fixture(scope="module")
def crowd_dataset(tmp_path_factory):
    """A registered COCO set of 64-px images, each with one object and one crowd region."""
    root = tmp_path_factory.mktemp("crowd")
    json_file, images = write_coco(str(root), num_images=4, boxes=lambda i: [(*OBJECT, 0), (*CROWD, 1)])
    data = json.load(open(json_file))
    for a in data["annotations"]:
        a["iscrowd"] = int(a["category_id"] == 2)
    json.dump(data, open(json_file, "w"))
    name = "crowd_train"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_dataset(name, json_file, images)
    assert sum(a.get("iscrowd", 0) for r in DatasetCatalog.get(name) for a in r["annotations"]) == 4
    return name


def _object_boxes(width=64):
    """The object's XYXY box and its mirror (the training flip)."""
    x, y, w, h = OBJECT
    return [x, y, x + w, y + h], [width - x - w, y, width - x, y + h]


def _masks_of_first_batch(model, loader):
    """The GT boxes and object masks the distiller builds on the first batch of ``loader``."""
    seen = {}
    masks = model.distiller.masks

    def spy(gt_boxes, features):
        seen["boxes"] = [b.cpu() for b in gt_boxes]
        seen["masks"] = masks(gt_boxes, features)
        return seen["masks"]

    model.distiller.masks = spy
    batch = next(iter(loader))
    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert losses["loss_defeat_neck_obj"] > 0
    return seen["boxes"], seen["masks"], [d["image"].shape[-1] for d in batch]


def _assert_crowd_unmarked(boxes, masks, strides, widths):
    plain, mirrored = _object_boxes()
    cx, cy = CROWD[0] + CROWD[2] // 2, CROWD[1] + CROWD[3] // 2
    for i, (b, width) in enumerate(zip(boxes, widths)):
        assert width == 64 and b.tolist() in ([plain], [mirrored])  # the object only: the crowd box dropped
        x = cx if b.tolist() == [plain] else 64 - cx  # the crowd region's centre, mirrored with the image
        ox = (b[0, 0] + b[0, 2]) / 2
        for m, s in zip(masks, strides):
            assert m[i, cy // s, int(x) // s] == 0
        assert sum(float(m[i, 14 // s, int(ox) // s]) for m, s in zip(masks, strides)) == 1  # on one level


def test_crowd_boxes_never_reach_the_distillers_masks_yaml(crowd_dataset, teacher_weights):
    from detectron2.modeling import build_model

    from defeat.engine.trainer import DeFeatTrainer

    cfg = defeat_cfg(teacher_weights, "DATASETS.TRAIN", f"('{crowd_dataset}',)")
    torch.manual_seed(0)
    model = build_model(cfg)
    boxes, masks, widths = _masks_of_first_batch(model, DeFeatTrainer.build_train_loader(cfg))
    _assert_crowd_unmarked(boxes, masks, model.distiller.strides, widths)


def test_crowd_boxes_never_reach_the_distillers_masks_lazyconfig(crowd_dataset, teacher_weights):
    from detectron2.config import instantiate

    cfg = lazy_cfg(
        f"{CONFIGS}/tiny_defeat.py",
        f"model.teacher.weights={teacher_weights}",
        f"dataloader.train.dataset.names={crowd_dataset}",
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    boxes, masks, widths = _masks_of_first_batch(model, instantiate(cfg.dataloader.train))
    _assert_crowd_unmarked(boxes, masks, model.distiller.strides, widths)
