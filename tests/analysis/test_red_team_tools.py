"""Red team: hostile inputs of careless or confused users to the tools (``tools/*.py``),
``python -m defeat run``, ``python -m defeat demo`` and the benchmarks' arguments, each fed here
and its outcome seen (the training scripts, configs, datasets and the Python API:
``tests/engine/test_red_team.py``, whose docstring defines the outcomes).

| # | entry point | hostile input | before | fix |
|---|---|---|---|---|
| 1 | predict.py | ``--output ''`` | silently wrong (drawings into the current folder) | 876ffa1 |
| 2 | export_student.py | output ``''`` | unclear ("'' is a folder") | 876ffa1 |
| 3 | trace_student.py | ``--output ''`` | unclear (same) | 876ffa1 |
| 4 | predict.py | ``--input`` holding a folder ``b.png`` | unclear ("file not found") | ab06146 |
| 5 | predict.py | ``--input`` holding a link to nothing | unclear ("file not found") | ab06146 |
| 6 | predict.py | ``--weights`` a folder | unclear ("weights not found") | 44bb041 |
| 7 | predict.py | ``--weights`` a pickle of a list | crash (AttributeError) | 44bb041 |
| 8 | predict.py | ``--dataset`` a name nobody registered | crash (KeyError) | ab06146 |
| 9 | inspect_dataset.py | the same | crash (KeyError) | ab06146 |
| 10 | trace_student.py | ``--image`` a folder | unclear ("not found") | b17e2af |
| 11 | export_student.py | the checkpoint a folder | unclear ("not found") | b17e2af |
| 12 | plot_losses.py | the metrics file a folder | unclear ("not found") | b17e2af |
| 13 | export_student.py | a pickle of a list | clear | |
| 14 | plot_losses.py | an empty metrics.json | clear | |
| 15 | plot_losses.py | rows with NaN and Infinity | handled (plotted) | |
| 16 | visualize_masks.py | ``--num-images 1000000`` | handled (every image) | |
| 17 | summarize_runs.py | a weights file as ``--teacher`` | clear | |
| 18 | predict.py | ``--score-threshold nan`` | clear | |
| 19 | trace_student.py | ``--atol nan`` | clear | |
| 20 | defeat run | ``--score-threshold 1.5`` | silently wrong (fails after training) | 9b0c9a8 |
| 21 | defeat run | ``--scale-base inf`` | unclear (refused after the teacher trained) | 9b0c9a8 |
| 22 | defeat run | override ``OUTPUT_DIR`` | unclear (three runs, one folder) | 9b0c9a8 |
| 23 | defeat run | override ``MODEL.ROI_HEADS.NUM_CLASSES 5`` | unclear (refused by a run) | 9b0c9a8 |
| 24 | defeat run | override ``DATASETS.TRAIN`` | silently wrong (trains on another set) | 9b0c9a8 |
| 25 | defeat run | ``--teacher-weights`` a folder | unclear ("not found") | 9b0c9a8 |
| 26 | defeat run | a DeFeat config as ``--teacher-config`` | unclear (about classes) | 9b0c9a8 |
| 27 | defeat demo | ``--teacher-iters 0`` | silently wrong (ignored) | 9b0c9a8 |
| 28 | defeat demo | ``--student-iters -5`` | crash (in the runs) | 9b0c9a8 |
| 29 | defeat demo | ``--output`` a file | unclear (a run names OUTPUT_DIR) | 9b0c9a8 |
| 30 | accuracy.py | ``--tag /../../elsewhere`` | silently wrong (runs outside --output) | 9b0c9a8 |
| 31 | accuracy.py | ``--opts OUTPUT_DIR /tmp/all`` | unclear (runs collide) | 9b0c9a8 |
| 32 | accuracy.py | ``--opts SEED 5`` | silently wrong (ignored) | 9b0c9a8 |
| 33 | accuracy.py | ``--opts`` of an odd count | unclear (each run fails) | 9b0c9a8 |
| 34 | accuracy.py | ``--teacher-weights`` a folder | silently wrong (a teacher trained into its parent) | 9b0c9a8 |
| 35 | step_time.py | ``--device gpu`` | crash | 9b0c9a8 |
| 36 | step_time.py | ``--device cuda`` without CUDA | crash | 9b0c9a8 |
| 37 | step_time.py | ``--teacher-weights`` missing | clear | |

Before: 7 silently wrong, 6 crash, 16 unclear, 6 clear, 2 handled (37). After: 35 clear, 2 handled.
"""

import os
import pickle
import shutil

import pytest
import torch
from coco_files import load_benchmark, load_tool, usage_error_line, write_coco
from helpers import CONFIGS, save_random_weights

from defeat.errors import DeFeatError


def _bench(name):
    return load_benchmark(name)


def _usage(capsys, call):
    """The one-line argparse-style error (exit status 2) of ``call()``."""
    return usage_error_line(capsys, call)


def _exit(call):
    """The message of the ``SystemExit`` that ``call()`` ends with (a tool's one-line error)."""
    with pytest.raises(SystemExit) as e:
        call()
    assert isinstance(e.value.code, str), e.value.code
    return e.value.code


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A 2-class tiny student's random weights and config, and a 2-image COCO dataset of files."""
    folder = tmp_path_factory.mktemp("rt_student")
    config = folder / "student.yaml"
    config.write_text(f'_BASE_: "{CONFIGS}/tiny_base.yaml"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 2\n')
    weights = save_random_weights(str(config), str(folder), "student")
    json_file, images = write_coco(str(folder / "data"), num_images=2)
    return str(config), weights, json_file, images


def _predict(student, *argv):
    config, weights, _, images = student
    args = ["--config-file", config, "--weights", weights, "--input", images, *argv]
    return load_tool("predict").main([str(a) for a in args])


def _junk_pickle(path):
    with open(path, "wb") as f:
        pickle.dump([1, 2, 3], f)
    return str(path)


# ---- outputs given empty: the current folder is not a default ----


def test_predict_with_an_empty_output_writes_nothing_into_the_current_folder(student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _exit(lambda: _predict(student, "--output", ""))
    assert "predict.py: error: --output is empty; give the folder to write" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tool", ["export_student", "trace_student"])
def test_export_and_trace_with_an_empty_output_say_so(student, tmp_path, monkeypatch, capsys, tool):
    _, weights, _, _ = student
    monkeypatch.chdir(tmp_path)
    if tool == "export_student":
        argv = [weights, ""]
    else:
        argv = ["--config-file", student[0], "--weights", weights, "--output", ""]
    message = _usage(capsys, lambda: load_tool(tool).main(argv))
    assert "is empty; give the file to write" in message and "is a folder" not in message


# ---- inputs of the wrong kind ----


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_predict_input_holding_a_folder_or_a_broken_link_names_it(student, tmp_path, kind):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(os.path.join(student[3], "img_000.png"), folder / "a.png")
    if kind == "folder":
        (folder / "b.png").mkdir()
        said = "b.png (a folder, not an image file)"
    else:
        (folder / "b.png").symlink_to(tmp_path / "card" / "b.png")
        said = f"b.png (a link to '{tmp_path / 'card' / 'b.png'}', which does not exist)"
    config, weights, _, _ = student
    message = _exit(
        lambda: load_tool("predict").main(
            ["--config-file", config, "--weights", weights, "--input", str(folder), "--output", str(tmp_path / "o")]
        )
    )
    assert "--input: 1 of 2 images cannot be read" in message and said in message
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["folder", "pickle"])
def test_predict_weights_that_are_a_folder_or_a_pickle_of_another_kind(student, tmp_path, kind):
    weights = str(tmp_path) if kind == "folder" else _junk_pickle(tmp_path / "list.pkl")
    config, _, _, images = student
    argv = ["--config-file", config, "--weights", weights, "--input", images, "--output", str(tmp_path / "o")]
    message = _exit(lambda: load_tool("predict").main(argv))
    if kind == "folder":
        assert f"--weights: '{tmp_path}' is a folder; give the checkpoint file in it" in message
    else:
        assert "--weights: cannot read weights" in message and "list.pkl is not a checkpoint" in message


def test_predict_and_inspect_with_a_dataset_name_nobody_registered(student, tmp_path):
    message = _exit(lambda: _predict(student, "--output", tmp_path / "o", "--dataset", "my_vall"))
    assert "--dataset: dataset 'my_vall' is not registered" in message and "my_vall=ANNOTATIONS.json" in message
    with pytest.raises(DeFeatError, match=r"dataset 'my_vall' is not registered"):
        load_tool("inspect_dataset").main(["--config-file", student[0], "--dataset", "my_vall"])


@pytest.mark.parametrize(
    "tool, argv, message",
    [
        ("trace_student", ["--config-file", "C", "--output", "O.ts", "--image", "D"], "--image 'D' is a folder"),
        ("export_student", ["D", "O.pth"], "checkpoint 'D' is a folder; give the file in it"),
        ("plot_losses", ["D", "--output", "O.png"], "metrics file 'D' is a folder; give the file in it"),
    ],
)
def test_a_folder_given_as_an_input_file_is_named_a_folder(student, tmp_path, capsys, tool, argv, message):
    subs = {"C": student[0], "D": str(tmp_path), "O.ts": str(tmp_path / "o.ts"), "O.pth": str(tmp_path / "o.pth")}
    subs["O.png"] = str(tmp_path / "o.png")
    argv = [subs.get(a, a) for a in argv]
    line = _usage(capsys, lambda: load_tool(tool).main(argv))
    assert message.replace("'D'", repr(str(tmp_path))) in line


def test_export_of_a_pickle_that_is_no_checkpoint_names_the_file(tmp_path):
    junk = _junk_pickle(tmp_path / "list.pkl")
    message = _exit(lambda: load_tool("export_student").main([junk, str(tmp_path / "s.pth")]))
    assert f"cannot read '{junk}' as a PyTorch checkpoint" in message and not (tmp_path / "s.pth").exists()


def test_plot_losses_of_an_empty_metrics_file_and_of_one_with_nan_rows(tmp_path):
    empty = tmp_path / "metrics.json"
    empty.write_text("")
    message = _exit(lambda: load_tool("plot_losses").main([str(empty), "--output", str(tmp_path / "a.png")]))
    assert "no training rows with losses in these metrics" in message
    rows = [
        '{"iteration": 0, "total_loss": NaN, "loss_cls": Infinity}',
        '{"iteration": 1, "total_loss": 1.0, "loss_cls": 0.5}',
    ]
    empty.write_text("\n".join(rows) + "\n")  # a run whose first losses were not finite: json.dumps writes NaN
    out = load_tool("plot_losses").main([str(empty), "--output", str(tmp_path / "b.png")])
    assert os.path.getsize(out) > 0


def test_visualize_more_images_than_the_dataset_has_draws_them_all(student, tmp_path):
    _, _, json_file, images = student
    written = load_tool("visualize_masks").main(
        ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", f"rt_vis={json_file}:{images}"]
        + ["--num-images", "1000000", "--output", str(tmp_path / "v")]
    )
    assert sorted(os.path.basename(p) for p in written) == ["img_000_masks.png", "img_001_masks.png"]


def test_summarize_with_a_file_for_a_run_folder(student, tmp_path):
    weights = student[1]
    message = _exit(
        lambda: load_tool("summarize_runs").main(
            ["--teacher", weights, "--alone", weights, "--defeat", weights, "--output", str(tmp_path / "s")]
        )
    )
    assert f"--teacher '{weights}': no such folder; give the OUTPUT_DIR of the teacher's run" in message


def test_nan_thresholds_are_refused(student, tmp_path, capsys):
    line = _usage(capsys, lambda: _predict(student, "--output", tmp_path / "o", "--score-threshold", "nan"))
    assert "--score-threshold: must be a score between 0 and 1, got nan" in line
    argv = ["--config-file", student[0], "--weights", student[1], "--output", str(tmp_path / "t.ts"), "--atol", "nan"]
    assert "--atol: must be between 0 and 1, got nan" in _usage(capsys, lambda: load_tool("trace_student").main(argv))


# ---- python -m defeat run: refused before anything is written, not at its end ----


def _run_plan(tmp_path, *argv):
    from defeat.demo import pipeline

    train, val = (write_coco(str(tmp_path / n), num_images=2) for n in ("t", "v"))
    names = [f"rt_run_{os.path.basename(str(tmp_path))}_{n}" for n in ("t", "v")]
    args = pipeline.parse_args(
        ["--train", f"{names[0]}={train[0]}:{train[1]}", "--val", f"{names[1]}={val[0]}:{val[1]}"]
        + ["--output", str(tmp_path / "report"), *map(str, argv)]
    )
    return pipeline.check_inputs(args)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--score-threshold", "1.5"], "--score-threshold must be a score between 0 and 1, got 1.5"),
        (["--scale-base", "inf"], "--scale-base must be a positive number (pixels), got inf"),
        (["OUTPUT_DIR", "/tmp/x"], "the override OUTPUT_DIR is set by the command for each run"),
        (["MODEL.ROI_HEADS.NUM_CLASSES", "5"], "NUM_CLASSES is set by the command for each run: it is the number"),
        (["DATASETS.TRAIN", "('coco_2017_train',)"], "DATASETS.TRAIN is set by the command for each run: give the"),
        (["--teacher-weights", "DIR", "--teacher-config", "CFG"], "--teacher-weights 'DIR' is a folder"),
    ],
)
def test_run_arguments_that_would_fail_after_training_are_refused_first(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if a == "DIR" else f"{CONFIGS}/tiny_teacher.yaml" if a == "CFG" else a for a in argv]
    line = _usage(capsys, lambda: _run_plan(tmp_path, *argv))
    assert message.replace("'DIR'", repr(str(tmp_path))) in line and not (tmp_path / "report").exists()


def test_run_with_a_defeat_config_as_the_teacher_is_refused(tmp_path):
    from defeat.demo.pipeline import RunError

    weights = save_random_weights(f"{CONFIGS}/tiny_teacher.yaml", str(tmp_path), "t")
    with pytest.raises(RunError, match=r"--teacher-config .*tiny_defeat.yaml is a DeFeat config .*: give the config"):
        _run_plan(tmp_path, "--teacher-config", f"{CONFIGS}/tiny_defeat.yaml", "--teacher-weights", weights)
    assert not (tmp_path / "report").exists()


# ---- the demo and the benchmarks ----


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--teacher-iters", "0"], "--teacher-iters: must be at least 1, got 0"),
        (["--student-iters", "-5"], "--student-iters: must be at least 1, got -5"),
        (["--output", "FILE"], "--output 'FILE' is a file; give a folder for the report"),
    ],
)
def test_demo_iterations_below_one_and_an_output_file_are_refused(tmp_path, capsys, monkeypatch, argv, message):
    """Refused before the demo's dataset is generated or anything trains (argparse's status 2 for
    an option, a one-line error for the output folder)."""
    from defeat.data import datasets
    from defeat.demo import pipeline, runner

    def trains(*args, **kwargs):
        raise AssertionError("the demo went on past its checks")

    monkeypatch.setattr(pipeline, "inspect", trains)
    monkeypatch.setattr(datasets, "register_provided_datasets", trains)  # generates the data on first use

    (tmp_path / "results.md").write_text("mine")
    argv = [str(tmp_path / "results.md") if a == "FILE" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        runner.main(argv)
    text = e.value.code if isinstance(e.value.code, str) else capsys.readouterr().err
    assert e.value.code == 2 or isinstance(e.value.code, str)
    assert message.replace("FILE", str(tmp_path / "results.md")) in text
    assert (tmp_path / "results.md").read_text() == "mine"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tag", "/../../elsewhere"], "--tag '/../../elsewhere' is a suffix of the run folders' names"),
        (["--opts", "OUTPUT_DIR", "/tmp/all"], "--opts OUTPUT_DIR: each run has its folder under --output"),
        (["--opts", "SEED", "5"], "--opts SEED: each run's seed comes from --seeds"),
        (["--opts", "MODEL.DEFEAT.NECK.BG_WEIGHT"], "--opts must be KEY VALUE pairs"),
        (["--teacher-weights", "DIR"], "--teacher-weights 'DIR' is a folder; give the weights file"),
    ],
)
def test_accuracy_arguments_that_runs_would_misread(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if a == "DIR" else a for a in argv]
    line = _usage(capsys, lambda: _bench("accuracy").parse_args(argv))
    assert message.replace("'DIR'", repr(str(tmp_path))) in line


@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_step_time_device_it_cannot_use_is_refused(tmp_path, capsys, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["--device", device, "--steps", "1", "--warmup", "0", "--boxes", "10", "--json", str(tmp_path / "s.json")]
    line = _usage(capsys, lambda: _bench("step_time").main(argv))
    expected = "not a device name torch reads" if device == "gpu" else "but this machine has no CUDA device"
    assert f"--device '{device}', {expected}" in line and not (tmp_path / "s.json").exists()


def test_step_time_with_teacher_weights_that_are_missing(tmp_path):
    from defeat.errors import TeacherLoadError

    argv = ["--teacher-weights", str(tmp_path / "t.pth"), "--steps", "1", "--warmup", "0", "--boxes", "10"]
    with pytest.raises(
        TeacherLoadError, match=r"teacher weights not found: '.*t.pth' \(MODEL.DEFEAT.TEACHER.WEIGHTS\)"
    ):
        _bench("step_time").main(argv + ["--json", str(tmp_path / "s.json")])
