"""`python -m defeat.demo` end to end on a tiny dataset, and the teacher cache on a second run."""

import json
import os

import pytest
import torch

from defeat.demo import runner as demo
from defeat.demo.experiments import METRICS, format_table, read_box_metrics


def _fake_students(monkeypatch):
    """From here on the demo's students (``run_parallel``'s jobs) return AP 1 without training;
    the teachers still train and evaluate for real (``runner`` calls them directly)."""
    from defeat.demo import experiments

    monkeypatch.setattr(experiments, "run_job", lambda *a, **k: dict.fromkeys(METRICS, 1.0))


@pytest.mark.heavy(seconds=120)
def test_demo_smoke_and_teacher_reuse(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "16")
    monkeypatch.setenv("DEFEAT_DEMO_NUM_VAL", "6")
    out = tmp_path / "demo"
    args = ["--output", str(out), "--teacher-iters", "2", "--student-iters", "2"]
    results = demo.main(args)
    names = [n for n in results if not n.startswith("gain")]
    assert len(names) == 3 and all(set(results[n]) == set(METRICS) for n in names)
    gain = results["gain (DeFeat - alone)"]
    student, kd = (results[n] for n in names[1:])
    assert gain["AP"] == kd["AP"] - student["AP"]
    saved = json.load(open(out / "results.json"))
    assert saved["results"].keys() == results.keys()
    assert "| model | AP | AP50 | AP75 | APs | APm | APl |" in (out / "results.md").read_text()
    printed = capsys.readouterr().out
    assert "total eta" in printed and "[students] side by side" in printed
    assert "(2 iterations, 2 processes)" in printed  # the teacher trains data-parallel by default
    assert "World size: 2" in (out / "teacher_R18" / "log_stdout.txt").read_text()
    # the saved weights, not the two processes' mixed end-of-training AP, evaluated once, beside
    # the students (after the first to finish): the data-parallel training itself runs no evaluation
    assert f"{out / 'teacher_R18' / 'model_final.pth'} evaluated: AP" in printed
    assert printed.index("the teacher's evaluation follows") < printed.index("evaluated: AP")
    assert "copypaste" not in (out / "teacher_R18" / "log_stdout.txt").read_text()
    assert "copypaste" in (out / "teacher_R18" / "eval" / "log_eval.txt").read_text()
    # that one evaluation is recorded as the run's last, for the teacher line of later DeFeat logs
    teacher_ap = results[names[0]]["AP"]
    assert read_box_metrics(str(out / "teacher_R18"))["AP"] == pytest.approx(teacher_ap)
    defeat_log = (out / "defeat_slimR18_from_R18" / "log_stdout.txt").read_text()
    assert "its AP is unknown here" in defeat_log  # this student started before the evaluation
    assert (
        "saved weights evaluated on the test set after training, beside the students"
        in (out / "results.md").read_text()
    )

    teacher_file = out / "teacher_R18" / "model_final.pth"
    mtime = os.path.getmtime(teacher_file)
    trained_ap = results[names[0]]["AP"]
    stamp = out / "teacher_R18" / "defeat_demo_teacher.json"
    saved = json.load(open(stamp))
    saved["metrics"]["AP"] = 99.0  # a stale record: the cached teacher must be measured, not believed
    json.dump(saved, open(stamp, "w"))
    again = demo.main(args + ["--precision", "fp32"])  # the cache serves either precision
    printed = capsys.readouterr().out
    assert "[teacher] reusing" in printed and "[demo] precision: fp32 (--precision fp32)" in printed
    assert os.path.getmtime(teacher_file) == mtime
    assert again[names[0]]["AP"] == pytest.approx(trained_ap, abs=1e-6)  # same weights, same test set
    assert "evaluated on the test set beside the students" in (out / "results.md").read_text()
    defeat_log = (out / "defeat_slimR18_from_R18" / "log_stdout.txt").read_text()
    assert f": box AP {teacher_ap:.2f} as its training run evaluated these weights" in defeat_log
    assert f"weights {teacher_file}" in (out / "results.md").read_text()
    assert json.load(open(stamp))["metrics"]["AP"] == pytest.approx(trained_ap, abs=1e-6)  # measured, kept
    _fake_students(monkeypatch)  # the last two runs check the teacher's record only
    saved["metrics"]["AP"] = 99.0
    json.dump(saved, open(stamp, "w"))
    recorded = demo.main(args + ["--no-eval-teacher"])
    assert recorded[names[0]]["AP"] == 99.0
    assert "not evaluated again" in (out / "results.md").read_text()
    # a teacher whose evaluation was cut short (trained, stamp without metrics) is evaluated, never believed
    saved["metrics"] = None
    json.dump(saved, open(stamp, "w"))
    cut_short = demo.main(args + ["--no-eval-teacher"])
    assert cut_short[names[0]]["AP"] == pytest.approx(trained_ap, abs=1e-6)
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


def test_precision_options(monkeypatch):
    assert demo.precision_opts("fp32") == [] and demo.precision_opts("bf16") == ["SOLVER.AMP.ENABLED", "True"]
    monkeypatch.setattr(demo, "cpu_bf16_supported", lambda: False)
    assert demo.precision_opts("auto") == []
    monkeypatch.setattr(demo, "cpu_bf16_supported", lambda: True)
    assert demo.precision_opts("auto") == ["SOLVER.AMP.ENABLED", "True"]
    opts = ["SOLVER.MAX_ITER", "5", "SOLVER.AMP.ENABLED", "True", "MODEL.X", "True"]
    assert demo._without_precision(opts) == ["SOLVER.MAX_ITER", "5", "MODEL.X", "True"]


def test_teacher_processes_must_be_positive(tmp_path, capsys):
    from defeat.demo.experiments import run_job

    with pytest.raises(SystemExit):
        demo.main(["--output", str(tmp_path / "demo"), "--teacher-processes", "0"])
    assert "--teacher-processes must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="processes must be >= 1, got 0"):
        run_job("configs/demo/teacher_R18.yaml", str(tmp_path / "t"), processes=0)
    with pytest.raises(ValueError, match="evaluate=False needs a YAML config; .*slimR18.py is a LazyConfig"):
        run_job("configs/lazy/demo_student_slimR18.py", str(tmp_path / "t"), evaluate=False)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "t").exists()


@pytest.mark.heavy(seconds=80)
def test_retinanet_demo_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "16")
    monkeypatch.setenv("DEFEAT_DEMO_NUM_VAL", "6")
    out = tmp_path / "demo"
    args = ["--family", "retinanet", "--output", str(out), "--teacher-iters", "2", "--student-iters", "2"]
    results = demo.main(args + ["--teacher-processes", "1"])
    assert list(results)[:3] == [run[0] for run in demo.SUITES["retinanet"]]
    assert (out / "retinanet_teacher_R18" / "model_final.pth").is_file()
    assert (out / "defeat_retinanet_slimR18_from_R18" / "model_final.pth").is_file()
    saved = json.load(open(out / "results_retinanet.json"))
    assert saved["results"].keys() == results.keys()
    assert "DeFeat demo (RetinaNet)" in (out / "results_retinanet.md").read_text()
    teacher_log = (out / "retinanet_teacher_R18" / "log_stdout.txt").read_text()
    assert "World size: 1" in teacher_log
    # the RetinaNet teacher starts from the Faster R-CNN demo teacher, trained first
    init = out / "teacher_R18" / "model_final.pth"
    assert f"Loading from {init} ..." in teacher_log
    printed = capsys.readouterr().out
    assert printed.index("[init] teacher R18-FPN") < printed.index("[teacher] RetinaNet teacher R18-FPN")
    # both are reused by a second run; other starting weights retrain the RetinaNet teacher
    again_args = args + ["--teacher-processes", "1", "--no-eval-teacher", "--student-iters", "1"]
    _fake_students(monkeypatch)  # the later runs check what is reused or retrained
    demo.main(again_args)
    printed = capsys.readouterr().out
    assert "[init] reusing" in printed and "[teacher] reusing" in printed
    state = torch.load(init, map_location="cpu", weights_only=False)
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = state["model"][first] + 1.0
    torch.save(state, init)
    demo.main(again_args)
    printed = capsys.readouterr().out
    assert "[init] reusing" in printed and "[teacher] RetinaNet teacher R18-FPN" in printed


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


def test_init_teacher_eta_counts_the_later_teacher(monkeypatch, tmp_path):
    """While the init teacher trains, the total ETA includes the family's teacher and the students."""
    calls = []
    init_weights = tmp_path / "init.pth"
    init_weights.write_bytes(b"weights")

    def fake_ensure(run, opts, args, later_s, stage, *a, **k):
        calls.append((stage, later_s))
        return {"AP": 1.0}, str(init_weights), "note", None

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(demo, "_ensure_teacher", fake_ensure)
    monkeypatch.setattr(demo, "run_parallel", stop)
    with pytest.raises(Stop):
        demo.main(["--family", "retinanet", "--output", str(tmp_path), "--teacher-iters", "7", "--student-iters", "3"])
    prior = demo.PRIOR_S_PER_ITER["retinanet"]
    students_s = 3 * prior["students"]
    assert calls == [("init", pytest.approx(7 * prior["teacher"] + students_s)), ("teacher", students_s)]
