"""tools/summarize_runs.py evaluating weights (the --eval-only path of train_net.py) on two tiny
runs of 2 iterations: the same numbers as the runs' own final evaluations, and the errors."""

import json
import math
import os
import shutil

import pytest
from coco_files import tool_exit, tool_main
from helpers import CONFIGS, TINY, data_opts, train_args


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """Folders of a tiny teacher and a tiny student, each trained 2 iterations and evaluated at
    the end on ``tiny_shapes_val`` (its metrics.json holds bbox/* and bbox/AP-<class>), and the
    student's folder again as a DeFeat run's (``defeat``)."""
    import train_net

    folders = {}
    for role, config in (("teacher", "tiny_teacher.yaml"), ("student", "tiny_base.yaml")):
        out = str(tmp_path_factory.mktemp(role))
        train_net.main(train_args(f"{CONFIGS}/{config}", *data_opts(out), "SOLVER.MAX_ITER", 2))
        folders[role] = out
    # The DeFeat run's folder as the summary reads it: the student's metrics, and a saved config
    # whose architecture is DeFeat's (the roles come from config.yaml; one run cannot be two).
    folders["defeat"] = str(tmp_path_factory.mktemp("defeat"))
    shutil.copytree(folders["student"], folders["defeat"], dirs_exist_ok=True)
    saved = os.path.join(folders["defeat"], "config.yaml")
    text = open(saved).read()
    assert text.count("META_ARCHITECTURE: GeneralizedRCNN") == 1
    with open(saved, "w") as f:
        f.write(text.replace("META_ARCHITECTURE: GeneralizedRCNN", "META_ARCHITECTURE: DeFeatRCNN"))
    return folders


def _main(*argv):
    return tool_main("summarize_runs", *argv)


def _error(*argv):
    return tool_exit("summarize_runs", *argv)


def _same(a, b):
    """Equal numbers, NaN equal to NaN (an AP COCO cannot compute on 6 images)."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def _weights(role, folder):
    return [f"--{role}-weights", os.path.join(folder, "model_final.pth"), f"--{role}-config", f"{folder}/config.yaml"]


def test_evaluated_weights_give_the_runs_own_final_evaluation(trained, tmp_path):
    teacher, student = trained["teacher"], trained["student"]
    by_folder = _main(
        "--teacher",
        teacher,
        "--alone",
        student,
        "--defeat",
        trained["defeat"],
        "--per-class",
        "--output",
        tmp_path / "a",
    )
    by_weights = _main(
        *_weights("teacher", teacher),
        *_weights("alone", student),
        "--defeat",
        trained["defeat"],  # one run read from its folder, the others evaluated
        "--test-set",
        TINY[1],
        "--per-class",
        "--output",
        tmp_path / "b",
    )
    assert set(by_weights["rows"]) == set(by_folder["rows"])
    for name, row in by_folder["rows"].items():
        assert all(_same(row[k], by_weights["rows"][name][k]) for k in row), name
    assert set(by_folder["per_class"]) == set(by_weights["per_class"]) and len(by_folder["per_class"]) == 10
    for name, aps in by_folder["per_class"].items():
        assert all(_same(aps[k], by_weights["per_class"][name][k]) for k in aps), name
    assert by_weights["runs"]["teacher"]["test_sets"] == [TINY[1]]
    assert by_weights["runs"]["alone"]["source"].startswith(f"weights {student}/model_final.pth with config")
    # the evaluation wrote its detections where --output says, nothing into the run folders
    assert (tmp_path / "b" / "eval_teacher" / "inference" / "coco_instances_results.json").is_file()
    assert not (tmp_path / "b" / "eval_defeat").exists()
    saved = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert saved["title"] == f"DeFeat results: COCO box AP on {TINY[1]}"


def test_weights_that_do_not_fit_the_config_are_refused(trained, tmp_path):
    """The teacher's weights (FPN 48) under the student's config (FPN 32): strict loading refuses them."""
    message = _error(
        "--teacher",
        trained["teacher"],
        "--alone-weights",
        os.path.join(trained["teacher"], "model_final.pth"),
        "--alone-config",
        f"{CONFIGS}/tiny_base.yaml",
        "--defeat",
        trained["defeat"],
        "--test-set",
        TINY[1],
        "--output",
        tmp_path / "s",
    )
    assert "(--alone-weights) do not fit GeneralizedRCNN of this config" in message
    assert not (tmp_path / "s" / "summary.md").exists()


def test_a_test_set_of_other_runs_is_refused_before_any_evaluation(trained, tmp_path):
    """tiny_base.yaml evaluates on the demo's val set, the run folders on tiny_shapes_val."""
    message = _error(
        "--teacher",
        trained["teacher"],
        *_weights("alone", trained["student"])[:2],
        "--alone-config",
        f"{CONFIGS}/tiny_base.yaml",
        "--defeat",
        trained["defeat"],
        "--output",
        tmp_path / "s",
    )
    assert "evaluated on different test sets" in message and "on ['defeat_demo_val']" in message
    assert not (tmp_path / "s").exists()


def test_an_unknown_test_set_is_named(trained, tmp_path):
    message = _error(
        *_weights("teacher", trained["teacher"]),
        "--alone",
        trained["student"],
        "--defeat",
        trained["defeat"],
        "--test-set",
        "nope_val",
        "--output",
        tmp_path / "s",
    )
    assert "evaluated on different test sets" in message  # the folders' set is known: refused first
    message = _error(
        *_weights("teacher", trained["teacher"]),
        *_weights("alone", trained["student"]),
        *_weights("defeat", trained["student"]),
        "--test-set",
        "nope_val",
        "--output",
        tmp_path / "s",
    )
    assert "test set 'nope_val'" in message and "is not a registered dataset" in message
    assert "--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]" in message
