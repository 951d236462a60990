"""tools/summarize_runs.py on run folders: metrics.json files written by hand, the table's numbers,
the gain and the gap share against a computation here, the JSON round trip and every error."""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from coco_files import tool_exit, tool_main

from defeat.analysis.run_summary import GAIN, gap_closed, saved_test_sets
from defeat.engine.metrics_file import METRICS

TEACHER = dict(zip(METRICS, [41.0, 60.5, 44.25, 20.0, 45.5, 55.0]))
ALONE = dict(zip(METRICS, [20.25, 38.0, 21.5, 8.75, 22.0, 30.0]))
DEFEAT = dict(zip(METRICS, [30.5, 49.25, 33.0, 12.5, 35.75, 41.0]))
CLASSES = {"teacher": (50.0, 32.0), "alone": (25.5, 15.0), "defeat": (40.0, 21.0)}  # square, bar


def _box(metrics, classes=None):
    row = {f"bbox/{k}": v for k, v in metrics.items()}
    if classes is not None:
        row.update({"bbox/AP-square": classes[0], "bbox/AP-bar": classes[1]})
    return row


def _run(folder, metrics, classes=None, test_set="shapes_val", lazy=False, rows_before=()):
    """A run folder: ``metrics.json`` with loss rows, an intermediate evaluation and the final one
    (after ``rows_before``, e.g. an earlier run in the same file), and a saved ``config.yaml``."""
    folder.mkdir(parents=True)
    rows = [
        *rows_before,
        {"iteration": 0, "total_loss": 2.0},
        {"iteration": 4, **_box(dict.fromkeys(METRICS, 1.0), classes and (1.0, 1.0))},
        {"iteration": 9, "total_loss": 1.0, **_box(metrics, classes)},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"iteration": 10, "total_lo'  # a killed run's last line
    (folder / "metrics.json").write_text(text)
    if test_set is not None:
        if lazy:  # what lazy_train_net.py saves
            (folder / "config.yaml").write_text(f"dataloader:\n  test:\n    dataset:\n      names: {test_set}\n")
        else:  # Detectron2's CfgNode dump
            (folder / "config.yaml").write_text(f"DATASETS:\n  TEST:\n  - {test_set}\n  TRAIN:\n  - shapes_train\n")
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    """The three run folders; the teacher's metrics.json starts with an earlier run (AP 99)."""
    earlier = [{"iteration": 0, "total_loss": 3.0}, {"iteration": 9, **_box(dict.fromkeys(METRICS, 99.0))}]
    return {
        "teacher": _run(tmp_path / "teacher", TEACHER, CLASSES["teacher"], rows_before=earlier),
        "alone": _run(tmp_path / "alone", ALONE, CLASSES["alone"], lazy=True),
        "defeat": _run(tmp_path / "defeat", DEFEAT, CLASSES["defeat"]),
    }


def _argv(runs, out):
    return ["--teacher", runs["teacher"], "--alone", runs["alone"], "--defeat", runs["defeat"], "--output", str(out)]


def _main(*argv):
    return tool_main("summarize_runs", *argv)


def _error(*argv):
    return tool_exit("summarize_runs", *argv)


def _table(markdown):
    """``{row name: [cell texts]}`` of the Markdown tables."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| model") and not line.startswith("| class"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_table_gain_and_gap_share_from_the_last_evaluations(runs, tmp_path, capsys):
    out = tmp_path / "summary"
    summary = _main(*_argv(runs, out), "--per-class")
    md = (out / "summary.md").read_text()
    assert capsys.readouterr().out.strip().startswith(md.strip()[:40])  # printed as written
    rows = _table(md)
    expected = {"teacher": TEACHER, "student alone": ALONE, "student + DeFeat": DEFEAT}
    for name, metrics in expected.items():
        assert rows[name] == [f"{metrics[k]:.2f}" for k in METRICS], name
    assert rows[GAIN] == [f"{DEFEAT[k] - ALONE[k]:+.2f}" for k in METRICS]
    assert rows[GAIN][0] == "+10.25"
    # (30.5 - 20.25) / (41 - 20.25) = 10.25 / 20.75
    assert "Teacher-baseline AP gap closed by DeFeat: 49%" in md
    assert summary["gap_closed_percent"] == pytest.approx(100 * 10.25 / 20.75)
    assert "| model | AP | AP50 | AP75 | APs | APm | APl |" in md  # the demo's table
    assert "### DeFeat results: COCO box AP on shapes_val" in md
    assert f"- teacher: {runs['teacher']}, evaluation at iteration 9" in md
    # per class: square and bar of each run, gain DeFeat - alone
    assert rows["square"] == ["50.00", "25.50", "40.00", "+14.50"]
    assert rows["bar"] == ["32.00", "15.00", "21.00", "+6.00"]
    # the JSON round trip: what main returned, exactly
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert saved["rows"]["student alone"] == ALONE and saved["rows"][GAIN]["AP"] == 10.25
    assert saved["per_class"]["square"] == {"teacher": 50.0, "alone": 25.5, "defeat": 40.0, "gain": 14.5}
    assert saved["runs"]["alone"]["test_sets"] == ["shapes_val"] and saved["warnings"] == []


def test_gap_closed_is_the_share_of_the_teacher_student_gap():
    assert gap_closed(40.0, 20.0, 25.0) == 25.0
    assert gap_closed(40.0, 20.0, 45.0) == 125.0 and gap_closed(40.0, 20.0, 15.0) == -25.0
    assert gap_closed(20.0, 20.0, 25.0) is None and gap_closed(19.0, 20.0, 25.0) is None
    assert gap_closed(float("nan"), 20.0, 25.0) is None


def test_teacher_not_better_warns_and_leaves_the_share_out(tmp_path, caplog):
    runs = {
        "teacher": _run(tmp_path / "t", dict(TEACHER, AP=15.0)),
        "alone": _run(tmp_path / "a", ALONE),
        "defeat": _run(tmp_path / "d", DEFEAT),
    }
    out = tmp_path / "summary"
    summary = _main(*_argv(runs, out))
    md = (out / "summary.md").read_text()
    assert "Teacher-baseline AP gap closed by DeFeat: n/a" in md
    warning = "the teacher (AP 15.00) is not better than the student alone (AP 20.25)"
    assert f"Warning: {warning}" in md and warning in caplog.text
    assert json.loads((out / "summary.json").read_text())["gap_closed_percent"] is None
    assert summary["gap_closed_percent"] is None


def test_an_ap_coco_could_not_compute_is_null_in_the_json(tmp_path):
    runs = {
        role: _run(tmp_path / role, dict(m, APl=float("nan")))
        for role, m in (("teacher", TEACHER), ("alone", ALONE), ("defeat", DEFEAT))
    }
    out = tmp_path / "summary"
    summary = _main(*_argv(runs, out))
    assert math.isnan(summary["rows"]["teacher"]["APl"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rows"]["teacher"]["APl"] is None and saved["rows"][GAIN]["APl"] is None
    assert saved["rows"]["teacher"]["AP"] == 41.0


def test_saved_test_sets_of_yaml_and_lazy_runs(runs, tmp_path):
    assert saved_test_sets(runs["teacher"]) == ["shapes_val"]
    assert saved_test_sets(runs["alone"]) == ["shapes_val"]  # dataloader.test.dataset.names
    assert saved_test_sets(str(tmp_path)) is None  # no config.yaml: unknown


def test_a_folder_without_metrics_json(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _error(*_argv(dict(runs, alone=str(empty)), tmp_path / "s"))
    assert f"--alone {str(empty)!r} has no metrics.json" in message
    assert "--alone-weights FILE --alone-config CONFIG" in message
    message = _error(*_argv(dict(runs, teacher=str(tmp_path / "nope")), tmp_path / "s"))
    assert "--teacher" in message and "no such folder" in message
    assert not (tmp_path / "s").exists()


def test_a_run_without_a_bbox_evaluation_says_how_to_evaluate_it(runs, tmp_path):
    folder = tmp_path / "noeval"
    folder.mkdir()
    rows = [{"iteration": 9, **_box(DEFEAT)}, {"iteration": 0, "total_loss": 1.0}]  # the last run: no evaluation
    (folder / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))
    message = _error(*_argv(dict(runs, defeat=str(folder)), tmp_path / "s"))
    assert "has no bbox evaluation in its last run" in message and "--eval-only" in message
    assert f"--defeat-weights {folder}/model_final.pth --defeat-config {folder}/config.yaml" in message


def test_runs_on_different_test_sets_are_refused(runs, tmp_path):
    other = _run(tmp_path / "other", ALONE, CLASSES["alone"], test_set="other_val")
    message = _error(*_argv(dict(runs, alone=other), tmp_path / "s"))
    assert "evaluated on different test sets" in message
    assert f"student alone ({other}) on ['other_val']" in message and "on ['shapes_val']" in message
    assert not (tmp_path / "s").exists()


def test_runs_whose_per_class_ap_names_other_classes_are_refused(runs, tmp_path):
    folder = tmp_path / "cats"
    _run(folder, DEFEAT, test_set=None)
    rows = [{"iteration": 9, **_box(DEFEAT), "bbox/AP-cat": 1.0, "bbox/AP-dog": 2.0}]
    (folder / "metrics.json").write_text(json.dumps(rows[0]) + "\n")
    message = _error(*_argv(dict(runs, defeat=str(folder)), tmp_path / "s"))
    assert "per-class AP name different classes" in message and "cat, dog" in message


def test_per_class_needs_every_run_to_have_it(runs, tmp_path):
    plain = _run(tmp_path / "plain", DEFEAT)  # no AP-<class> keys
    assert _main(*_argv(dict(runs, defeat=plain), tmp_path / "ok"))["rows"]["student + DeFeat"] == DEFEAT
    message = _error(*_argv(dict(runs, defeat=plain), tmp_path / "s"), "--per-class")
    assert f"--per-class: student + DeFeat ({plain}) has no per-class AP" in message


def test_outputs_are_kept_unless_overwrite_and_never_in_a_run_folder(runs, tmp_path):
    out = tmp_path / "summary"
    _main(*_argv(runs, out))
    (out / "summary.md").write_text("mine")
    message = _error(*_argv(runs, out))
    assert "summary.md" in message and "already exists; pass --overwrite" in message
    assert (out / "summary.md").read_text() == "mine"
    _main(*_argv(runs, out), "--overwrite")
    assert "| teacher | 41.00 |" in (out / "summary.md").read_text()
    message = _error(*_argv(runs, f"{runs['defeat']}/summary"))
    assert "lies inside the student + DeFeat run folder (--defeat)" in message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--teacher", "t", "--alone", "a"], "the student + DeFeat run is missing: give --defeat DIR"),
        (
            ["--teacher", "t", "--teacher-weights", "w.pth", "--alone", "a", "--defeat", "d"],
            "--teacher and --teacher-weights/--teacher-config both given",
        ),
        (["--teacher", "t", "--alone-weights", "w.pth", "--defeat", "d"], "give --alone DIR"),
        (
            ["--teacher", "t", "--alone", "a", "--defeat", "d", "--test-set", "x"],
            "--test-set is only used to evaluate weights",
        ),
    ],
)
def test_argument_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        _main(*argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_model_that_detected_nothing_shows_no_detections_not_nan():
    """Detectron2 gives NaN for every AP when the model found nothing ("No predictions from the
    model!"), and for one AP without ground truth (a size or class absent from the test set)."""
    from defeat.analysis.run_summary import NO_DETECTIONS, format_ap, format_table

    nothing = {k: float("nan") for k in METRICS}
    one_missing = dict(TEACHER, APl=float("nan"))
    table = format_table({"untrained": nothing, "teacher": one_missing, GAIN: dict(nothing, AP=1.5)})
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    rows = {c[0]: c[1:] for c in cells}
    assert rows["untrained"] == [NO_DETECTIONS] * len(METRICS)
    assert rows["teacher"][0] == f"{TEACHER['AP']:.2f}" and rows["teacher"][-1] == "n/a"
    assert rows[GAIN][0] == "+1.50" and "nan" not in table
    assert (format_ap(2.0, signed=True), format_ap(float("nan"), no_detections=True)) == ("+2.00", "no detections")


# ---- roles from the saved configs, unfinished runs, figures that are not shares ----

_STUDENT = "  BACKBONE:\n    NAME: build_slim_resnet_fpn_backbone\n  RESNETS:\n    DEPTH: {depth}\n"
_MORE = "DATASETS:\n  TEST:\n  - shapes_val\nSOLVER:\n  MAX_ITER: {max_iter}\n"


def _config(folder, arch, depth=18, max_iter=10):
    """A CfgNode-like saved config.yaml: ``arch`` with MODEL.DEFEAT (train_net.py saves it for every run)."""
    text = f"MODEL:\n  META_ARCHITECTURE: {arch}\n  DEFEAT:\n    NECK:\n      ENABLED: true\n"
    (folder / "config.yaml").write_text(text + _STUDENT.format(depth=depth) + _MORE.format(max_iter=max_iter))


@pytest.fixture
def role_runs(tmp_path):
    """Three run folders whose saved configs give their roles: an R50 teacher, the R18 student
    alone and with DeFeat, each evaluated last at iteration 9 of 10."""
    found = {}
    for role, metrics, arch, depth in (
        ("teacher", TEACHER, "GeneralizedRCNN", 50),
        ("alone", ALONE, "GeneralizedRCNN", 18),
        ("defeat", DEFEAT, "DeFeatRCNN", 18),
    ):
        found[role] = _run(tmp_path / role, metrics)
        _config(tmp_path / role, arch, depth)
    return found


def test_roles_read_from_the_saved_configs_pass_when_they_fit(role_runs, tmp_path):
    summary = _main(*_argv(role_runs, tmp_path / "s"))
    assert summary["warnings"] == [] and summary["runs"]["defeat"]["in_progress"] is None


@pytest.mark.parametrize(
    "swap, message",
    [
        ({"teacher": "copy"}, r"--teacher .*copy' \(its config.yaml\) is a DeFeat run \(DeFeatRCNN"),
        ({"alone": "defeat", "defeat": "alone"}, r"--alone .*defeat' \(its config.yaml\) is a DeFeat run"),
        ({"defeat": "teacher", "teacher": "defeat"}, r"is a DeFeat run .*not a teacher"),
        ({"alone": "defeat"}, r"--alone and --defeat are the same run folder"),
    ],
)
def test_roles_that_contradict_the_configs_are_refused_in_one_line(role_runs, tmp_path, swap, message):
    """A DeFeat run given as the teacher (a copy of the DeFeat run: without the check, '100 %'),
    runs swapped, one run in two roles."""
    shutil.copytree(role_runs["defeat"], tmp_path / "copy")
    found = dict(role_runs, copy=str(tmp_path / "copy"))
    runs = dict(role_runs, **{role: found[other] for role, other in swap.items()})
    text = _error(*_argv(runs, tmp_path / "s"))
    assert re.search(message, text) and len(text.splitlines()) == 1, text
    assert not (tmp_path / "s").exists()


def test_a_plain_run_as_the_defeat_run_and_two_students_are_refused(role_runs, tmp_path):
    _config(tmp_path / "defeat", "GeneralizedRCNN", 18)
    text = _error(*_argv(role_runs, tmp_path / "s"))
    assert "is not a DeFeat run (GeneralizedRCNN" in text and "give the DeFeat student's run as --defeat" in text
    _config(tmp_path / "defeat", "DeFeatRCNN", 50)
    text = _error(*_argv(role_runs, tmp_path / "s"))
    assert "train different students (MODEL.RESNETS.DEPTH 18 vs 50" in text and "same student config" in text
    assert not (tmp_path / "s").exists()


def test_a_lazyconfig_defeat_run_as_the_teacher_is_refused(role_runs, tmp_path):
    (tmp_path / "teacher" / "config.yaml").write_text(
        "model:\n  _target_: defeat.modeling.meta_arch.rcnn.DeFeatRCNN\ndataloader:\n  test:\n    dataset:\n"
        "      names: shapes_val\n"
    )
    assert "is a DeFeat run (DeFeatRCNN" in _error(*_argv(role_runs, tmp_path / "s"))


def test_unfinished_runs_are_named(role_runs, tmp_path):
    """An evaluation before the last iteration, a newer checkpoint, a live lock; a stale lock is not."""
    _config(tmp_path / "alone", "GeneralizedRCNN", 18, max_iter=100)
    (tmp_path / "defeat" / "last_checkpoint").write_text("model_0000019.pth")
    host = socket.gethostname()
    (tmp_path / "teacher" / ".defeat-run.lock").write_text(f"{os.getpid()} {host}\n")  # as RunFolder writes it
    summary = _main(*_argv(role_runs, tmp_path / "s"))
    runs = summary["runs"]
    assert "last evaluation is at iteration 9 of 100" in runs["alone"]["in_progress"]
    assert (
        "last checkpoint (model_0000019.pth, iteration 19) is newer than its last evaluation"
        in (runs["defeat"]["in_progress"])
    )
    assert f"process {os.getpid()} on {host}" in runs["teacher"]["in_progress"]
    md = (tmp_path / "s" / "summary.md").read_text()
    assert md.count("(NOT FINISHED: see the warning)") == 3
    assert sum("is not finished" in w for w in summary["warnings"]) == 3
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "teacher" / ".defeat-run.lock").write_text(f"{dead.pid} {host}\n")  # stale: not named
    (tmp_path / "defeat" / "last_checkpoint").write_text("model_final.pth")
    _config(tmp_path / "alone", "GeneralizedRCNN", 18, max_iter=10)
    summary = _main(*_argv(role_runs, tmp_path / "s2"))
    assert all(r["in_progress"] is None for r in summary["runs"].values()) and summary["warnings"] == []


def test_a_gap_share_outside_0_to_100_is_flagged(tmp_path, caplog):
    runs = {
        "teacher": _run(tmp_path / "t", dict(TEACHER, AP=25.0)),
        "alone": _run(tmp_path / "a", ALONE),
        "defeat": _run(tmp_path / "d", DEFEAT),
    }
    summary = _main(*_argv(runs, tmp_path / "s"))
    md = (tmp_path / "s" / "summary.md").read_text()
    # (30.5 - 20.25) / (25 - 20.25) = 216 %
    assert "gap closed by DeFeat: 216% (OUTSIDE 0-100 %: see the warning)" in md
    assert "the DeFeat student (AP 30.50) is better than the teacher (AP 25.00)" in md
    assert summary["gap_closed_out_of_range"] is True and "outside 0-100 %" in caplog.text
    runs["defeat"] = _run(tmp_path / "d2", dict(DEFEAT, AP=10.0))
    summary = _main(*_argv(runs, tmp_path / "s2"))
    md = (tmp_path / "s2" / "summary.md").read_text()
    assert "OUTSIDE 0-100 %" in md and "is worse than the student alone (AP 20.25)" in md
    runs = dict(runs, teacher=_run(tmp_path / "t3", TEACHER), defeat=_run(tmp_path / "d3", DEFEAT))
    assert not _main(*_argv(runs, tmp_path / "s3"))["gap_closed_out_of_range"]


def test_a_teacher_without_detections_is_named_not_printed_as_nan(tmp_path):
    """COCO gives every AP as NaN when a model detects nothing."""
    runs = {
        "teacher": _run(tmp_path / "t", dict.fromkeys(METRICS, float("nan"))),
        "alone": _run(tmp_path / "a", ALONE),
        "defeat": _run(tmp_path / "d", dict(DEFEAT, APl=float("nan"))),
    }
    summary = _main(*_argv(runs, tmp_path / "s"))
    md = (tmp_path / "s" / "summary.md").read_text()
    rows = _table(md)
    assert rows["teacher"] == ["no detections"] * len(METRICS)
    assert rows["student + DeFeat"][-1] == "n/a" and rows[GAIN][-1] == "n/a"  # no large objects: not 'no detections'
    assert "nan" not in md.lower().replace("ap nan", "")
    assert "the teacher has no detections (every AP NaN" in md and "gap closed by DeFeat: n/a" in md
    assert "is not better than the student alone" not in md
    assert summary["runs"]["teacher"]["no_detections"] and not summary["runs"]["alone"]["no_detections"]


def test_a_defeat_config_as_the_teachers_config_is_refused_before_evaluating(role_runs, tmp_path):
    from helpers import CONFIGS

    weights = tmp_path / "t.pth"
    weights.write_bytes(b"never read")
    argv = ["--teacher-weights", weights, "--teacher-config", f"{CONFIGS}/tiny_defeat.yaml"]
    text = _error(*argv, "--alone", role_runs["alone"], "--defeat", role_runs["defeat"], "--test-set", "shapes_val",
                  "--output", tmp_path / "s")  # fmt: skip
    assert re.search(r"--teacher-config '.*tiny_defeat.yaml' is a DeFeat run \(DeFeatRCNN", text), text
    assert not (tmp_path / "s").exists()


def test_a_saved_lazyconfig_and_a_loaded_one_are_the_same_student(tmp_path):
    """lazy_train_net.py saves config.yaml with _target_ names it may shorten; the loaded DeFeat
    twin names the same student, so the two compare equal; another FPN width does not."""
    from detectron2.config import LazyConfig
    from helpers import CONFIGS

    from defeat.analysis.run_summary import config_identity, saved_config
    from defeat.config.files import load_config

    LazyConfig.save(load_config(f"{CONFIGS}/tiny_base.py"), str(tmp_path / "config.yaml"))
    saved = config_identity(saved_config(str(tmp_path)))
    loaded = config_identity(load_config(f"{CONFIGS}/tiny_defeat.py"))
    assert (saved.defeat, loaded.defeat) == (False, True) and saved.student == loaded.student
    wider = config_identity(load_config(f"{CONFIGS}/tiny_base.py", ["model.backbone.out_channels=48"]))
    assert wider.student != loaded.student
