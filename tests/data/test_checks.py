"""check_dataset_boxes: boxes outside their image are reported, malformed boxes stop training."""

import logging

import pytest
from detectron2.structures import BoxMode

from defeat.data.checks import check_dataset_boxes

LOGGER = "defeat.data.checks"


def _record(name, boxes, mode=BoxMode.XYXY_ABS, height=50, width=80):
    return {
        "file_name": name,
        "image_id": name,
        "height": height,
        "width": width,
        "annotations": [{"bbox": list(b), "bbox_mode": mode, "category_id": 0} for b in boxes],
    }


def test_boxes_inside_pass_silently(caplog):
    dicts = [
        _record("a.png", [[0, 0, 80, 50], [10, 10, 10, 10]]),  # touching the border; zero area
        _record("b.png", [[0, 0, 80, 50]], mode=BoxMode.XYWH_ABS),
        _record("c.png", []),
        {"file_name": "d.png", "height": 50, "width": 80},  # no "annotations" key at all
        _record("e.png", [[0, 0, 80.005, 50]]),  # within the float tolerance
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_dataset_boxes(dicts, "ok_set") == 0
    assert not caplog.records


def test_boxes_outside_warn_with_images_boxes_sizes_and_totals(caplog):
    dicts = [
        _record("left.png", [[-5, 0, 20, 20], [1, 1, 5, 5]]),
        _record("inside.png", [[1, 1, 5, 5]]),
        # XYWH: x + w = 90 > width 80
        _record("wide.png", [[70, 10, 20, 10], [0, 45, 10, 10]], mode=BoxMode.XYWH_ABS),
        _record("far.png", [[200, 200, 300, 300]]),  # entirely outside: Detectron2 would drop it
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_dataset_boxes(dicts, "my_train", max_listed=3) == 4
    (rec,) = caplog.records
    assert rec.levelno == logging.WARNING
    msg = rec.getMessage()
    assert "'my_train'" in msg
    assert "4 box(es) in 3 image(s)" in msg
    assert "left.png: box XYXY [-5, 0, 20, 20] in a 80x50 (WxH) image" in msg
    assert "wide.png: box XYXY [70, 10, 90, 20]" in msg
    assert "wide.png: box XYXY [0, 45, 10, 55]" in msg
    assert "far.png" not in msg  # only max_listed boxes are named; the total counts all
    assert "inside.png" not in msg
    assert "First 3:" in msg


def test_many_offending_images_are_counted_but_listing_is_capped(caplog):
    dicts = [_record(f"{i:04d}.png", [[0, 0, 81, 10]]) for i in range(100)]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_dataset_boxes(dicts, "big") == 100
    msg = caplog.records[0].getMessage()
    assert "100 box(es) in 100 image(s)" in msg
    assert "0004.png" in msg and "0005.png" not in msg  # default: five listed


@pytest.mark.parametrize(
    "box, mode, problem",
    [
        ([30, 10, 20, 40], BoxMode.XYXY_ABS, "x2 < x1"),
        ([10, 40, 20, 30], BoxMode.XYXY_ABS, "y2 < y1"),
        ([10, 10, -3, 5], BoxMode.XYWH_ABS, "x2 < x1"),
        ([10, 10, 5, -1], BoxMode.XYWH_ABS, "y2 < y1"),
        ([10, float("nan"), 20, 30], BoxMode.XYXY_ABS, "non-finite"),
        ([10, 10, float("inf"), 5], BoxMode.XYWH_ABS, "non-finite"),
    ],
)
def test_malformed_box_raises_naming_the_image(box, mode, problem):
    dicts = [_record("good.png", [[1, 1, 5, 5]]), _record("broken_0042.png", [[1, 1, 5, 5], box], mode=mode)]
    with pytest.raises(ValueError) as info:
        check_dataset_boxes(dicts, "my_train")
    msg = str(info.value)
    assert "'my_train'" in msg and "broken_0042.png" in msg and problem in msg
    assert "good.png" not in msg
    assert mode.name in msg


def test_error_names_the_first_bad_image_and_counts_all_and_beats_the_warning(caplog):
    dicts = [
        _record("outside.png", [[-10, 0, 5, 5]]),
        _record("bad1.png", [[5, 5, 1, 1]]),
        _record("bad2.png", [[5, 5, 1, 1], [5, 5, 6, 1]]),
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(ValueError) as info:
        check_dataset_boxes(dicts, "my_train")
    msg = str(info.value)
    assert "bad1.png" in msg and "bad2.png" not in msg and "(3 invalid boxes in all)" in msg
    assert not caplog.records


def test_unchecked_box_modes_and_missing_sizes_are_skipped(caplog):
    dicts = [
        _record("rel.png", [[0.5, 0.5, 2.0, 2.0]], mode=BoxMode.XYXY_REL),
        _record("rot.png", [[10, 10, 500, 4, 30]], mode=BoxMode.XYWHA_ABS),
        {"file_name": "nosize.png", "annotations": [{"bbox": [-5, -5, 900, 900], "bbox_mode": BoxMode.XYXY_ABS}]},
        _record("intmode.png", [[0, 0, 90, 10]], mode=int(BoxMode.XYXY_ABS)),  # serialised as int
    ]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_dataset_boxes(dicts, "mixed") == 1
    assert "intmode.png" in caplog.records[0].getMessage()
    # A malformed box is still an error without height/width.
    with pytest.raises(ValueError, match="nosize.png"):
        check_dataset_boxes(
            [{"file_name": "nosize.png", "annotations": [{"bbox": [5, 5, 1, 1], "bbox_mode": BoxMode.XYXY_ABS}]}],
            "mixed",
        )


def test_train_net_checks_the_training_sets_before_training(tmp_path, monkeypatch):
    """train_net.main: a malformed training box fails before the trainer (and model) is built."""
    from detectron2.data import DatasetCatalog
    from detectron2.engine import default_argument_parser
    from helpers import CONFIGS

    import train_net

    name = "data_checks_broken_train"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [_record("broken_0007.png", [[30, 10, 20, 40]])])

    def no_trainer(cfg):
        raise AssertionError("the trainer was built before the dataset check")

    monkeypatch.setattr(train_net, "Trainer", no_trainer)
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.yaml",
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(tmp_path),
        ]
    )
    with pytest.raises(ValueError, match=r"data_checks_broken_train(.|\n)*broken_0007.png(.|\n)*x2 < x1"):
        train_net.main(args)


# ---- data vs model, images, no boxes (check_training_data) ----


def _coco(tmp_path, **kw):
    """A COCO dataset written as files and named through defeat.data.datasets; returns its name."""
    import uuid

    from coco_files import write_coco

    from defeat.data.datasets import register_coco_dataset

    json_file, images = write_coco(str(tmp_path), **kw)
    name = f"checks_{uuid.uuid4().hex[:8]}"
    register_coco_dataset(name, json_file, images)
    return name


def test_category_count_must_match_the_model(tmp_path):
    from detectron2.data import DatasetCatalog

    from defeat.data.checks import DataCheckError, check_dataset_classes

    name = _coco(tmp_path, num_images=2)  # 2 categories
    DatasetCatalog.get(name)  # loading sets thing_classes
    assert check_dataset_classes(name, 2, "MODEL.ROI_HEADS.NUM_CLASSES") == 2
    for classes in (10, 1):
        with pytest.raises(
            DataCheckError,
            match=rf"{name}' has 2 categories \(square, bar\) but the model has "
            rf"{classes} classes \(MODEL.RETINANET.NUM_CLASSES\); set MODEL.RETINANET.NUM_CLASSES to 2",
        ):
            check_dataset_classes(name, classes, "MODEL.RETINANET.NUM_CLASSES")


def test_model_num_classes_names_the_key(tmp_path):
    from helpers import CONFIGS, make_cfg

    from defeat.data.checks import model_num_classes

    assert model_num_classes(make_cfg(f"{CONFIGS}/tiny_base.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 3)) == (
        3,
        "MODEL.ROI_HEADS.NUM_CLASSES",
    )
    assert model_num_classes(make_cfg(f"{CONFIGS}/tiny_retinanet_defeat.yaml", "MODEL.RETINANET.NUM_CLASSES", 4)) == (
        4,
        "MODEL.RETINANET.NUM_CLASSES",
    )


def test_truncated_missing_and_resized_images_are_named(tmp_path):
    import os

    from detectron2.data import DatasetCatalog

    from defeat.data.checks import DataCheckError, check_dataset_images

    name = _coco(tmp_path, num_images=5)
    dicts = DatasetCatalog.get(name)
    for mode in ("verify", "full"):
        assert check_dataset_images(dicts, name, mode) == 5
    assert check_dataset_images(dicts, name, "none") == 0
    truncated = dicts[1]["file_name"]
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    os.remove(dicts[3]["file_name"])
    for mode in ("verify", "full"):
        with pytest.raises(
            DataCheckError,
            match=rf"{name}': 2 of 5 images cannot be trained on(.|\n)*"
            r"img_001.png: unreadable image(.|\n)*img_003.png: file not found",
        ):
            check_dataset_images(dicts, name, mode)
    resized = [dict(dicts[0], height=48)]
    with pytest.raises(DataCheckError, match=r"img_000.png: image is 64x64 \(WxH\) but the annotations say 64x48"):
        check_dataset_images(resized, name)


def test_truncated_jpeg_is_caught_without_decoding(tmp_path):
    import cv2
    import numpy as np

    from defeat.data.checks import DataCheckError, check_dataset_images

    path = str(tmp_path / "a.jpg")
    cv2.imwrite(path, (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    record = {"file_name": path, "height": 64, "width": 64}
    assert check_dataset_images([record], "jpg") == 1
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-200])
    with pytest.raises(DataCheckError, match=r"a.jpg: truncated JPEG"):
        check_dataset_images([record], "jpg", "verify")
    with pytest.raises(DataCheckError, match=r"a.jpg: unreadable image: OSError: image file is truncated"):
        check_dataset_images([record], "jpg", "full")


def test_all_zero_area_or_no_boxes_say_so_with_counts(tmp_path, caplog):
    from defeat.data.checks import DataCheckError, check_dataset_has_boxes

    zero = [_record("z.png", [[10, 10, 10, 30], [5, 5, 20, 5]]), _record("w.png", [[0, 0, 0, 0]])]
    with pytest.raises(
        DataCheckError,
        match=r"'zeros' has no box to train on: 3 of its 3 boxes have zero width or "
        r"height and 0 are crowd boxes \(2 images\)",
    ):
        check_dataset_has_boxes(zero, "zeros")
    with pytest.raises(DataCheckError, match=r"'empty' has no boxes at all \(2 images, 0 annotations\)"):
        check_dataset_has_boxes([_record("a.png", []), {"file_name": "b.png"}], "empty")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert check_dataset_has_boxes(zero + [_record("ok.png", [[1, 1, 9, 9]])], "some") == (1, 3)
    assert "3 of its 4 boxes have zero width or height" in caplog.records[0].getMessage()


def _train_args(tmp_path, name, *opts):
    from helpers import CONFIGS

    import train_net

    return train_net.parse_args(
        [
            "--config-file",
            f"{CONFIGS}/tiny_base.yaml",
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            *[str(o) for o in opts],
        ]
    )


def test_train_net_refuses_wrong_classes_and_bad_images_before_the_trainer(tmp_path, monkeypatch):
    import train_net
    from defeat.data.checks import DataCheckError

    def no_trainer(cfg):
        raise AssertionError("the trainer was built before the data check")

    monkeypatch.setattr(train_net, "Trainer", no_trainer)
    name = _coco(tmp_path / "a", num_images=2)
    with pytest.raises(
        DataCheckError, match=r"has 2 categories(.|\n)*model has 10 classes \(MODEL.ROI_HEADS.NUM_CLASSES\)"
    ):
        train_net.main(_train_args(tmp_path, name))
    name = _coco(tmp_path / "b", num_images=2, boxes=lambda i: [(5, 5, 0, 10, 0)])
    with pytest.raises(DataCheckError, match=r"no box to train on: 2 of its 2 boxes"):
        train_net.main(_train_args(tmp_path, name, "MODEL.ROI_HEADS.NUM_CLASSES", 2))
    name = _coco(tmp_path / "c", num_images=2)
    with open(tmp_path / "c" / "images" / "img_001.png", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataCheckError, match=r"img_001.png: unreadable image"):
        train_net.main(_train_args(tmp_path, name, "MODEL.ROI_HEADS.NUM_CLASSES", 2))


def test_train_net_loads_the_training_json_once(tmp_path, monkeypatch):
    """The dicts that were checked are the ones the train loader gets: one load of the json."""
    from detectron2.data import DatasetCatalog

    import train_net

    name = _coco(tmp_path, num_images=4)
    loader = DatasetCatalog[name]
    calls = []
    DatasetCatalog[name] = lambda: calls.append(1) or loader()
    built = {}

    class Probe(train_net.Trainer):
        def __init__(self, cfg):
            super().__init__(cfg)
            built["loader"] = self.data_loader

    monkeypatch.setattr(train_net, "Trainer", Probe)
    monkeypatch.setattr(Probe, "train", lambda self: None)
    train_net.main(_train_args(tmp_path, name, "MODEL.ROI_HEADS.NUM_CLASSES", 2))
    assert calls == [1] and built["loader"] is not None
    DatasetCatalog.get(name)
    assert calls == [1, 1]  # the catalog entry is restored afterwards
