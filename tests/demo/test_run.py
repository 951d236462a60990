"""``python -m defeat run`` on a tiny set of real photographs: the report folder end to end, the
finished runs reused by a second invocation, bad input refused before anything is written; the
CPU preset and its schedule rule."""

import json
import os
import uuid

import pytest
import torch
from helpers import REPO
from photo_files import CATEGORIES, write_photo_coco

from defeat.config.files import load_config
from defeat.config.presets import PRESETS, Schedule, schedule
from defeat.demo import pipeline


@pytest.fixture
def photos(tmp_path):
    """6 training and 4 validation photos (128-200 px) with dataset names of their own (the
    conftest runs each test in the repository root, with no datasets exported)."""
    data = tmp_path / "data"
    train = write_photo_coco(str(data), "train", 6)
    val = write_photo_coco(str(data), "val", 4, seed=1)
    tag = uuid.uuid4().hex[:8]
    images = str(data / "images")
    return {"train": f"run_train_{tag}={train}:{images}", "val": f"run_val_{tag}={val}:{images}", "data": data}


def _argv(photos, output, *extra):
    return ["--train", photos["train"], "--val", photos["val"], "--output", str(output), *extra]


def test_schedule_rule():
    assert schedule(40, 4, 50) == Schedule(360, [270, 331], 50)  # the recipe that trained on 40 photos
    assert schedule(400, 4, 50).max_iter == 3600
    assert schedule(5, 4, 50).max_iter == 200  # at least MIN_ITERS
    short = schedule(40, 4, 50, iters=2)
    assert short.max_iter == 2 and short.warmup_iters == 1 and short.steps == [1]  # the warm-up fits the run
    assert schedule(40, 4, 50, iters=100).warmup_iters == 20
    assert Schedule(360, [270, 331], 50).opts() == [
        *("SOLVER.MAX_ITER", "360", "SOLVER.STEPS", "(270, 331)", "SOLVER.WARMUP_ITERS", "50"),
    ]
    for bad in [(0, 4, 50, None), (40, 0, 50, None), (40, 4, 50, 0)]:
        with pytest.raises(ValueError):
            schedule(*bad)


def test_cpu_preset_configs():
    preset = PRESETS["cpu"]
    teacher, student, defeat = (
        load_config(os.path.join(REPO, f)) for f in (preset.teacher, preset.student, preset.defeat)
    )
    for cfg in (teacher, student, defeat):
        assert cfg.INPUT.MIN_SIZE_TRAIN == (320,) and cfg.INPUT.MAX_SIZE_TEST == 533
        assert cfg.MODEL.RESNETS.NORM == "BN" and cfg.MODEL.WEIGHTS == "" and cfg.MODEL.DEVICE == "cpu"
        assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS) == (4, 0.01, 50)
        rule = schedule(40, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.WARMUP_ITERS)
        assert (cfg.SOLVER.MAX_ITER, list(cfg.SOLVER.STEPS)) == (rule.max_iter, rule.steps)
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 0 and cfg.DATASETS.TRAIN == ()  # filled in by the command
    assert teacher.MODEL.FPN.OUT_CHANNELS == 128 and student.MODEL.FPN.OUT_CHANNELS == 64
    assert defeat.MODEL.META_ARCHITECTURE == "DeFeatRCNN"
    assert defeat.MODEL.DEFEAT.TEACHER.CONFIG_FILE == os.path.join(REPO, preset.teacher)


def test_command_dispatch(capsys):
    from defeat.__main__ import main

    assert main([]) == 2 and "python -m defeat run" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0 and "--train" in capsys.readouterr().out


def test_options_after_the_overrides():
    args = pipeline.parse_args(["--train", "a=a.json", "--val", "b=b.json", "--output", "o", "K", "1", "--no-alone"])
    assert args.opts == ["K", "1"] and args.alone is False and args.train == "a=a.json"


def test_datasets_of_a_preset_and_options_of_a_starting_teacher(capsys):
    """A preset that names no dataset needs --train and --val; one that does (the demo) takes its
    own; --init-teacher-run goes with a preset whose teacher starts from another."""
    for argv, message in [
        (["--val", "b=b.json", "--output", "o"], "--train is required (preset cpu names no dataset)"),
        (["--train", "a=a.json", "--output", "o"], "--val is required (preset cpu names no dataset)"),
        (["--preset", "demo", "--output", "o", "--init-teacher-run", "t"], "--init-teacher-run: preset demo's"),
    ]:
        with pytest.raises(SystemExit) as e:
            pipeline.parse_args(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    args = pipeline.parse_args(["--preset", "demo", "--output", "o"])
    assert (args.train, args.val) == ("defeat_demo_train", "defeat_demo_val")
    args = pipeline.parse_args(["--preset", "demo-retinanet", "--output", "o", "--init-teacher-run", "t"])
    assert args.init_teacher_run == "t"


def test_overrides_are_written_as_the_command_line_reads_them(photos, tmp_path):
    """A whole number for a float key (``SCORE_THRESH_TEST 0``) is accepted on the command line:
    the configs written for the runs read it back as a float."""
    argv = _argv(photos, tmp_path / "report", "--iters", "5", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0")
    plan = pipeline.check_inputs(pipeline.parse_args(argv))
    os.makedirs(plan.output)
    files = pipeline.write_configs(plan, 8.0)
    for role in ("teacher", "alone", "defeat"):
        cfg = load_config(files[role])
        assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.0 and cfg.SOLVER.MAX_ITER == 5


def _refused(argv, *expected):
    with pytest.raises(SystemExit) as e:
        pipeline.main(argv)
    message = str(e.value)
    assert all(x in message for x in expected), message


def test_bad_input_refused_before_anything_is_written(photos, tmp_path, monkeypatch):
    def checks_passed(*args):
        raise AssertionError("the checks let this input through")

    monkeypatch.setattr(pipeline, "inspect", checks_passed)  # the first step after the checks
    out = tmp_path / "report"
    data = photos["data"]
    train_spec, val_spec = photos["train"], photos["val"]
    name = train_spec.split("=")[0]
    # a missing json
    _refused(["--train", f"{name}x={data}/nope.json", "--val", val_spec, "--output", str(out)], "not found")
    # the validation set is the training set, under another name
    _refused(["--train", train_spec, "--val", "other_" + train_spec, "--output", str(out)], "is the training json")
    # the report folder is an input: the image folder, the json
    _refused(_argv(photos, data / "images"), "image folder of --train")
    _refused(_argv(photos, data / "train.json"), "is the training annotations")
    _refused(_argv(photos, data / "train.json" / "report"), "is a file")
    # a folder that cannot be written
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    _refused(_argv(photos, out), "cannot be written")
    monkeypatch.setattr(os, "access", real_access)
    # a training image that cannot be read (the training-data checks)
    broken = json.load(open(data / "train.json"))
    broken["images"][0]["file_name"] = "missing.jpg"
    json.dump(broken, open(data / "broken.json", "w"))
    spec = f"{name}b={data}/broken.json:{data}/images"
    _refused(["--train", spec, "--val", val_spec, "--output", str(out)], "missing.jpg: file not found")
    # a given teacher of other classes (the demo teacher: 10)
    weights = tmp_path / "teacher.pth"
    weights.write_bytes(b"")
    teacher = ["--teacher-config", "configs/demo/teacher_R18.yaml", "--teacher-weights", str(weights)]
    _refused(_argv(photos, out, *teacher), "3 categories", "NUM_CLASSES")
    # an override that does not exist; one that contradicts the run's schedule (an LR step past its end)
    _refused(_argv(photos, out, "MODEL.NO_SUCH_KEY", "1"), "MODEL.NO_SUCH_KEY")
    _refused(_argv(photos, out, "--iters", "10", "SOLVER.STEPS", "(50,)"), "SOLVER.STEPS", "outside the run")
    assert not out.exists() and not (data / "images" / "configs").exists()
    assert sorted(os.listdir(tmp_path)) == ["data", "teacher.pth"]


def test_gpu_preset_schedule_and_templates():
    """The GPU preset trains the model-zoo templates with its own rule (24 passes, at least 1000
    iterations at the templates' batch 16), its students one after the other."""
    from defeat.config.presets import GPU_EPOCHS, GPU_MIN_ITERS

    preset = PRESETS["gpu"]
    assert (preset.epochs, preset.min_iters, preset.side_by_side) == (GPU_EPOCHS, GPU_MIN_ITERS, False)
    assert (GPU_EPOCHS, GPU_MIN_ITERS) == (24, 1000)
    teacher, student, defeat = (
        load_config(os.path.join(REPO, f)) for f in (preset.teacher, preset.student, preset.defeat)
    )
    assert teacher.MODEL.RESNETS.DEPTH == 101 and student.MODEL.RESNETS.DEPTH == 50
    assert defeat.MODEL.META_ARCHITECTURE == "DeFeatRCNN" and student.MODEL.WEIGHTS.startswith("detectron2://")
    assert (student.SOLVER.IMS_PER_BATCH, student.SOLVER.BASE_LR, student.MODEL.DEVICE) == (16, 0.02, "cuda")
    rule = schedule(5000, 16, 1000, epochs=preset.epochs, min_iters=preset.min_iters)
    assert rule == Schedule(7500, [5625, 6900], 1000)  # ceil(24 * 5000 / 16)
    small = schedule(100, 16, 1000, epochs=preset.epochs, min_iters=preset.min_iters)
    assert small.max_iter == 1000 and small.warmup_iters == 200  # at least 1000; the warm-up a fifth of it
    # the schedule the command writes into the GPU preset's run configs is that rule's
    plan = type("P", (), {"preset": preset, "iters": {}, "num_images": 5000, "opts": []})()
    assert pipeline._schedule_settings(plan, "teacher", preset.teacher) == {
        "SOLVER.MAX_ITER": 7500,
        "SOLVER.STEPS": "(5625, 6900)",
        "SOLVER.WARMUP_ITERS": 1000,
    }
    # the CPU preset's rule is unchanged by the new arguments' defaults
    assert schedule(40, 4, 50) == schedule(40, 4, 50, epochs=36, min_iters=200) == Schedule(360, [270, 331], 50)


def test_gpu_preset_refused_before_anything_is_written_without_cuda_or_weights(photos, tmp_path, monkeypatch):
    """On a machine without CUDA the GPU preset stops at the checks naming MODEL.DEVICE; told to run
    on the CPU but offline with no cached weights, it names the MODEL.WEIGHTS download and how to
    give a local file; nothing is written either time."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("DEFEAT_OFFLINE", "1")
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "empty_cache"))

    def checks_passed(*args):
        raise AssertionError("the checks let this input through")

    monkeypatch.setattr(pipeline, "inspect", checks_passed)
    out = tmp_path / "report"
    _refused(_argv(photos, out, "--preset", "gpu"), "MODEL.DEVICE is 'cuda'", "MODEL.DEVICE cpu")
    _refused(
        _argv(photos, out, "--preset", "gpu", "MODEL.DEVICE", "cpu"),
        "MODEL.WEIGHTS is 'detectron2://",
        "DEFEAT_OFFLINE is set",
        "MODEL.WEIGHTS /path/to/",
    )
    assert not out.exists() and not (tmp_path / "empty_cache").exists()


def test_gpu_preset_students_train_one_after_the_other(monkeypatch):
    """run_parallel gets one worker for the GPU preset's students, two for the CPU presets'."""
    seen = []
    monkeypatch.setattr(pipeline, "run_parallel", lambda jobs, workers: seen.append(workers))
    monkeypatch.setattr(pipeline, "read_stamp", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "max_iter", lambda f: 10)
    monkeypatch.setattr(pipeline, "_digest", lambda plan, f, extra="": "d")
    monkeypatch.setattr(pipeline, "file_digest", lambda f: "w")
    import defeat.analysis.run_summary as run_summary

    monkeypatch.setattr(run_summary, "read_run", lambda *a: None)
    for name, workers in (("gpu", 1), ("cpu", 2)):
        plan = type("P", (), {"preset": PRESETS[name], "run_dir": staticmethod(lambda role: f"/x/{role}")})()
        teacher = type("T", (), {"weights": "t.pth", "pending": None})()
        pipeline._students(plan, {"alone": "a.yaml", "defeat": "d.yaml"}, ["alone", "defeat"], teacher)
        assert seen[-1] == workers


@pytest.mark.heavy(seconds=360)
def test_report_end_to_end_and_reuse(photos, tmp_path, capsys):
    out = tmp_path / "report"
    # one iteration per run; every detection kept, so that each class has an AP
    argv = _argv(photos, out, "--iters", "1", "--pictures", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    summary = pipeline.main(argv)
    printed = capsys.readouterr().out
    assert "[checks]" in printed and "total eta" in printed
    names = sorted(CATEGORIES)
    assert sorted(summary["per_class"]) == names
    saved = json.load(open(out / "summary.json"))
    assert sorted(saved["per_class"]) == names and len(saved["rows"]) == 4  # three runs and the gain
    table = (out / "summary.md").read_text()
    assert "| model | AP |" in table and all(f"| {n} |" in table for n in names)
    classes = json.load(open(out / "classes.json"))
    assert [(c["name"], c["category_id"]) for c in classes] == sorted(CATEGORIES.items(), key=lambda kv: kv[1])
    assert "SCALE_BASE used" in (out / "inspect.txt").read_text() and (out / "inspect.png").is_file()
    defeat_cfg = load_config(str(out / "configs" / "defeat.yaml"))
    assert defeat_cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3 and defeat_cfg.SOLVER.MAX_ITER == 1
    student = torch.load(out / "student.pth", map_location="cpu")
    assert set(student) == {"model", "classes"} and not any(k.startswith("distiller.") for k in student["model"])
    assert student["classes"]["category_ids"] == [CATEGORIES[n] for n in names]
    extra = {"defeat_trace.json": ""}
    traced = torch.jit.load(str(out / "student.ts"), _extra_files=extra)
    info = json.loads(extra["defeat_trace.json"])
    assert traced is not None and info["architecture"] == "GeneralizedRCNN"
    assert info["classes"] == names and info["category_ids"] == [CATEGORIES[n] for n in names]
    pictures = sorted(p for p in os.listdir(out / "predictions") if p.endswith(".png"))
    assert len(pictures) == 2 and (out / "predictions" / "predictions.json").is_file()
    readme = (out / "README.md").read_text()
    assert "--eval-only MODEL.WEIGHTS" in readme and "torch.jit.load" in readme and "| cat |" in readme

    runs = {r: out / "runs" / d / "model_final.pth" for r, d in pipeline.RUN_DIRS.items()}
    mtimes = {r: os.path.getmtime(p) for r, p in runs.items()}
    table_json = (out / "summary.json").read_text()
    pipeline.main(argv)
    printed = capsys.readouterr().out
    assert all(f"[{role}] reusing the finished run" in printed for role in pipeline.ROLES), printed
    assert {r: os.path.getmtime(p) for r, p in runs.items()} == mtimes
    assert (out / "summary.json").read_text() == table_json

    # a teacher trained elsewhere (this one), evaluated here; no student alone
    given = tmp_path / "given"
    teacher = ["--teacher-config", str(out / "configs" / "teacher.yaml"), "--teacher-weights", str(runs["teacher"])]
    summary = pipeline.main(_argv(photos, given, *teacher, *argv[6:], "--no-alone"))
    printed = capsys.readouterr().out
    assert "[teacher] evaluating weights" in printed and "[alone]" not in printed
    assert sorted(summary["rows"]) == ["student + DeFeat", "teacher"] and sorted(summary["per_class"]) == names
    assert not (given / "runs" / "teacher" / "model_final.pth").exists() and (given / "student.ts").is_file()
    assert load_config(str(given / "configs" / "defeat.yaml")).MODEL.DEFEAT.TEACHER.WEIGHTS == str(runs["teacher"])
