"""``python -m defeat demo`` (``python -m defeat run`` with a demo preset) end to end on a tiny
embedded dataset, the teachers reused or trained again on later runs, and its parts."""

import json
import math
import os

import pytest
import torch

from defeat.config.presets import PRESETS
from defeat.demo import runner as demo
from defeat.demo.data import CLASS_NAMES
from defeat.demo.experiments import METRICS, format_table, read_box_metrics
from defeat.demo.pipeline import STAMP


def _stop_before_the_students(monkeypatch):
    """From here on the demo stops once its teachers are ready (``Stop``): a run that only checks
    what is reused or trained again."""
    from defeat.demo import pipeline

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(pipeline, "_students", stop)


class Stop(Exception):
    pass


def _tamper_stamp(folder, metrics):
    """Replace the metrics that the run stamp in ``folder`` records."""
    stamp = folder / STAMP
    saved = json.load(open(stamp))
    saved["metrics"] = metrics
    json.dump(saved, open(stamp, "w"))
    return saved


@pytest.mark.heavy(seconds=200)
def test_demo_smoke_and_teacher_reuse(tmp_path, monkeypatch, capsys, demo_data):
    out = tmp_path / "demo"
    # every detection kept, so that each class has an AP after two iterations
    args = [
        "--output",
        str(out),
        "--teacher-iters",
        "2",
        "--student-iters",
        "2",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0",
    ]
    summary = demo.main(args)
    rows = summary["rows"]
    names = [n for n in rows if not n.startswith("gain")]
    labels = PRESETS["demo"].labels
    assert names == [labels[r].format(iters=2) for r in ("teacher", "alone", "defeat")]
    assert all(set(rows[n]) == set(METRICS) for n in names)
    gain = rows["gain (DeFeat - alone)"]
    student, kd = (rows[n] for n in names[1:])
    assert gain["AP"] == kd["AP"] - student["AP"] or math.isnan(gain["AP"])
    assert json.load(open(out / "summary.json"))["rows"].keys() == rows.keys()
    table = (out / "summary.md").read_text()
    assert "| model | AP | AP50 | AP75 | APs | APm | APl |" in table
    # the report of python -m defeat run: per class (the teacher's from its evaluation's log), the
    # configs, the exported and traced student, the pictures
    assert sorted(summary["per_class"]) == sorted(CLASS_NAMES)
    for path in ("inspect.txt", "configs/teacher.yaml", "student.pth", "student.ts", "README.md", "classes.json"):
        assert (out / path).is_file(), path
    assert "SCALE_BASE used: 8.0 (the config's, preset demo)" in (out / "inspect.txt").read_text()
    assert (out / "predictions" / "predictions.json").is_file()
    printed = capsys.readouterr().out
    assert "total eta" in printed and "[students]" in printed and "[precision]" in printed
    assert "(2 iterations, 2 processes)" in printed  # the teacher trains data-parallel by default
    teacher_dir = out / "runs" / "teacher"
    assert "World size: 2" in (teacher_dir / "log_stdout.txt").read_text()
    # the saved weights, not the two processes' mixed end-of-training AP, evaluated once, beside
    # the students (after the first to finish): the data-parallel training itself runs no evaluation
    assert f"{teacher_dir / 'model_final.pth'} evaluated: AP" in printed
    assert printed.index("the teacher's evaluation follows") < printed.index("evaluated: AP")
    assert "copypaste" not in (teacher_dir / "log_stdout.txt").read_text()
    assert "copypaste" in (teacher_dir / "eval" / "log_eval.txt").read_text()
    # that one evaluation is recorded as the run's last, for the teacher line of later DeFeat logs
    teacher_ap = rows[names[0]]["AP"]
    assert read_box_metrics(str(teacher_dir))["AP"] == pytest.approx(teacher_ap, nan_ok=True)
    defeat_log = (out / "runs" / "student_defeat" / "log_stdout.txt").read_text()
    assert "its AP is unknown here" in defeat_log  # this student started before the evaluation
    assert "saved weights evaluated on the validation set after training, beside the students" in table

    teacher_file = teacher_dir / "model_final.pth"
    mtime = os.path.getmtime(teacher_file)
    trained = json.load(open(teacher_dir / STAMP))["metrics"]
    _tamper_stamp(teacher_dir, dict(trained, AP=99.0))  # a stale record: the cached teacher must be measured
    # the cache serves either precision; other students' iterations train them again
    args += ["--precision", "fp32", "--student-iters", "3"]
    again = demo.main(args)
    printed = capsys.readouterr().out
    assert "[teacher] reusing" in printed and "[precision] fp32 (--precision fp32)" in printed
    assert os.path.getmtime(teacher_file) == mtime
    assert again["rows"][labels["teacher"].format(iters=2)]["AP"] == pytest.approx(teacher_ap, abs=1e-6, nan_ok=True)
    assert "evaluated on the validation set again, beside the students" in (out / "summary.md").read_text()
    defeat_log = (out / "runs" / "student_defeat" / "log_stdout.txt").read_text()
    assert f": box AP {teacher_ap:.2f} as its training run evaluated these weights" in defeat_log
    assert f"weights {teacher_file}" in (out / "summary.md").read_text()
    measured = json.load(open(teacher_dir / STAMP))["metrics"]["AP"]
    assert measured == pytest.approx(teacher_ap, abs=1e-6, nan_ok=True)  # measured, kept
    # the students of this run are reused from here on: the last two runs check the teacher's record
    _tamper_stamp(teacher_dir, dict(trained, AP=99.0))
    recorded = demo.main(args + ["--no-eval-teacher"])
    assert recorded["rows"][names[0]]["AP"] == 99.0
    assert "not evaluated again" in (out / "summary.md").read_text()
    assert "[students]" not in capsys.readouterr().out
    # a teacher whose evaluation was cut short (trained, stamp without metrics) is evaluated, never believed
    _tamper_stamp(teacher_dir, None)
    cut_short = demo.main(args + ["--no-eval-teacher"])
    assert cut_short["rows"][names[0]]["AP"] == pytest.approx(teacher_ap, abs=1e-6, nan_ok=True)
    assert os.path.getmtime(teacher_file) == mtime


def test_run_parallel_runs_callables_when_a_worker_frees_up(monkeypatch):
    from defeat.demo import experiments

    started = []

    def fake_run_job(config_file, threads=None, **kw):
        started.append((config_file, threads))
        return {"AP": float(len(config_file))}

    monkeypatch.setattr(experiments, "run_job", fake_run_job)
    got = experiments.run_parallel(
        [dict(config_file="a"), dict(config_file="bb"), lambda threads: started.append(("eval", threads)) or 7],
        workers=1,
    )
    assert got == [{"AP": 1.0}, {"AP": 2.0}, 7]
    assert started == [("a", None), ("bb", None), ("eval", None)]  # in order, one worker
    started.clear()
    experiments.run_parallel([dict(config_file="a"), lambda threads: started.append(("eval", threads))], workers=2)
    assert sorted(started, key=str) == [("a", 1), ("eval", 1)]  # one thread each when side by side


def test_precision_and_the_teacher_cache(monkeypatch, tmp_path):
    """``--precision`` (the preset's by default) sets SOLVER.AMP.ENABLED of every run; the
    teacher's cache key leaves it out, and counts the bytes of the weights it starts from."""
    from defeat.demo import pipeline

    args = pipeline.parse_args(["--preset", "demo", "--output", str(tmp_path / "o")])
    monkeypatch.setattr(pipeline, "cpu_bf16_supported", lambda: False)
    assert pipeline.run_options(args, PRESETS["demo"])["amp"] is False
    monkeypatch.setattr(pipeline, "cpu_bf16_supported", lambda: True)
    assert pipeline.run_options(args, PRESETS["demo"])["amp"] is True  # auto, the demo's
    assert pipeline.run_options(args, PRESETS["cpu"])["amp"] is False  # fp32, the cpu preset's
    for precision, amp in (("fp32", False), ("bf16", True)):
        args.precision = precision
        assert pipeline.run_options(args, PRESETS["demo"])["amp"] is amp
    plan = pipeline.Plan(*[None] * 9, data_digest="d")
    start = tmp_path / "start.pth"
    start.write_bytes(b"a")
    configs = {}
    for name, extra in [("a", ""), ("b", "SOLVER:\n  AMP:\n    ENABLED: True\n"), ("c", "SEED: 1\n")]:
        configs[name] = tmp_path / f"{name}.yaml"
        text = f'_BASE_: "{os.path.abspath("configs/demo/teacher_R18.yaml")}"\nMODEL:\n  WEIGHTS: "{start}"\n'
        configs[name].write_text(text + extra)
    digest = {name: pipeline.teacher_digest(plan, str(path)) for name, path in configs.items()}
    assert digest["a"] == digest["b"] != digest["c"]
    start.write_bytes(b"b")
    assert pipeline.teacher_digest(plan, str(configs["a"])) != digest["a"]


def test_own_schedule_written_as_the_loader_scales_it(tmp_path):
    """A preset that keeps its configs' schedules writes a changed length as the loader would scale
    a ``SOLVER.MAX_ITER`` override of the file: LR steps, LR warm-up and the KD warm-up."""
    from dataclasses import replace

    from defeat.config.files import load_config
    from defeat.demo import pipeline

    defeat = tmp_path / "defeat.yaml"  # a DeFeat config with a KD warm-up to scale
    defeat.write_text(
        f'_BASE_: "{os.path.abspath(PRESETS["demo"].defeat)}"\nMODEL:\n  DEFEAT:\n    WARMUP_ITERS: 100\n'
    )
    preset = replace(PRESETS["demo"], defeat=str(defeat))
    plan = pipeline.Plan(*[None] * 7, preset=preset, opts=[], iters={"defeat": 250, "teacher": None})
    written = tmp_path / "written.yaml"
    written.write_text(pipeline._yaml_config(str(defeat), pipeline._schedule_settings(plan, "defeat", str(defeat))))
    got, want = load_config(str(written)), load_config(str(defeat), ["SOLVER.MAX_ITER", "250"])
    for key in ("SOLVER.MAX_ITER", "SOLVER.STEPS", "SOLVER.WARMUP_ITERS", "MODEL.DEFEAT.WARMUP_ITERS"):
        node_got, node_want = got, want
        for part in key.split("."):
            node_got, node_want = node_got[part], node_want[part]
        assert node_got == node_want, key
    assert want.MODEL.DEFEAT.WARMUP_ITERS == 50 and tuple(want.SOLVER.STEPS) == (187, 225)  # scaled by 1/2
    assert pipeline._schedule_settings(plan, "teacher", PRESETS["demo"].teacher) == {}  # the file's own


def test_demo_arguments_are_those_of_run(tmp_path):
    """The demo front maps its family and folder to python -m defeat run's preset, report and
    starting teacher; every other option passes as it is."""
    assert demo.run_argv([]) == ["--preset", "demo", "--output", "output/demo"]
    assert demo.run_argv(["--teacher-iters", "5", "--output", "o", "--no-eval-teacher"]) == [
        *("--preset", "demo", "--output", "o", "--teacher-iters", "5", "--no-eval-teacher"),
    ]
    assert demo.run_argv(["--family", "retinanet", "--output", "o", "--precision", "fp32"]) == [
        *("--preset", "demo-retinanet", "--output", "o/retinanet", "--init-teacher-run", "o/runs/teacher"),
        *("--precision", "fp32"),
    ]


def test_demo_configs_name_the_runs_of_the_demo():
    """Trained on their own (``train_net.py --config-file configs/demo/...``), the configs of the demo
    presets write where ``make demo`` / ``make demo-retinanet`` train the same runs, and read their
    teachers (and the RetinaNet teacher its starting weights) from there."""
    from defeat.config.files import load_config
    from defeat.demo.pipeline import RUN_DIRS

    for family, name in demo.FAMILIES.items():
        preset = PRESETS[name]
        argv = demo.run_argv(["--family", family])
        report = argv[argv.index("--output") + 1]
        files = dict(zip(("teacher", "alone", "defeat"), (preset.teacher, preset.student, preset.defeat)))
        cfgs = {role: load_config(f) for role, f in files.items()}
        for role, cfg in cfgs.items():
            assert os.path.normpath(cfg.OUTPUT_DIR) == os.path.join(report, "runs", RUN_DIRS[role])
        teacher = cfgs["defeat"].MODEL.DEFEAT.TEACHER
        assert os.path.normpath(teacher.WEIGHTS) == os.path.join(report, "runs", "teacher", "model_final.pth")
        assert os.path.realpath(teacher.CONFIG_FILE) == os.path.realpath(preset.teacher)
        if preset.init_teacher:
            start = argv[argv.index("--init-teacher-run") + 1]
            assert os.path.normpath(cfgs["teacher"].MODEL.WEIGHTS) == os.path.join(start, "model_final.pth")
            assert start == os.path.join(demo.run_argv([])[3], "runs", RUN_DIRS["teacher"])


def test_teacher_processes_must_be_positive(tmp_path, capsys):
    from defeat.demo.experiments import run_job

    with pytest.raises(SystemExit):
        demo.main(["--output", str(tmp_path / "demo"), "--teacher-processes", "0"])
    assert "--teacher-processes: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="processes must be >= 1, got 0"):
        run_job("configs/demo/teacher_R18.yaml", str(tmp_path / "t"), processes=0)
    with pytest.raises(ValueError, match="evaluate=False needs a YAML config; .*slimR18.py is a LazyConfig"):
        run_job("configs/lazy/demo_student_slimR18.py", str(tmp_path / "t"), evaluate=False)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "t").exists()


@pytest.mark.heavy(seconds=200)
def test_retinanet_demo_smoke(tmp_path, monkeypatch, capsys, demo_data):
    out = tmp_path / "demo"
    args = ["--family", "retinanet", "--output", str(out), "--teacher-iters", "2", "--student-iters", "2"]
    summary = demo.main(args + ["--teacher-processes", "1"])
    labels = PRESETS["demo-retinanet"].labels
    assert list(summary["rows"])[:3] == [labels[r].format(iters=2) for r in ("teacher", "alone", "defeat")]
    report = out / "retinanet"
    assert (report / "runs" / "teacher" / "model_final.pth").is_file()
    assert (report / "runs" / "student_defeat" / "model_final.pth").is_file()
    assert json.load(open(report / "summary.json"))["rows"].keys() == summary["rows"].keys()
    assert (report / "student.ts").is_file() and (report / "README.md").is_file()
    teacher_log = (report / "runs" / "teacher" / "log_stdout.txt").read_text()
    assert "World size: 1" in teacher_log
    # the RetinaNet teacher starts from the Faster R-CNN demo teacher (make demo's), trained first
    init = out / "runs" / "teacher" / "model_final.pth"
    assert f"Loading from {init} ..." in teacher_log
    printed = capsys.readouterr().out
    assert printed.index("[init] ") < printed.index("[teacher] ")
    assert "[init] reusing" not in printed and f"[init] {report / 'configs' / 'init_teacher.yaml'}" in printed
    # both are reused by a second run; other starting weights retrain the RetinaNet teacher
    again_args = args + ["--teacher-processes", "1", "--no-eval-teacher"]
    _stop_before_the_students(monkeypatch)  # the later runs check what is reused or retrained
    with pytest.raises(Stop):
        demo.main(again_args)
    printed = capsys.readouterr().out
    assert "[init] reusing" in printed and "[teacher] reusing" in printed
    state = torch.load(init, map_location="cpu", weights_only=False)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = state["model"][first] + 1.0
    torch.save(state, init)
    with pytest.raises(Stop):
        demo.main(again_args)
    printed = capsys.readouterr().out
    assert "[init] reusing" in printed and f"[teacher] {report / 'configs' / 'teacher.yaml'}" in printed


def test_read_box_metrics_takes_the_last_evaluation(tmp_path):
    rows = [
        {"iteration": 1, "loss": 1.0},
        {"iteration": 2, **{f"bbox/{k}": 1.0 for k in METRICS}},
        {"iteration": 3, **{f"bbox/{k}": float(i) for i, k in enumerate(METRICS)}},
    ]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_box_metrics(str(tmp_path)) == {k: float(i) for i, k in enumerate(METRICS)}


def test_format_table_signs_gains():
    table = format_table({"a": dict.fromkeys(METRICS, 10.0), "gain (x)": dict.fromkeys(METRICS, 1.5)})
    assert "| a | 10.00 |" in table and "| gain (x) | +1.50 |" in table


def test_evaluate_job_evaluates_the_given_weights(monkeypatch, tmp_path):
    """The weights to evaluate win over a MODEL.WEIGHTS in the run's overrides (the weights a
    teacher started from): the RetinaNet teacher's evaluation once read its starting weights."""
    from defeat.demo import experiments

    seen = []

    def fake_run(script, config_file, args, output_dir, log_name, threads=None, on_progress=None):
        seen.append(list(args))
        return ["copypaste: Task: bbox\n", "copypaste: " + ",".join(METRICS) + "\n", "copypaste: 1,2,3,4,5,6\n"]

    monkeypatch.setattr(experiments, "_run_script", fake_run)
    opts = ["MODEL.WEIGHTS", "start.pth", "SOLVER.MAX_ITER", "2"]
    got = experiments.evaluate_job("configs/demo/retinanet_teacher_R18.yaml", "final.pth", str(tmp_path), opts)
    args = seen[0]
    assert args[len(args) - 1 - args[::-1].index("MODEL.WEIGHTS") + 1] == "final.pth"  # the last one wins
    assert got == dict(zip(METRICS, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))


@pytest.mark.parametrize("num_classes", [1, 3, 4, 7])
def test_eval_output_per_class_table(num_classes):
    """The AP per class of an ``--eval-only`` log: the table COCOEvaluator logs, as Detectron2
    builds it (``tabulate``, up to three category/AP pairs a row), read back to three decimals."""
    import itertools

    from tabulate import tabulate

    from defeat.demo.experiments import PER_CATEGORY, read_eval_output

    aps = {f"class {i}": (float("nan") if i == 2 else 10.0 * i + 0.1234) for i in range(num_classes)}
    n_cols = min(6, len(aps) * 2)
    flat = list(itertools.chain(*aps.items()))
    rows = itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)])
    table = tabulate(rows, tablefmt="pipe", floatfmt=".3f", headers=["category", "AP"] * (n_cols // 2), numalign="left")
    lines = [
        f"[12/07 22:58:36 d2.evaluation.coco_evaluation]: {PER_CATEGORY} \n",
        *(line + "\n" for line in table.splitlines()),
        "[12/07 22:58:36 d2.evaluation.testing]: copypaste: Task: bbox\n",
        "[12/07 22:58:36 d2.evaluation.testing]: copypaste: " + ",".join(METRICS) + "\n",
        "[12/07 22:58:36 d2.evaluation.testing]: copypaste: 1,2,3,4,5,6\n",
    ]
    got = read_eval_output(lines)
    assert {k: got[k] for k in METRICS} == dict(zip(METRICS, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    per_class = {k[3:]: v for k, v in got.items() if k.startswith("AP-")}
    assert list(per_class) == list(aps)
    for name, ap in aps.items():
        assert per_class[name] == pytest.approx(round(ap, 3), nan_ok=True)
    assert read_eval_output(lines[-3:]) == {k: got[k] for k in METRICS}  # no table: the metrics alone


def test_init_teacher_eta_counts_the_later_teacher(monkeypatch, tmp_path, demo_data):
    """While the init teacher trains, the total ETA includes the family's teacher and the students."""
    from defeat.demo import pipeline

    calls = []

    def fake_ensure(plan, role, config, later_s, defer):
        calls.append((role, later_s))
        return pipeline.Teacher(str(tmp_path / "t.pth"), "note", lambda: None)

    monkeypatch.setattr(pipeline, "ensure_teacher", fake_ensure)
    _stop_before_the_students(monkeypatch)
    with pytest.raises(Stop):
        demo.main(["--family", "retinanet", "--output", str(tmp_path), "--teacher-iters", "7", "--student-iters", "3"])
    teacher_s, students_s = PRESETS["demo-retinanet"].s_per_iter
    assert calls == [("init", pytest.approx(7 * teacher_s + 3 * students_s)), ("teacher", 3 * students_s)]
