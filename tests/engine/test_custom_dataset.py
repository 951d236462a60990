"""docs/custom_dataset.md end to end, as a user runs it: a COCO dataset written as plain files and
named only with --dataset (no registration code), each step a subprocess of the documented command."""

import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from coco_files import CLASSES, write_coco
from helpers import CONFIGS, REPO

# 2 iterations, as benchmarks/accuracy.py --iters 2 --opts SOLVER.WARMUP_ITERS 1 sets them (so it can
# reuse the student run): the loader scales the config's LR steps to the 2 iterations either way.
ITERS = ["SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SEED", "0"]


def _config(path, base, extra=""):
    """A user's own config: a tiny model of the test suite, 2 classes, their dataset names."""
    path.write_text(
        f'_BASE_: "{base}"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 2\n    SCORE_THRESH_TEST: 0.0\n{extra}'
        'DATASETS:\n  TRAIN: ("shapes_train",)\n  TEST: ("shapes_val",)\n'
    )
    return str(path)


def _start(*argv, env=None):
    """Start one documented command (a subprocess, as a user runs it)."""
    cmd = [sys.executable, *[str(a) for a in argv]]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return cmd, proc, time.time()


def _wait(*started):
    """Wait for commands started side by side (independent steps); their outputs, in order."""
    texts = []
    for cmd, proc, t0 in started:
        text, _ = proc.communicate(timeout=300)
        print(f"{time.time() - t0:5.1f}s {cmd[1]}")
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{text[-6000:]}"
        texts.append(text)
    return texts if len(texts) > 1 else texts[0]


def documented_commands(section, script):
    """The ``script`` commands of the first ``bash`` block of ``section`` (its heading's start, e.g.
    ``"## 10."``) of docs/custom_dataset.md, each as its argument list with the block's variables
    (``NAME="..."`` lines) expanded: the commands exactly as a user copies them."""
    text = open(os.path.join(REPO, "docs", "custom_dataset.md")).read()
    part = text[text.index(f"\n{section} ") :]
    block = part[part.index("```bash\n") + 8 :]
    block = block[: block.index("```")].replace("\\\n", " ")
    variables, commands = {}, []
    for line in block.splitlines():
        m = re.fullmatch(r'(\w+)="(.*)"', line.strip())
        if m:
            variables[m.group(1)] = m.group(2)
            continue
        line = re.sub(r"\$(\w+)", lambda v: variables[v.group(1)], line)
        words = shlex.split(line)
        if len(words) > 1 and words[0] == ".venv/bin/python" and words[1] == script:
            commands.append(words[1:])
    return commands


def _as_tested(words, replacements):
    """A documented command with its paths (configs, files, output folders) replaced by the test's."""
    out = []
    for word in words:
        for old, new in replacements.items():
            word = word.replace(old, new)
        out.append(word)
    return out


def _box_ap(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    return [r["bbox/AP"] for r in rows if "bbox/AP" in r]


@pytest.mark.heavy(seconds=165)
def test_walkthrough_on_a_coco_dataset_of_plain_files(tmp_path):
    data, cfgs, out = tmp_path / "data", tmp_path / "configs", tmp_path / "out"
    cfgs.mkdir()
    train_json, images = write_coco(str(data), num_images=8, json_name="train.json")
    val_json, _ = write_coco(str(data), num_images=3, json_name="val.json", seed=1)  # same images/ folder
    datasets = ["--dataset", f"shapes_train={train_json}:{images}", "--dataset", f"shapes_val={val_json}:{images}"]
    teacher = _config(cfgs / "teacher.yaml", f"{CONFIGS}/tiny_teacher.yaml")
    student = _config(cfgs / "student.yaml", f"{CONFIGS}/tiny_base.yaml")
    # The teacher is named relative to this file (not to the working directory).
    defeat = _config(
        cfgs / "defeat.yaml",
        f"{CONFIGS}/tiny_defeat.yaml",
        '  DEFEAT:\n    TEACHER:\n      CONFIG_FILE: "teacher.yaml"\n',
    )
    env = {k: v for k, v in os.environ.items() if k != "DEFEAT_COCO_DATASETS"}
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path (gloo) of the two-process teacher, on any machine

    # Steps that do not depend on each other run side by side (the order a user follows is 1-8).
    # 1. Inspect: classes, sizes, levels, SCALE_BASE.
    inspect = _start(
        "tools/inspect_dataset.py", "--config-file", defeat, *datasets[:2], "--output", out / "inspect.png", env=env
    )
    # 2. Teacher (two processes on CPU: each DDP worker registers the datasets itself).
    gpus = ["--num-gpus", "2"]
    teacher_run = _start(
        "train_net.py", "--config-file", teacher, *gpus, *datasets, *ITERS, "OUTPUT_DIR", out / "teacher", env=env
    )
    # 3. The student alone (where step 7 finds it).
    baseline = out / "bench" / "baseline_seed0"
    student_run = _start("train_net.py", "--config-file", student, *datasets, *ITERS, "OUTPUT_DIR", baseline, env=env)
    text, _, _ = _wait(inspect, teacher_run, student_run)
    assert "dataset shapes_train: 8 images" in text and "suggested SCALE_BASE" in text
    assert all(c in text for c in CLASSES) and (out / "inspect.png").is_file()
    teacher_weights = out / "teacher" / "model_final.pth"
    assert teacher_weights.is_file() and _box_ap(out / "teacher") and _box_ap(baseline)
    # The shortened run says in its log how its schedule was scaled (docs/configs.md).
    assert "SOLVER.MAX_ITER 4 -> 2 on the command line" in (baseline / "log.txt").read_text()

    # 4. The DeFeat student (--dataset may also follow the overrides); beside it, section 10's
    # LazyConfig commands as the page writes them, on the 64-px twins of its configs.
    lazy = documented_commands("## 10.", "lazy_train_net.py")
    assert [w[2] for w in lazy] == [
        "configs/lazy/demo_student_slimR18.py",
        "configs/lazy/demo_defeat_slimR18_from_R18.py",
    ]
    twins = {
        "configs/lazy/demo_student_slimR18.py": f"{CONFIGS}/tiny_base.py",
        "configs/lazy/demo_defeat_slimR18_from_R18.py": f"{CONFIGS}/tiny_defeat.py",
        "data/train.json:data/images": f"{train_json}:{images}",
        "data/val.json:data/images": f"{val_json}:{images}",
        "my_teacher.yaml": teacher,
        "output/mine/": f"{out}/",
        "mine_train": "shapes_train",
        "mine_val": "shapes_val",
    }
    lazy_runs = [_start(*_as_tested(words, twins), "train.max_iter=2", env=env) for words in lazy]
    _wait(
        _start(
            "train_net.py",
            "--config-file",
            defeat,
            *ITERS,
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            teacher_weights,
            "OUTPUT_DIR",
            out / "defeat",
            *datasets,
            env=env,
        ),
        *lazy_runs,
    )
    assert _box_ap(out / "defeat") and _box_ap(out / "lazy_student") and _box_ap(out / "lazy_defeat")
    lazy_log = (out / "lazy_defeat" / "log.txt").read_text()
    assert "DeFeatRCNN" in lazy_log and "train.max_iter 4 -> 2 on the command line" in lazy_log
    assert f"teacher: GeneralizedRCNN from config {teacher}" in lazy_log

    # 5. Evaluate the DeFeat checkpoint with the plain student config; 6. export the student.
    evaluation = _start(
        "train_net.py",
        "--config-file",
        student,
        "--eval-only",
        *datasets,
        "MODEL.WEIGHTS",
        out / "defeat" / "model_final.pth",
        "OUTPUT_DIR",
        out / "eval",
        env=env,
    )
    export = _start(
        "tools/export_student.py",
        "--verify-config",
        student,
        out / "defeat" / "model_final.pth",
        out / "student_final.pth",
        env=env,
    )
    text, exported = _wait(evaluation, export)
    assert "Evaluation results for bbox" in text and "verified: all" in exported

    # 7. Compare variants on this data: the finished student run is reused, the "neck" variant is
    # trained by a train_net.py subprocess that knows the names from $DEFEAT_COCO_DATASETS only.
    bench = _start(
        "benchmarks/accuracy.py",
        *datasets,
        "--train-set",
        "shapes_train",
        "--test-set",
        "shapes_val",
        "--student",
        student,
        "--defeat",
        defeat,
        "--teacher-config",
        teacher,
        "--teacher-weights",
        teacher_weights,
        "--variants",
        "baseline",
        "neck",
        "--seeds",
        "0",
        "--iters",
        "2",
        "--output",
        out / "bench",
        "--jobs",
        "1",
        "--opts",
        "SOLVER.WARMUP_ITERS",
        "1",
        env=env,
    )
    # 8. Predict with the exported student, class names from the dataset (named here by the variable).
    before = sorted(os.listdir(images))
    predict = _start(
        "tools/predict.py",
        "--config-file",
        student,
        "--weights",
        out / "student_final.pth",
        "--input",
        images,
        "--output",
        out / "pred",
        "--score-threshold",
        "0.0",
        "--dataset",
        "shapes_val",
        env=dict(env, DEFEAT_COCO_DATASETS=f"shapes_val={val_json}:{images}"),
    )
    # 9. Summarize the runs of step 4 (the student alone is the benchmark's baseline run).
    summary = _start(
        "tools/summarize_runs.py",
        "--teacher",
        out / "teacher",
        "--alone",
        baseline,
        "--defeat",
        out / "defeat",
        "--per-class",
        "--output",
        out / "summary",
        env=env,
    )
    text, _, summarized = _wait(bench, predict, summary)
    table = json.loads((out / "summary" / "summary.json").read_text())
    assert "| student + DeFeat |" in summarized and set(table["per_class"]) == set(CLASSES)
    assert table["rows"]["student + DeFeat"]["AP"] == _box_ap(out / "defeat")[-1]
    summary = json.loads((out / "bench" / "accuracy.json").read_text())["summary"]
    assert "[baseline seed 0] reusing" in text and "1 runs to train" in text
    assert set(summary) == {"baseline", "neck"} and "| neck |" in text and _box_ap(out / "bench" / "neck_seed0")
    dets = json.loads((out / "pred" / "predictions.json").read_text())  # COCO results: one row per detection
    assert len(before) == 8 and sorted(os.listdir(images)) == before
    assert {os.path.basename(d["file_name"]) for d in dets} <= set(before)
    assert {d["category"] for d in dets} <= set(CLASSES) and {d["category_id"] for d in dets} <= {1, 2}
