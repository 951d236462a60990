"""The teacher's quality in plain sight: its recorded AP, and AP read from an --eval-only run."""

import json
import logging

import pytest
import torch
from conftest import CONFIGS

from defeat import build_teacher
from defeat.demo.experiments import METRICS, read_eval_output
from defeat.modeling.teacher import recorded_box_ap


def _eval_lines(task_rows):
    """Lines as Detectron2's print_csv_format logs them, one task after the other."""
    lines = ["[12/01 10:00:00 d2.evaluation.testing]: some other line\n"]
    for task, names, values in task_rows:
        lines += [
            f"[12/01 10:00:00 d2.evaluation.testing]: copypaste: Task: {task}\n",
            f"[12/01 10:00:00 d2.evaluation.testing]: copypaste: {','.join(names)}\n",
            f"[12/01 10:00:00 d2.evaluation.testing]: copypaste: {','.join(f'{v:.4f}' for v in values)}\n",
        ]
    return lines


def test_read_eval_output_takes_the_bbox_task():
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    lines = _eval_lines([("segm", names, [1, 2, 3, 4, 5, 6]), ("bbox", names, [10.5, 20, 30, 40, 50, 60.25])])
    assert read_eval_output(lines) == dict(zip(METRICS, [10.5, 20.0, 30.0, 40.0, 50.0, 60.25]))
    # the metric names decide the mapping, not their order
    shuffled = _eval_lines([("bbox", names[::-1], [60.25, 50, 40, 30, 20, 10.5])])
    assert read_eval_output(shuffled)["AP"] == 10.5


def test_read_eval_output_without_bbox_metrics_is_an_error():
    with pytest.raises(RuntimeError, match="no bbox metrics"):
        read_eval_output(_eval_lines([("segm", ["AP"], [1.0])]))


def test_recorded_box_ap_is_the_last_bbox_row(tmp_path):
    weights = tmp_path / "model_final.pth"
    rows = [{"iteration": 9, "total_loss": 1.0}, {"bbox/AP": 12.5, "iteration": 10}, {"iteration": 11}]
    rows += [{"bbox/AP": 31.25, "iteration": 20}, {"data_time": 0.1}]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    assert recorded_box_ap(str(weights)) == 31.25


def test_recorded_box_ap_unknown(tmp_path):
    assert recorded_box_ap(str(tmp_path / "model_final.pth")) is None  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 1, "total_loss": 2.0}) + "\n")
    assert recorded_box_ap(str(tmp_path / "model_final.pth")) is None  # no evaluation in it
    assert recorded_box_ap("detectron2://COCO-Detection/x/model_final.pkl") is None


def test_teacher_log_names_config_weights_and_ap(tmp_path, teacher_weights, caplog):
    weights = tmp_path / "model_final.pth"
    state = torch.load(teacher_weights, weights_only=False)
    state["iteration"] = 7  # the AP counts only when measured at the checkpoint's iteration
    torch.save(state, weights)
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 7, "bbox/AP": 42.25}) + "\n")
    config = f"{CONFIGS}/tiny_teacher.yaml"
    with caplog.at_level(logging.INFO, logger="defeat.modeling.teacher"):
        build_teacher(config, str(weights), "cpu")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("DeFeat teacher:"))
    assert config in line and str(weights) in line and "box AP 42.25" in line

    caplog.clear()
    (tmp_path / "metrics.json").unlink()
    with caplog.at_level(logging.INFO, logger="defeat.modeling.teacher"):
        build_teacher(config, str(weights), "cpu")
    assert any("its AP is unknown here" in r.getMessage() for r in caplog.records)
