"""Hostile inputs to the tools and benchmarks: arguments out of range, repeated or malformed,
outputs that would replace inputs or earlier files, and figures that would show what is not so.
Each is fed to the tool and the one-line error (or the handling) is seen."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from coco_files import load_benchmark, load_tool, tiny_student_files, usage_error_line, write_coco
from helpers import CONFIGS

from defeat.engine.metrics_file import last_run, measured_box_ap, recorded_box_ap, split_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench(name):
    return load_benchmark(name)


def _usage_error(capsys, call):
    return usage_error_line(capsys, call)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return tiny_student_files(tmp_path_factory.mktemp("hostile_student"))


def _predict(weights, images, out, *extra):
    argv = ["--config-file", f"{CONFIGS}/tiny_base.yaml", "--weights", weights, "--input", images]
    return load_tool("predict").main(
        [str(a) for a in [*argv, "--output", out, *extra, "MODEL.ROI_HEADS.NUM_CLASSES", 2]]
    )


# ---- predict.py ----


@pytest.mark.parametrize("value", ["1.5", "-0.1", "high"])
def test_predict_score_threshold_out_of_range(student, tmp_path, capsys, value):
    weights, _, images = student
    msg = _usage_error(capsys, lambda: _predict(weights, images, tmp_path / "o", "--score-threshold", value))
    assert "--score-threshold" in msg


def test_predict_two_images_that_would_share_one_drawing_are_refused(student, tmp_path):
    weights, _, images = student
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(os.path.join(images, "img_000.png"), folder / "a.png")
    cv2.imwrite(str(folder / "a.jpg"), cv2.imread(os.path.join(images, "img_001.png")))
    with pytest.raises(SystemExit, match=r"a.jpg' and .*a.png' would both be written to .*a.png"):
        _predict(weights, folder, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_predict_into_the_datasets_image_folder_is_refused(student, tmp_path):
    """The case that overwrote training images: --input elsewhere, --output the dataset's images."""
    weights, json_file, images = student
    other = tmp_path / "photos"
    other.mkdir()
    shutil.copy(os.path.join(images, "img_000.png"), other / "img_000.png")
    before = open(os.path.join(images, "img_000.png"), "rb").read()
    with pytest.raises(SystemExit, match=r"--output .* is the image folder of dataset 'hostile_pred'"):
        _predict(weights, other, images, "--dataset", f"hostile_pred={json_file}:{images}")
    assert open(os.path.join(images, "img_000.png"), "rb").read() == before


def test_predict_into_a_folder_inside_the_input_is_refused(student, tmp_path):
    weights, _, images = student
    with pytest.raises(SystemExit, match=r"lies inside the input folder"):
        _predict(weights, images, os.path.join(images, "pred"))


def test_predict_keeps_earlier_predictions_unless_overwrite(student, tmp_path):
    weights, _, images = student
    _predict(weights, images, tmp_path / "o")
    first = (tmp_path / "o" / "predictions.json").read_text()
    with pytest.raises(SystemExit, match=r"already exists; pass --overwrite"):
        _predict(weights, images, tmp_path / "o", "--score-threshold", 0.0)
    assert (tmp_path / "o" / "predictions.json").read_text() == first
    _predict(weights, images, tmp_path / "o", "--score-threshold", 0.0, "--overwrite")
    assert len(json.loads((tmp_path / "o" / "predictions.json").read_text())) > len(json.loads(first))


# ---- export, figures ----


def test_export_refuses_to_replace_a_file(tmp_path, capsys, teacher_weights):
    tool = load_tool("export_student")
    target = tmp_path / "student.pth"
    target.write_bytes(b"mine")
    msg = _usage_error(capsys, lambda: tool.main([teacher_weights, str(target)]))
    assert "already exists; pass --overwrite" in msg and target.read_bytes() == b"mine"


def test_plot_losses_plots_the_last_of_two_merged_runs(tmp_path, caplog):
    rows = [{"iteration": i, "total_loss": 5.0 - i / 10, "loss_cls": 1.0} for i in (19, 39, 59)]
    rows += [{"iteration": 59, "bbox/AP": 10.0}]
    rows += [{"iteration": i, "total_loss": 2.0, "loss_cls": 0.5} for i in (19, 39)]
    metrics = tmp_path / "metrics.json"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = split_runs(rows)
    assert [len(r) for r in runs] == [4, 2] and last_run(rows) == rows[4:]
    with caplog.at_level("WARNING"):
        out = load_tool("plot_losses").main([str(metrics), "--output", str(tmp_path / "l.png")])
    assert "holds 2 runs" in caplog.text and "plotting the last one (2 rows)" in caplog.text and os.path.isfile(out)


def test_a_resumed_run_stays_one_run():
    rows = [{"iteration": i, "loss": 1.0} for i in (19, 39, 59)] + [{"iteration": i, "loss": 0.9} for i in (49, 59, 79)]
    assert len(split_runs(rows)) == 1


def test_plot_losses_keeps_an_existing_figure_unless_overwrite(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"iteration": 1, "total_loss": 1.0}) + "\n")
    (tmp_path / "l.png").write_bytes(b"mine")
    tool = load_tool("plot_losses")
    assert "already exists" in _usage_error(
        capsys, lambda: tool.main([str(metrics), "--output", str(tmp_path / "l.png")])
    )
    assert (tmp_path / "l.png").read_bytes() == b"mine"


def test_inspect_output_of_an_unknown_type_is_refused(tmp_path, capsys):
    json_file, images = write_coco(str(tmp_path / "d"), num_images=1)
    tool = load_tool("inspect_dataset")
    argv = ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", f"hostile_insp={json_file}:{images}"]
    msg = _usage_error(capsys, lambda: tool.main(argv + ["--output", str(tmp_path / "report.txt")]))
    assert "the file type must be one of png" in msg


def test_inspect_refuses_a_json_with_duplicate_image_ids(tmp_path):
    json_file, images = write_coco(str(tmp_path / "d"), num_images=2)
    data = json.load(open(json_file))
    data["images"][1]["id"] = 1
    json.dump(data, open(json_file, "w"))
    with pytest.raises(SystemExit, match=r"inspect_dataset.py: error: .*image id 1 is used by"):
        load_tool("inspect_dataset").main(
            ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", f"hostile_dup={json_file}:{images}"]
        )


def test_visualize_masks_into_the_datasets_image_folder_is_refused(tmp_path):
    json_file, images = write_coco(str(tmp_path / "d"), num_images=1)
    with pytest.raises(SystemExit, match=r"is the image folder of dataset 'hostile_vis'"):
        load_tool("visualize_masks").main(
            ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", f"hostile_vis={json_file}:{images}"]
            + ["--output", images]
        )


# ---- the teacher's AP: only of those weights ----


def test_teacher_ap_of_another_checkpoint_in_the_folder_is_not_shown(tmp_path):
    """metrics.json's evaluation at iteration 99 belongs to model_final (iteration 99), not to an
    earlier model_0000049.pth in the same folder."""
    rows = [{"iteration": 49, "total_loss": 1.0}, {"iteration": 99, "bbox/AP": 40.0}]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.save({"model": {}, "iteration": 49}, tmp_path / "model_0000049.pth")
    torch.save({"model": {}, "iteration": 99}, tmp_path / "model_final.pth")
    assert measured_box_ap(str(tmp_path / "model_0000049.pth")) is None
    assert measured_box_ap(str(tmp_path / "model_final.pth")) == 40.0
    assert recorded_box_ap(str(tmp_path / "model_final.pth"), 97) is None  # 98: the final evaluation after it


def test_teacher_log_gives_no_ap_for_a_checkpoint_it_was_not_measured_on(tmp_path, teacher_weights):
    from defeat.engine.metrics_file import teacher_ap_line

    state = torch.load(teacher_weights, weights_only=False)
    state["iteration"] = 10
    torch.save(state, tmp_path / "model_0000010.pth")
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 99, "bbox/AP": 55.0}) + "\n")
    line = teacher_ap_line(str(tmp_path / "model_0000010.pth"))
    assert "55.00" not in line and "its AP is unknown here" in line


# ---- benchmarks: arguments ----


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--jobs", "0"], "--jobs: must be at least 1, got 0"),
        (["--iters", "0"], "--iters: must be at least 1, got 0"),
        (["--seeds", "0", "0"], "--seeds lists 0 more than once"),
        (["--variants", "baseline", "neck", "neck"], "--variants lists 'neck' more than once"),
        (
            ["--define", "x:MODEL.DEFEAT.NECK.BG_WEIGHT=2"],
            "--define 'x:MODEL.DEFEAT.NECK.BG_WEIGHT=2' is not NAME:BASE",
        ),
        (["--define", "x:nope:A=1"], "base variant 'nope' is not one of"),
        (["--define", "neck:neck:A=1"], "variant 'neck' exists already"),
        (["--define", "x:neck:A"], "'A' is not KEY=VALUE"),
        (["--define", "x:neck:A=(1,2"], "unbalanced brackets"),
        (["--variants", "zz"], "unknown variants ['zz']"),
    ],
)
def test_accuracy_arguments_are_checked(capsys, argv, message):
    acc = _bench("accuracy")
    assert message in _usage_error(capsys, lambda: acc.parse_args(argv))


def test_accuracy_define_expresses_tuple_settings():
    acc = _bench("accuracy")
    name, base, extra = acc.parse_define(
        "p23:neck:MODEL.DEFEAT.NECK.IN_FEATURES=('p2','p3'),MODEL.DEFEAT.NECK.BG_WEIGHT=8.0", acc.VARIANTS
    )
    assert (name, base) == ("p23", "neck")
    assert extra == ["MODEL.DEFEAT.NECK.IN_FEATURES", "('p2','p3')", "MODEL.DEFEAT.NECK.BG_WEIGHT", "8.0"]
    from helpers import defeat_cfg

    cfg = defeat_cfg("unused.pth", *extra)  # the values apply as the config's own types
    assert list(cfg.MODEL.DEFEAT.NECK.IN_FEATURES) == ["p2", "p3"] and cfg.MODEL.DEFEAT.NECK.BG_WEIGHT == 8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps: must be at least 1, got 0"),
        (["--warmup", "-1"], "--warmup: must be at least 0"),
        (["--boxes", "0"], "--boxes: must be at least 1"),
        (["--threads", "0"], "--threads: must be at least 1"),
        (["--boxes", "10", "10"], "--boxes lists 10 more than once"),
        (["--json", "out.txt"], "must be a file path ending in .json"),
        (["--amp", "--precisions", "fp32", "bf16"], "--amp and --precisions both choose the precision"),
    ],
)
def test_step_time_arguments_are_checked(capsys, argv, message, tmp_path):
    st = _bench("step_time")
    if "--json" not in argv:
        argv = argv + ["--json", str(tmp_path / "s.json")]
    assert message in _usage_error(capsys, lambda: st.main(argv))


def test_step_time_keeps_an_existing_result_unless_overwrite(capsys, tmp_path):
    (tmp_path / "s.json").write_text("{}")
    msg = _usage_error(capsys, lambda: _bench("step_time").main(["--json", str(tmp_path / "s.json")]))
    assert "already exists; pass --overwrite" in msg and (tmp_path / "s.json").read_text() == "{}"


def test_visualize_masks_two_images_to_one_figure_are_refused(tmp_path):
    from detectron2.data import DatasetCatalog

    records = []
    for i, name in enumerate(("a.png", "a.jpg")):
        cv2.imwrite(str(tmp_path / name), np.full((64, 64, 3), 90, dtype=np.uint8))
        records.append({"file_name": str(tmp_path / name), "height": 64, "width": 64, "image_id": i, "annotations": []})
    if "hostile_vis_pair" not in DatasetCatalog.list():
        DatasetCatalog.register("hostile_vis_pair", lambda: [dict(r) for r in records])
    with pytest.raises(SystemExit, match=r"a.png' and .*a.jpg' would both be written to .*a_masks.png"):
        load_tool("visualize_masks").main(
            ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "hostile_vis_pair", "--num-images", "2"]
            + ["--output", str(tmp_path / "vis")]
        )


def _duplicate_ids_dataset(tmp_path):
    json_file, images = write_coco(str(tmp_path / "dup"), num_images=2)
    data = json.load(open(json_file))
    data["images"][1]["id"] = data["images"][0]["id"]
    json.dump(data, open(json_file, "w"))
    return json_file, images


def test_visualize_masks_checks_the_json_first(tmp_path, capsys):
    json_file, images = _duplicate_ids_dataset(tmp_path)
    argv = ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", f"hostile_vdup={json_file}:{images}"]
    msg = _usage_error(capsys, lambda: load_tool("visualize_masks").main(argv + ["--output", str(tmp_path / "v")]))
    assert "image id 1 is used by 'img_000.png' and 'img_001.png'" in msg


def test_predict_checks_the_datasets_json_first(student, tmp_path):
    weights, _, images = student
    json_file, dup_images = _duplicate_ids_dataset(tmp_path)
    with pytest.raises(SystemExit, match=r"predict.py: error: --dataset: .*image id 1 is used by"):
        _predict(weights, images, tmp_path / "o", "--dataset", f"hostile_pdup={json_file}:{dup_images}")
