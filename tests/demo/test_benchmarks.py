"""The speed benchmark runs and writes well-formed JSON (its timings are not asserted)."""

import json
import os

import pytest
import torch
from coco_files import load_benchmark
from helpers import REPO


def _load(name):
    return load_benchmark(name)


def _student_graph_bytes(boxes):
    """Bytes of the distinct storages autograd saves in one forward of the tiny student (seed 0)
    on the step-time benchmark's batch for ``boxes`` boxes per image."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    from helpers import make_cfg

    step_time = _load("step_time")
    torch.manual_seed(0)
    student = build_model(make_cfg("tests/configs/tiny_base.yaml", "MODEL.WEIGHTS", "")).train()
    batch = step_time._batch(2, 64, boxes, student.roi_heads.num_classes, seed=boxes)
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with EventStorage(0), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.manual_seed(1)
        student(batch)
    return sum(seen.values())


def test_step_time_short_run_writes_json(tmp_path):
    out = tmp_path / "st.json"
    _load("step_time").main(
        ["--preset", "tiny", "--boxes", "3", "40", "--steps", "1", "--warmup", "0", "--json", str(out)]
    )
    res = json.loads(out.read_text())
    assert res["preset"] == "tiny" and set(res["per_boxes"]) == {"3", "40"}
    for boxes, row in res["per_boxes"].items():
        for key in ("a_student_step_s", "b_teacher_forward_s", "c_defeat_step_s", "d_masks_and_losses_s"):
            assert row[key] > 0
        # The adapters' cost, from the tiny configs alone: a 3x3 conv from the student's 32 FPN
        # channels to the teacher's 48 on each level of a 64-px image (strides 4..64).
        cells = sum((64 // s) ** 2 for s in (4, 8, 16, 32, 64))
        assert row["adapter_gmac_per_image"] == pytest.approx(48 * 32 * 9 * cells / 1e9)
        # Exact (allocator-independent) activation memory: the DeFeat graph holds the student's
        # graph plus a little for the KD losses; the teacher adds outputs, never a graph.
        assert row["c_graph_bytes"] > row["a_graph_bytes"] > 0 and row["b_output_bytes"] > 0
        # The student's saved activations, measured here independently on the benchmark's batch.
        assert row["a_graph_bytes"] == _student_graph_bytes(int(boxes))


HEAD_KEYS = {"loss_defeat_head_obj", "loss_defeat_head_bg"}


@pytest.mark.parametrize("head, teacher_rpn, rois", [("teacher", 1, 128), ("student", 0, 64), ("off", 0, 64)])
def test_step_time_head_modes_change_what_runs(tmp_path, head, teacher_rpn, rois):
    """Each head mode runs what it names in the DeFeat step: the head loss's keys (or none), the
    teacher's RPN only for the teacher's RoIs, and the student's box head on its own 2 x 32
    sampled RoIs (tiny config) plus, on the teacher's RoIs, the teacher's 2 x 32."""
    out = tmp_path / "st.json"
    _load("step_time").main(
        ["--preset", "tiny", "--boxes", "3", "--steps", "1", "--warmup", "0", "--head", head, "--json", str(out)]
    )
    row = json.loads(out.read_text())["per_boxes"]["3"]
    keys = set(row["c_loss_keys"])
    assert {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_cls"} <= keys
    assert (HEAD_KEYS <= keys) == (head != "off") and (keys & HEAD_KEYS == set()) == (head == "off")
    assert row["c_teacher_rpn_calls"] == teacher_rpn
    assert row["c_student_box_head_rois"] == rois


def test_accuracy_benchmark_arguments():
    acc = _load("accuracy")
    args = acc.parse_args(["--variants", "baseline", "coupled", "--seeds", "0", "--opts", "SOLVER.BASE_LR", "0.01"])
    assert args.variants == ["baseline", "coupled"] and args.opts == ["SOLVER.BASE_LR", "0.01"]
    assert set(acc.VARIANTS) == {"baseline", "defaults", "defeat", "neck", "head", "coupled", "obj", "bg"}
    # without --variants every variant but "defaults" (the same runs as "neck" for the demo configs)
    assert acc.parse_args([]).variants == ["baseline", "defeat", "neck", "head", "coupled", "obj", "bg"]


def test_accuracy_region_variants_zero_the_other_region():
    from defeat.demo.experiments import load_config

    acc = _load("accuracy")
    args = acc.parse_args([])
    # a DeFeat config with the prediction terms on (as --opts or a config of yours may set them)
    on = ["MODEL.DEFEAT.HEAD.ENABLED", "True", "MODEL.DEFEAT.CROSS_HEAD.ENABLED", "True"]
    for name, (obj, bg) in {"obj": (1.0, 0.0), "bg": (0.0, 4.0), "neck": (1.0, 4.0), "coupled": (5.0, 0.0)}.items():
        which, extra = acc.VARIANTS[name]
        if name == "coupled":
            extra = extra + acc._coupled_weights(args.defeat, extra)
        cfg = load_config(args.defeat, on + extra)
        assert which == "defeat" and not cfg.MODEL.DEFEAT.HEAD.ENABLED and not cfg.MODEL.DEFEAT.CROSS_HEAD.ENABLED
        assert (cfg.MODEL.DEFEAT.NECK.OBJ_WEIGHT, cfg.MODEL.DEFEAT.NECK.BG_WEIGHT) == (obj, bg)
    # "defaults" is the config as it is; the head-only variant has no neck to feed a cross-head loss
    assert acc.VARIANTS["defaults"] == ("defeat", [])
    assert load_config(args.defeat, on + acc.VARIANTS["defaults"][1]).MODEL.DEFEAT.CROSS_HEAD.ENABLED
    head = load_config(args.defeat, on + acc.VARIANTS["head"][1]).MODEL.DEFEAT
    assert head.HEAD.ENABLED and not head.NECK.ENABLED and not head.CROSS_HEAD.ENABLED


def test_accuracy_glyphs_data_takes_the_glyphs_configs(capsys):
    from defeat.demo.experiments import load_config

    acc = _load("accuracy")
    args = acc.parse_args(["--data", "glyphs"])
    assert (args.student, args.defeat, args.teacher_config, args.teacher_weights) == acc.GLYPHS_FAMILIES["rcnn"]
    for name in ("student", "defeat", "teacher_config"):
        assert load_config(getattr(args, name)).DATASETS.TRAIN == ("defeat_glyphs_train",)
    assert load_config(args.defeat).MODEL.DEFEAT.TEACHER.CONFIG_FILE == args.teacher_config
    with pytest.raises(SystemExit):
        acc.parse_args(["--data", "glyphs", "--family", "retinanet"])
    assert "--data glyphs has demo configs for --family rcnn only" in capsys.readouterr().err


def test_accuracy_benchmark_defines_variants():
    acc = _load("accuracy")
    base = list(acc.VARIANTS["defeat"][1])
    acc.parse_args(
        [
            "--define",
            "kd_T2:defeat:MODEL.DEFEAT.HEAD.TEMPERATURE=2,MODEL.DEFEAT.HEAD.OBJ_WEIGHT=0.5",
            "--variants",
            "kd_T2",
        ]
    )
    extra = ["MODEL.DEFEAT.HEAD.TEMPERATURE", "2", "MODEL.DEFEAT.HEAD.OBJ_WEIGHT", "0.5"]
    assert acc.VARIANTS["kd_T2"] == ("defeat", base + extra)


def test_accuracy_benchmark_family_defaults_and_configs_load():
    from defeat.demo.experiments import load_config

    acc = _load("accuracy")
    args = acc.parse_args(["--family", "retinanet"])
    assert (args.student, args.defeat, args.teacher_config, args.teacher_weights) == acc.FAMILIES["retinanet"]
    assert acc.parse_args(["--family", "retinanet", "--student", "s.yaml"]).student == "s.yaml"
    archs = {"student": "RetinaNet", "defeat": "DeFeatRetinaNet", "teacher_config": "RetinaNet"}
    for name, arch in archs.items():
        assert load_config(getattr(args, name)).MODEL.META_ARCHITECTURE == arch


class _Planned(Exception):
    pass


def test_accuracy_variant_may_name_another_teacher(tmp_path, monkeypatch):
    """Variant overrides come after the default teacher weights, so a variant can swap the teacher."""
    acc = _load("accuracy")
    planned = []

    def fake_run_parallel(todo, workers):
        planned.extend(todo)
        raise _Planned

    monkeypatch.setattr(acc, "run_parallel", fake_run_parallel)
    teacher = tmp_path / "t.pth"
    teacher.write_bytes(b"")
    try:
        acc.main(
            [
                "--family",
                "retinanet",
                "--teacher-weights",
                str(teacher),
                "--seeds",
                "0",
                "--output",
                str(tmp_path / "out"),
                "--define",
                "cross:neck:MODEL.DEFEAT.TEACHER.WEIGHTS=other.pth",
                "--variants",
                "neck",
                "cross",
                "--no-eval-teacher",
            ]
        )
    except _Planned:
        pass
    opts = {os.path.basename(job["output_dir"]): job["opts"] for job in planned}
    assert set(opts) == {"neck_seed0", "cross_seed0"}

    def last(o, key):
        return o[len(o) - 1 - o[::-1].index(key) + 1]

    assert last(opts["neck_seed0"], "MODEL.DEFEAT.TEACHER.WEIGHTS") == str(teacher)
    assert last(opts["cross_seed0"], "MODEL.DEFEAT.TEACHER.WEIGHTS") == "other.pth"
    assert all(job["config_file"] == acc.FAMILIES["retinanet"][1] for job in planned)
    assert all("threads" not in job for job in planned)  # run_parallel's choice: 1 per run side by side


def test_accuracy_threads_pins_every_run(tmp_path, monkeypatch, capsys):
    """``--threads 1`` pins each run even with ``--jobs 1`` (another sweep may share the CPU); 0 is refused."""
    acc = _load("accuracy")
    planned = []

    def fake_run_parallel(todo, workers):
        planned.extend(todo)
        raise _Planned

    monkeypatch.setattr(acc, "run_parallel", fake_run_parallel)
    teacher = tmp_path / "t.pth"
    teacher.write_bytes(b"")
    args = ["--teacher-weights", str(teacher), "--seeds", "0", "--output", str(tmp_path / "out")]
    with pytest.raises(_Planned):
        acc.main(args + ["--variants", "baseline", "neck", "--no-eval-teacher", "--jobs", "1", "--threads", "1"])
    assert [job["threads"] for job in planned] == [1, 1]
    with pytest.raises(SystemExit):
        acc.main(args + ["--threads", "0"])
    assert "--threads" in capsys.readouterr().err


def test_accuracy_evaluates_given_teacher_weights_first(tmp_path, monkeypatch, capsys):
    """Given teacher weights are evaluated on the test set before any student is planned, and the
    teacher's config, weights and measured AP are printed."""
    acc = _load("accuracy")
    calls, events = [], []

    def fake_evaluate(config_file, weights, output_dir, opts=()):
        calls.append((config_file, weights, list(opts)))
        events.append("teacher")
        return dict.fromkeys(acc.METRICS, 37.5)

    def fake_run_parallel(todo, workers):
        events.append("students")
        raise _Planned

    monkeypatch.setattr(acc, "evaluate_job", fake_evaluate)
    monkeypatch.setattr(acc, "run_parallel", fake_run_parallel)
    teacher = tmp_path / "t.pth"
    teacher.write_bytes(b"")
    argv = ["--teacher-weights", str(teacher), "--seeds", "0", "--variants", "baseline", "defeat"]
    with pytest.raises(_Planned):
        acc.main(argv + ["--output", str(tmp_path / "out"), "--test-set", "my_val"])
    assert calls == [(acc.FAMILIES["rcnn"][2], str(teacher), ["DATASETS.TEST", "('my_val',)"])]
    assert events == ["teacher", "students"]
    printed = capsys.readouterr().out
    assert f"teacher: {acc.FAMILIES['rcnn'][2]}, weights {teacher}, AP 37.50 (evaluated on the test set" in printed

    calls.clear()
    events.clear()
    with pytest.raises(_Planned):
        acc.main(argv + ["--output", str(tmp_path / "out2"), "--no-eval-teacher"])
    assert calls == [] and events == ["students"]
    assert "AP ? (AP unknown" in capsys.readouterr().out


def test_accuracy_reuses_a_run_only_for_the_same_config(tmp_path):
    """A finished run is reused only when its saved config has the digest of the planned one
    (a run of an older schedule in the same folder is trained again)."""
    from defeat.demo.experiments import load_config

    acc = _load("accuracy")
    cfg_file = os.path.join(REPO, "configs", "demo", "student_slimR18.yaml")
    out = tmp_path / "run"
    out.mkdir()
    saved = load_config(cfg_file, ["SEED", "1"])
    saved.OUTPUT_DIR = str(out)  # OUTPUT_DIR is not part of the digest
    (out / "config.yaml").write_text(saved.dump())
    assert not acc._finished_with(str(out), cfg_file, ["SEED", "1"])  # no metrics yet: not finished
    (out / "metrics.json").write_text(
        json.dumps({"bbox/" + k: 1.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}) + "\n"
    )
    assert acc._finished_with(str(out), cfg_file, ["SEED", "1"])
    assert not acc._finished_with(str(out), cfg_file, ["SEED", "2"])
    assert not acc._finished_with(str(out), cfg_file, ["SOLVER.MAX_ITER", "300", "SEED", "1"])


@pytest.mark.heavy(seconds=45)
@pytest.mark.parametrize("family", ["cascade", "fcos"])
def test_accuracy_benchmark_new_families_smoke(tmp_path, monkeypatch, capsys, family):
    """--family cascade (YAML) / fcos (LazyConfig): teacher, baseline and DeFeat runs of 2 iterations
    each on a 6-image demo dataset, through train_net.py / lazy_train_net.py subprocesses; a second
    call reuses the finished runs (the saved config's digest matches)."""
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "4")
    monkeypatch.setenv("DEFEAT_DEMO_NUM_VAL", "2")
    acc = _load("accuracy")
    out = tmp_path / "bench"
    variants = ["defeat"] if family == "cascade" else ["baseline", "defeat"]  # the baseline run is plain Detectron2
    argv = [
        "--family",
        family,
        "--seeds",
        "0",
        "--variants",
        *variants,
        "--iters",
        "2",
        "--jobs",
        "2",
        "--output",
        str(out),
        "--teacher-weights",
        str(tmp_path / "t" / "model_final.pth"),
        "--opts",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
    ]
    summary = acc.main(argv)
    assert set(summary) == set(variants)
    capsys.readouterr()
    assert set(acc.main(argv)) == set(variants)
    assert "0 runs to train" in capsys.readouterr().out
    res = json.loads((out / "accuracy.json").read_text())
    assert res["args"]["family"] == family and res["teacher_AP"] is not None
    log = (out / "defeat_seed0" / "log_stdout.txt").read_text()
    assert ("lazy_train_net" in log or family != "fcos") and "loss_defeat_neck_bg" in log
    assert "DeFeatFCOS" in log if family == "fcos" else "CascadeROIHeads" in log


def test_lazy_overrides_translate_the_yaml_overrides():
    from defeat.demo.experiments import lazy_overrides

    got = lazy_overrides(
        [
            "SOLVER.MAX_ITER",
            "300",
            "SEED",
            1,
            "MODEL.DEFEAT.HEAD.ENABLED",
            "True",
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            "t.pth",
            "DATASETS.TRAIN",
            "('my_train',)",
            "DATASETS.TEST",
            "('my_val',)",
        ]
    )
    assert got == [
        "train.max_iter=300",
        "train.seed=1",
        "model.defeat.head.enabled=True",
        "model.teacher.weights=t.pth",
        "dataloader.train.dataset.names=my_train",
        "dataloader.test.dataset.names=my_val",
    ]
    with pytest.raises(ValueError, match="no LazyConfig counterpart for the override MODEL.RPN.NMS_THRESH"):
        lazy_overrides(["MODEL.RPN.NMS_THRESH", "0.6"])
    # Explicit steps are not dropped silently: a LazyConfig's steps follow train.max_iter.
    with pytest.raises(ValueError, match="no LazyConfig counterpart for the override SOLVER.STEPS"):
        lazy_overrides(["SOLVER.MAX_ITER", "300", "SOLVER.STEPS", "(225,270,)"])


def test_step_time_precisions_and_head_modes_side_by_side(tmp_path):
    """--precisions fp32 bf16 --heads teacher off: one run, a row per combination, each computed
    in the precision it names and running the head mode it names."""
    out = tmp_path / "m.json"
    _load("step_time").main(
        ["--preset", "tiny", "--boxes", "3", "--steps", "1", "--warmup", "0", "--json", str(out)]
        + ["--precisions", "fp32", "bf16", "--heads", "teacher", "off"]
    )
    rows = {(r["precision"], r["head"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("fp32", "teacher"), ("fp32", "off"), ("bf16", "teacher"), ("bf16", "off")}
    for (precision, head), r in rows.items():
        assert r["conv_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[precision]
        assert (HEAD_KEYS <= set(r["c_loss_keys"])) == (head == "teacher")
        assert r["c_teacher_rpn_calls"] == (1 if head == "teacher" else 0)
        assert r["c_over_a"] == pytest.approx(r["c_defeat_step_s"] / r["a_student_step_s"])
    assert rows[("fp32", "off")]["c_over_fp32_c"] == 1.0


def test_step_time_box_and_fewer_teacher_rois_modes(tmp_path):
    """``+box`` adds the box loss; ``teacher:N`` makes the student's box head read N teacher RoIs
    per image beside its own (tiny preset: 2 images, 32 own RoIs each)."""
    out = tmp_path / "m.json"
    _load("step_time").main(
        ["--preset", "tiny", "--boxes", "3", "--steps", "1", "--warmup", "0", "--json", str(out)]
        + ["--precisions", "fp32", "--heads", "teacher", "teacher+box:4", "off+box"]
    )
    rows = {r["head"]: r for r in json.loads(out.read_text())["rows"]}
    assert (
        "loss_defeat_box" in rows["teacher+box:4"]["c_loss_keys"]
        and "loss_defeat_box" in rows["off+box"]["c_loss_keys"]
    )
    assert "loss_defeat_box" not in rows["teacher"]["c_loss_keys"]
    assert not HEAD_KEYS & set(rows["off+box"]["c_loss_keys"])
    assert rows["teacher"]["c_student_box_head_rois"] == 2 * (32 + 32)
    assert rows["teacher+box:4"]["c_student_box_head_rois"] == 2 * (32 + 4)


def test_step_time_cross_head_mode(tmp_path):
    """``+cross`` adds the cross-head loss on the teacher's RoIs; alone (``off+cross``) the
    teacher's RPN runs but the student's box head reads only its own RoIs."""
    out = tmp_path / "m.json"
    _load("step_time").main(
        ["--preset", "tiny", "--boxes", "3", "--steps", "1", "--warmup", "0", "--json", str(out)]
        + ["--precisions", "fp32", "--heads", "off+cross", "teacher+box+cross"]
    )
    rows = {r["head"]: r for r in json.loads(out.read_text())["rows"]}
    cross = {"loss_defeat_cross_obj", "loss_defeat_cross_bg"}
    assert cross <= set(rows["off+cross"]["c_loss_keys"]) and cross <= set(rows["teacher+box+cross"]["c_loss_keys"])
    assert not HEAD_KEYS & set(rows["off+cross"]["c_loss_keys"])
    assert rows["off+cross"]["c_teacher_rpn_calls"] == 1
    assert rows["off+cross"]["c_student_box_head_rois"] == 2 * 32
    assert rows["teacher+box+cross"]["c_student_box_head_rois"] == 2 * (32 + 32)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps: must be at least 1, got 0"),
        (["--precisions", "fp32", "fp32"], "--precisions lists 'fp32' more than once"),
        (["--precisions", "fp64"], "invalid choice: 'fp64'"),
        (["--precisions", "fp32", "--heads", "teacher+kd"], "'teacher+kd' is not a head mode"),
        (["--precisions", "fp32", "--heads", "student:16"], "'student:16' is not a head mode"),
        (["--precisions", "fp32", "--heads", "teacher:0"], "N >= 1 teacher RoIs per image"),
        (["--precisions", "fp32", "--heads", "off+cross+cross"], "'off+cross+cross' is not a head mode"),
    ],
)
def test_step_time_refuses_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        _load("step_time").main(["--preset", "tiny", "--overwrite", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_finished_demo_run_drops_the_runs_its_overwrite_set_aside(tmp_path):
    """The demo and the benchmarks re-run their own folders with ``--overwrite``: once the new run
    has finished (``run_job``), the earlier runs it moved to ``.replaced-<time>/`` are removed,
    nothing else. A stand-in training script sets one aside as the real one would."""
    from defeat.demo import experiments

    out = tmp_path / "run"
    out.mkdir()
    (out / ".replaced-note.txt").write_text("a file, not a set-aside run")
    script = tmp_path / "fake_train_net.py"
    script.write_text(
        "import os, sys\n"
        "out = sys.argv[sys.argv.index('OUTPUT_DIR') + 1]\n"
        "assert '--overwrite' in sys.argv\n"
        "os.makedirs(os.path.join(out, '.replaced-20260101-000000'))\n"
        "open(os.path.join(out, '.replaced-20260101-000000', 'model_final.pth'), 'wb').write(b'old')\n"
        "open(os.path.join(out, 'model_final.pth'), 'wb').write(b'new')\n"
    )
    experiments.run_job("configs/demo/student_slimR18.yaml", str(out), [], train_script=str(script), evaluate=False)
    assert sorted(os.listdir(out)) == [".replaced-note.txt", "log_stdout.txt", "model_final.pth"]


def test_accuracy_defines_the_settings_that_read_the_data(tmp_path):
    """``--define sbauto:defaults:MODEL.DEFEAT.NECK.SCALE_BASE=auto`` and
    ``--define bal2:defaults:MODEL.DEFEAT.BALANCE.TARGET_RATIO=2`` are variants whose overrides the
    DeFeat configs of shapes and photos take (no training); a finished ``auto`` run's config.yaml,
    which holds the number, has the digest of the planned run, so it is reused."""
    from coco_files import write_coco
    from helpers import CONFIGS

    from defeat.data.box_levels import resolve_scale_base
    from defeat.data.datasets import register_coco_dataset
    from defeat.demo.experiments import config_digest, load_config

    defines = ["sbauto:defaults:MODEL.DEFEAT.NECK.SCALE_BASE=auto", "bal2:defaults:MODEL.DEFEAT.BALANCE.TARGET_RATIO=2"]
    for data in ("shapes", "photos"):
        acc = _load("accuracy")
        args = acc.parse_args(["--data", data, "--define", *defines, "--variants", "baseline", "sbauto", "bal2"])
        assert acc.VARIANTS["sbauto"] == ("defeat", ["MODEL.DEFEAT.NECK.SCALE_BASE", "auto"])
        assert acc.VARIANTS["bal2"] == ("defeat", ["MODEL.DEFEAT.BALANCE.TARGET_RATIO", "2"])
        assert load_config(args.defeat, acc.VARIANTS["sbauto"][1]).MODEL.DEFEAT.NECK.SCALE_BASE == "auto"
        assert load_config(args.defeat, acc.VARIANTS["bal2"][1]).MODEL.DEFEAT.BALANCE.TARGET_RATIO == 2.0
    json_file, images = write_coco(str(tmp_path / "data"), num_images=4, size=128)
    register_coco_dataset("digest_train", json_file, images)
    opts = ["DATASETS.TRAIN", "('digest_train',)", "MODEL.DEFEAT.NECK.SCALE_BASE", "auto"]
    saved = load_config(f"{CONFIGS}/tiny_defeat.yaml", opts)
    value = resolve_scale_base(saved).value
    (tmp_path / "config.yaml").write_text(saved.dump())
    assert config_digest(str(tmp_path / "config.yaml"), []) == config_digest(f"{CONFIGS}/tiny_defeat.yaml", opts)
    other = opts[:2] + ["MODEL.DEFEAT.NECK.SCALE_BASE", str(value + 1.0)]
    assert config_digest(str(tmp_path / "config.yaml"), []) != config_digest(f"{CONFIGS}/tiny_defeat.yaml", other)


@pytest.mark.parametrize(
    "data, iters, saved, expected",
    [
        ("shapes", None, None, 1300),  # the default: as long as the teacher config (1300 for the shapes pair)
        ("glyphs", None, 3900, 3900),  # ... or as the teacher's run says it trained (beside its weights)
        ("glyphs", None, "junk", 1300),  # an unreadable saved config: the teacher config's schedule
        ("shapes", "config", 3900, 500),  # the student configs' own (the demo's) schedule
        ("shapes", "7", 3900, 7),
        ("shapes", "opts", None, 11),  # --opts SOLVER.MAX_ITER 11 shortens the teacher's schedule, and so the students'
    ],
)
def test_accuracy_students_train_the_schedule_iters_names(tmp_path, monkeypatch, data, iters, saved, expected):
    """Every student run gets SOLVER.MAX_ITER from --iters, the teacher's schedule by default, and
    the tables record it."""
    from defeat.config.files import load_config

    acc = _load("accuracy")
    weights = tmp_path / "teacher" / "model_final.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"never read: no evaluation, no training")
    if saved == "junk":
        (weights.parent / "config.yaml").write_text("MODEL: [unclosed\n")
    elif saved is not None:
        text = f"MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\nSOLVER:\n  MAX_ITER: {saved}\n"
        (weights.parent / "config.yaml").write_text(text)
    argv = ["--data", data, "--variants", "baseline", "defaults", "--seeds", "0", "--no-eval-teacher"]
    argv += ["--teacher-weights", str(weights), "--output", str(tmp_path / "out"), "--jobs", "1"]
    if iters == "opts":
        argv, iters = argv + ["--opts", "SOLVER.MAX_ITER", "11"], None
    args = acc.parse_args(argv + ([] if iters is None else ["--iters", iters]))
    started = []
    monkeypatch.setattr(acc, "run_parallel", lambda jobs, workers: started.extend(jobs))

    def read_box_metrics(out):  # no run before run_parallel; each one's metrics after it
        if not started:
            raise FileNotFoundError(out)
        return {k: 1.0 for k in acc.METRICS}

    monkeypatch.setattr(acc, "read_box_metrics", read_box_metrics)
    acc.main(args)
    assert len(started) == 2
    for job in started:
        opts = job["opts"]
        last = len(opts) - 1 - opts[::-1].index("SOLVER.MAX_ITER")  # the one that counts
        assert opts[last + 1] == str(expected)
        assert load_config(job["config_file"], opts).SOLVER.MAX_ITER == expected
    with open(tmp_path / "out" / "accuracy.json") as f:
        assert json.load(f)["student_iters"] == expected
    assert f"students {expected} iterations" in (tmp_path / "out" / "accuracy.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iters", "half"], "--iters: must be an integer, got 'half' (or 'teacher' or 'config')"),
        (["--iters", "0"], "--iters: must be at least 1, got 0 (or 'teacher' or 'config')"),
    ],
)
def test_accuracy_refuses_a_schedule_it_cannot_follow(capsys, argv, message):
    acc = _load("accuracy")
    with pytest.raises(SystemExit) as e:
        acc.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
