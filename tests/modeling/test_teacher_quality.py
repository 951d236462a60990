"""The teacher's quality in plain sight: its recorded AP, and AP read from an --eval-only run."""

import json
import logging

import pytest
import torch
from helpers import CONFIGS

from defeat import build_teacher
from defeat.demo.experiments import METRICS, read_eval_output
from defeat.engine.metrics_file import measured_box_ap, recorded_box_ap
from defeat.modeling.meta_arch.common import TeacherMixin


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


def test_teacher_log_names_config_and_weights_and_the_engine_logs_its_ap(
    tmp_path, teacher_weights, caplog, monkeypatch
):
    from defeat.engine.metrics_file import teacher_ap_line
    from defeat.engine.start import log_teacher_quality

    weights = tmp_path / "model_final.pth"
    state = torch.load(teacher_weights, weights_only=False)
    state["iteration"] = 7  # the AP counts only when measured at the checkpoint's iteration
    torch.save(state, weights)
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 7, "bbox/AP": 42.25}) + "\n")
    config = f"{CONFIGS}/tiny_teacher.yaml"
    with caplog.at_level(logging.INFO, logger="defeat.modeling.teacher"):
        teacher = build_teacher(config, str(weights), "cpu")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("DeFeat teacher:"))
    assert config in line and str(weights) in line and "AP" not in line  # the model does not look it up
    assert "box AP 42.25" in teacher_ap_line(str(weights))

    class Student(TeacherMixin, torch.nn.Module):
        pass

    student = Student()
    object.__setattr__(student, "teacher", teacher)
    assert teacher.teacher_iteration == 7  # read once, when the teacher was loaded
    import defeat.checkpoint

    def reread(path):
        raise AssertionError(f"{path} loaded a second time")

    # engine.metrics_file imports it on use (it stays light for the commands' start)
    monkeypatch.setattr(defeat.checkpoint, "checkpoint_iteration", reread)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="defeat.engine.start"):
        log_teacher_quality(student)
    assert "box AP 42.25" in caplog.text and str(weights) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="defeat.engine.start"):
        log_teacher_quality(teacher)  # a model without a teacher: nothing
    assert caplog.text == ""

    monkeypatch.undo()  # a caller without the loaded teacher reads the iteration from the file
    (tmp_path / "metrics.json").unlink()
    assert "its AP is unknown here" in teacher_ap_line(str(weights))


def test_teacher_ap_of_a_run_that_evaluated_after_its_last_step(tmp_path):
    """Detectron2 saves model_final at MAX_ITER - 1 and evaluates it after training at MAX_ITER:
    that evaluation is the checkpoint's; one at N + 1 followed by more training is not."""
    torch.save({"model": {}, "iteration": 99}, tmp_path / "model_final.pth")
    rows = [
        {"iteration": 79, "total_loss": 1.0},
        {"iteration": 99, "total_loss": 0.9},
        {"iteration": 100, "bbox/AP": 33.5},
    ]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert measured_box_ap(str(tmp_path / "model_final.pth")) == 33.5
    torch.save({"model": {}, "iteration": 49}, tmp_path / "model_0000049.pth")
    rows = [
        {"iteration": 49, "total_loss": 1.0},
        {"iteration": 50, "bbox/AP": 20.0},
        {"iteration": 99, "total_loss": 0.5},
    ]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert measured_box_ap(str(tmp_path / "model_0000049.pth")) is None  # training went on after it


def test_a_teacher_with_no_detections_is_named_as_such(tmp_path):
    from defeat.engine.metrics_file import teacher_ap_line

    torch.save({"model": {}, "iteration": 9}, tmp_path / "model_final.pth")
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 10, "bbox/AP": float("nan")}) + "\n")
    line = teacher_ap_line(str(tmp_path / "model_final.pth"))
    assert "found no detections (AP nan)" in line and "box AP nan" not in line
