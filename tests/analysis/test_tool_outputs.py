"""Where the tools write and what the environment tells them: every tool checks its output path
before its work (a file where a folder is wanted, a path under a file, a folder it cannot write),
a dataset image outside its IMAGE_ROOT is refused by the tools that write beside the images, and
an environment variable that cannot be used is named in the error."""

import json
import os

import pytest
from coco_files import load_tool, tiny_student_files, write_coco
from helpers import CONFIGS

from defeat.data.datasets import DatasetsVariableError, check_images_under_root, setup_datasets
from defeat.engine.outputs import check_output_dir, check_output_files, check_writable
from defeat.errors import DatasetSpecError, EnvironmentVariableError, OutputError


def _refusal(capsys, call):
    """The one-line refusal of ``call()``: a SystemExit's message (status 1), or argparse's line
    on stderr (status 2); fails if the call does not exit."""
    with pytest.raises(SystemExit) as e:
        call()
    text = e.value.code if isinstance(e.value.code, str) else capsys.readouterr().err.strip()
    assert e.value.code not in (0, None) and len(text.splitlines()) == 1, text
    return text


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return tiny_student_files(tmp_path_factory.mktemp("outputs_student"))


def test_check_writable_names_the_file_the_folder_and_permissions(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(OutputError, match=r"--output '.*blocker' is a file, not a folder"):
        check_writable(str(blocker), folder=True)
    with pytest.raises(OutputError, match=r"lies under '.*blocker', which is a file, not a folder"):
        check_writable(str(blocker / "deeper" / "out.png"))
    with pytest.raises(OutputError, match=r"'.*' is a folder; give a file path in it"):
        check_writable(str(tmp_path))
    check_writable(str(tmp_path / "new" / "deeper" / "out.png"))  # folders created later: fine
    check_writable(str(tmp_path / "new"), folder=True)
    monkeypatch.setattr(os, "access", lambda path, mode: os.path.realpath(path) != os.path.realpath(tmp_path))
    with pytest.raises(OutputError, match=r"the folder '.*' is not writable; choose a folder you can write to"):
        check_writable(str(tmp_path / "new" / "out.png"))
    with pytest.raises(OutputError, match="not writable"):
        check_output_dir(str(tmp_path / "new"), {})
    with pytest.raises(OutputError, match="not writable"):
        check_output_files([str(tmp_path / "out.png")])


def test_existing_outputs_name_overwrite(tmp_path):
    (tmp_path / "a.png").write_text("mine")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        check_output_files([str(tmp_path / "a.png")])
    check_output_files([str(tmp_path / "a.png")], overwrite=True)


def _tools(student, tmp_path):
    """Each tool, called with an output path below a file (``tmp_path/blocker/...``)."""
    weights, json_file, images = student
    below = tmp_path / "blocker" / "out"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"iteration": 0, "total_loss": 1.0}) + "\n")
    runs = []
    for role in ("teacher", "alone", "defeat"):
        (tmp_path / role).mkdir()
        row = {"iteration": 9, **{f"bbox/{k}": 1.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}}
        (tmp_path / role / "metrics.json").write_text(json.dumps(row) + "\n")
        runs += [f"--{role}", str(tmp_path / role)]
    cfg, dataset = f"{CONFIGS}/tiny_base.yaml", f"outputs_val={json_file}:{images}"
    return {
        "predict": ["--config-file", cfg, "--weights", weights, "--input", images, "--output", below,
                    "MODEL.ROI_HEADS.NUM_CLASSES", 2],
        "summarize_runs": [*runs, "--output", below],
        "plot_losses": [metrics, "--output", f"{below}/losses.png"],
        "export_student": [weights, f"{below}/student.pth"],
        "trace_student": ["--config-file", cfg, "--weights", weights, "--output", f"{below}/s.ts",
                          "MODEL.ROI_HEADS.NUM_CLASSES", 2],
        "visualize_masks": ["--config-file", cfg, "--dataset", dataset, "--output", below],
        "inspect_dataset": ["--config-file", cfg, "--dataset", dataset, "--output", f"{below}/stats.png"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "tool",
    [
        "predict",
        "summarize_runs",
        "plot_losses",
        "export_student",
        "trace_student",
        "visualize_masks",
        "inspect_dataset",
    ],
)
def test_every_tool_refuses_an_output_below_a_file_before_its_work(student, tmp_path, capsys, tool):
    (tmp_path / "blocker").write_text("a file, not a folder")
    argv = [str(a) for a in _tools(student, tmp_path)[tool]]
    text = _refusal(capsys, lambda: load_tool(tool).main(argv))
    assert "which is a file, not a folder" in text and "blocker" in text, text
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"


def test_predict_into_a_folder_it_cannot_write_is_refused_before_building_the_model(student, tmp_path, monkeypatch):
    weights, _, images = student
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if os.path.realpath(p) == str(locked) else real(p, m))
    argv = ["--config-file", f"{CONFIGS}/tiny_base.yaml", "--weights", weights, "--input", images]
    with pytest.raises(SystemExit, match=r"the folder '.*locked' is not writable"):
        load_tool("predict").main([*argv, "--output", str(locked / "pred"), "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    assert os.listdir(locked) == []


def _escaping_dataset(tmp_path):
    json_file, images = write_coco(str(tmp_path / "data"), num_images=2)
    data = json.load(open(json_file))
    data["images"][0]["file_name"] = "../../../etc/x.png"
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file, images


def test_an_image_outside_its_image_root_is_refused(tmp_path):
    records = [{"file_name": str(tmp_path / "root" / "a.png")}, {"file_name": str(tmp_path / "root/../../b.png")}]
    with pytest.raises(DatasetSpecError, match=r"dataset 'd': image '.*root/../../b.png' resolves to .*outside"):
        check_images_under_root(records, "d", str(tmp_path / "root"))
    check_images_under_root(records[:1], "d", str(tmp_path / "root"))
    with pytest.raises(DatasetSpecError, match="outside"):  # an absolute path elsewhere
        check_images_under_root([{"file_name": "/etc/passwd"}], "d", str(tmp_path / "root"))


@pytest.mark.parametrize("tool", ["visualize_masks", "inspect_dataset"])
def test_tools_that_write_beside_the_images_refuse_one_outside_its_root(tmp_path, capsys, tool):
    json_file, images = _escaping_dataset(tmp_path)
    argv = ["--config-file", f"{CONFIGS}/tiny_base.yaml", "--dataset", f"escape_{tool}={json_file}:{images}"]
    out = tmp_path / "out"
    argv += ["--output", str(out if tool == "visualize_masks" else out / "stats.png")]
    text = _refusal(capsys, lambda: load_tool(tool).main(argv))
    assert "etc/x.png' resolves to" in text and "outside its image folder (IMAGE_ROOT)" in text, text
    assert not out.exists()


def test_a_malformed_dataset_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFEAT_COCO_DATASETS", "not a spec")
    with pytest.raises(DatasetsVariableError) as e:
        setup_datasets()
    assert str(e.value).startswith("environment variable DEFEAT_COCO_DATASETS='not a spec': cannot read dataset spec")
    assert "unset DEFEAT_COCO_DATASETS" in str(e.value)
    assert isinstance(e.value, EnvironmentVariableError) and isinstance(e.value, DatasetSpecError)
    monkeypatch.setenv("DEFEAT_COCO_DATASETS", f"gone={tmp_path}/nope.json")
    with pytest.raises(DatasetsVariableError, match=r"DEFEAT_COCO_DATASETS=.*annotation file not found"):
        setup_datasets()
    with pytest.raises(DatasetSpecError, match="^cannot read dataset spec"):  # --dataset: not the variable
        monkeypatch.setenv("DEFEAT_COCO_DATASETS", "")
        setup_datasets(["not a spec"])


def test_an_unrelated_tool_names_the_malformed_variable_in_one_line(student, tmp_path, monkeypatch, capsys):
    """predict.py without --dataset: the variable it never named is what breaks, and it says so."""
    weights, _, images = student
    monkeypatch.setenv("DEFEAT_COCO_DATASETS", "broken")
    argv = ["--config-file", f"{CONFIGS}/tiny_base.yaml", "--weights", weights, "--input", images]
    text = _refusal(capsys, lambda: load_tool("predict").main([*argv, "--output", str(tmp_path / "o")]))
    assert "environment variable DEFEAT_COCO_DATASETS='broken'" in text and "unset" in text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["many", "0", "-5"])
def test_demo_sizes_from_the_environment_name_the_variable(monkeypatch, value):
    from defeat.demo.data import settings_from_env

    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", value)
    with pytest.raises(EnvironmentVariableError, match=f"environment variable DEFEAT_DEMO_NUM_TRAIN='{value}'"):
        settings_from_env()
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "12")
    assert settings_from_env()["num_train"] == 12
