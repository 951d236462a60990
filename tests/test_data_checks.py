"""check_dataset_boxes: boxes outside their image are reported, malformed boxes stop training."""
import logging

import pytest
from detectron2.structures import BoxMode

from defeat.data_checks import check_dataset_boxes

LOGGER = "defeat.data_checks"


def _record(name, boxes, mode=BoxMode.XYXY_ABS, height=50, width=80):
    return {
        "file_name": name, "image_id": name, "height": height, "width": width,
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
        check_dataset_boxes([{"file_name": "nosize.png", "annotations": [
            {"bbox": [5, 5, 1, 1], "bbox_mode": BoxMode.XYXY_ABS}]}], "mixed")


def test_train_net_checks_the_training_sets_before_training(tmp_path, monkeypatch):
    """train_net.main: a malformed training box fails before the trainer (and model) is built."""
    from detectron2.data import DatasetCatalog
    from detectron2.engine import default_argument_parser

    import train_net
    from conftest import CONFIGS

    name = "data_checks_broken_train"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [_record("broken_0007.png", [[30, 10, 20, 40]])])

    def no_trainer(cfg):
        raise AssertionError("the trainer was built before the dataset check")

    monkeypatch.setattr(train_net, "Trainer", no_trainer)
    args = default_argument_parser().parse_args([
        "--config-file", f"{CONFIGS}/tiny_defeat.yaml",
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path),
    ])
    with pytest.raises(ValueError, match=r"data_checks_broken_train(.|\n)*broken_0007.png(.|\n)*x2 < x1"):
        train_net.main(args)
