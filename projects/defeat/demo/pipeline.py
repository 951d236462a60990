"""``python -m defeat run``: from a COCO dataset of yours to a distilled, exported student and its report.

    python -m defeat run --train NAME=train.json[:IMAGES] --val NAME=val.json[:IMAGES] --output report/
        [--preset cpu] [--teacher-config C --teacher-weights W] [--iters N] [--no-alone]
        [--scale-base S] [--pictures 4] [--score-threshold 0.5] [KEY VALUE ...]

Run from the repository root (it runs ``train_net.py`` and the scripts of ``tools/``). In order:

1. checks, before anything is written: the two dataset specs (``defeat.data.datasets``), the
   validation set is not the training set, the output folder is not an input and can be written,
   every dataset's json (``defeat.engine.preflight.check_datasets``), the training images and boxes
   (``defeat.data.checks.check_training_data``), the validation images, a given teacher's config
   (its classes; not a DeFeat config) and weights, the preset configs with the trailing ``KEY VALUE``
   overrides (not of the keys it sets for each run: ``OUTPUT_DIR``, the datasets, the number of
   classes, the teacher), ``--score-threshold`` and ``--scale-base``;
2. inspects the training set (``defeat.analysis.dataset_stats``; ``inspect.txt``, ``inspect.png``)
   and takes the suggested ``MODEL.DEFEAT.NECK.SCALE_BASE`` unless ``--scale-base`` is given;
3. writes the three configs of the runs (``configs/``: the preset's files with the dataset, the
   number of classes and the schedule of ``defeat.config.presets``) and trains (``runs/``) the
   teacher (or evaluates the given one), then the student alone and the DeFeat student side by side,
   each evaluated on the validation set at its end; a run finished earlier with the same config,
   data (and teacher) is reused (its stamp, ``defeat_run.json``);
4. writes the summary (``summary.md``, ``summary.json``: the three runs, the gain, the gap closed
   and the AP per class), exports the DeFeat student (``student.pth``, ``tools/export_student.py``
   with ``--verify-config``), traces it (``student.ts``, ``tools/trace_student.py``), draws its
   detections with the ground truth on a few validation images (``predictions/``,
   ``tools/predict.py --show-gt``) and writes ``README.md``.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..analysis.cli import ToolArgumentParser, at_least, input_file_problem
from ..config.presets import PRESETS, schedule
from ..errors import DeFeatError
from .experiments import config_digest, elapsed, file_digest, max_iter, read_stamp, run_job, run_parallel, write_stamp
from .progress import Progress

PROG = "python -m defeat run"
STAMP = "defeat_run.json"  # a finished run's record in its folder (digest, metrics)
ROLES = ("teacher", "alone", "defeat")
RUN_DIRS = {"teacher": "teacher", "alone": "student_alone", "defeat": "student_defeat"}
CONFIG_NAMES = {"teacher": "teacher.yaml", "alone": "student.yaml", "defeat": "defeat.yaml"}


# Keys the command sets in each run's config: a trailing override of one would break the runs (one
# folder for three runs, another dataset or class count than the checked one, another teacher).
SET_PER_RUN = {
    "OUTPUT_DIR": "each run has its folder under --output",
    "DATASETS.TRAIN": "give the training set with --train",
    "DATASETS.TEST": "give the validation set with --val",
    "MODEL.ROI_HEADS.NUM_CLASSES": "it is the number of categories of the --train json",
    "MODEL.DEFEAT.TEACHER.CONFIG_FILE": "give a trained teacher with --teacher-config and --teacher-weights",
    "MODEL.DEFEAT.TEACHER.WEIGHTS": "give a trained teacher with --teacher-config and --teacher-weights",
}


class RunError(DeFeatError, ValueError):
    """Input that ``python -m defeat run`` refuses before it writes anything."""


def build_parser() -> argparse.ArgumentParser:
    p = ToolArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    spec = "NAME=ANNOTATIONS.json[:IMAGE_ROOT]"
    p.add_argument("--train", required=True, metavar=spec, help="the training set (IMAGE_ROOT: the json's folder)")
    p.add_argument("--val", required=True, metavar=spec, help="the validation set every run is evaluated on")
    p.add_argument("--output", required=True, help="the report folder (created; runs inside it are reused)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="configs and schedule of the three runs")
    p.add_argument("--teacher-config", default="", metavar="FILE", help="a trained teacher's config (with its weights)")
    p.add_argument("--teacher-weights", default="", metavar="FILE", help="... and its weights: not trained here")
    p.add_argument(
        "--iters", type=at_least(1), default=None, help="iterations of every run (default: the preset's rule)"
    )
    p.add_argument("--no-alone", dest="alone", action="store_false", help="skip the student trained alone")
    p.add_argument("--scale-base", type=float, default=None, help="MODEL.DEFEAT.NECK.SCALE_BASE (default: suggested)")
    p.add_argument("--pictures", type=at_least(1), default=4, help="validation images drawn with their detections")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detections drawn from this score")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the runs trained here")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    from ..engine.script import take_trailing_options

    p = build_parser()
    args = take_trailing_options(p, p.parse_args(argv))
    if bool(args.teacher_config) != bool(args.teacher_weights):
        p.error("--teacher-config and --teacher-weights go together (a trained teacher), or neither (one is trained)")
    for option in ("teacher_config", "teacher_weights"):
        path = getattr(args, option)
        problem = input_file_problem(path, f"--{option.replace('_', '-')}") if path else None
        if problem:
            p.error(problem)
    if len(args.opts) % 2:
        p.error(f"overrides must be KEY VALUE pairs, got {args.opts}")
    for key in args.opts[0::2]:
        if key in SET_PER_RUN:
            p.error(f"the override {key} is set by the command for each run: {SET_PER_RUN[key]}")
    if args.scale_base is not None and not 0 < args.scale_base < math.inf:
        p.error(f"--scale-base must be a positive number (pixels), got {args.scale_base}")
    if not 0.0 <= args.score_threshold <= 1.0:
        p.error(f"--score-threshold must be a score between 0 and 1, got {args.score_threshold}")
    if not os.path.isfile("train_net.py"):
        p.error("train_net.py not found: run the command from the repository root")
    return args


@dataclass
class Plan:
    """What the checks found: the datasets, their classes and training images, the configs."""

    train: object  # CocoDatasetSpec
    val: object
    classes: List[str]
    category_ids: List[int]
    num_images: int
    val_images: List[str]
    output: str
    preset: object
    opts: List[str]
    teacher_config: str = ""
    teacher_weights: str = ""
    data_digest: str = ""
    notes: List[str] = field(default_factory=list)


def _writable(folder: str) -> Optional[str]:
    """Why ``folder`` cannot be created or written, or None."""
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"{path!r} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path!r} is not writable"
    return None


def check_inputs(args) -> Plan:
    """Every check before the command writes anything; returns the :class:`Plan`.

    Raises:
        DeFeatError: a dataset spec, a dataset, the output folder, the teacher or an override
            that cannot be used, naming the file or option and the fix.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..config.files import is_defeat_config, load_config, num_classes
    from ..data.checks import check_dataset_images, check_training_data
    from ..data.datasets import parse_dataset_spec, setup_datasets
    from ..engine.outputs import check_output_dir
    from ..engine.preflight import check_datasets

    train, val = parse_dataset_spec(args.train), parse_dataset_spec(args.val)
    if train.name == val.name:
        raise RunError(f"--train and --val both name the dataset {train.name!r}; give the validation set another name")
    if os.path.realpath(train.json_file) == os.path.realpath(val.json_file):
        raise RunError(
            f"--val {val.json_file} is the training json: evaluating on the training images measures nothing; "
            "give a validation json of other images"
        )
    output = os.path.abspath(args.output)
    inputs = {
        "training annotations (--train)": train.json_file,
        "validation annotations (--val)": val.json_file,
        "teacher config (--teacher-config)": args.teacher_config,
        "teacher weights (--teacher-weights)": args.teacher_weights,
    }
    for what, path in inputs.items():
        if path and os.path.realpath(path) == os.path.realpath(output):
            raise RunError(f"--output {args.output!r} is the {what}; give a new folder for the report")
    if os.path.exists(output) and not os.path.isdir(output):
        raise RunError(f"--output {args.output!r} is a file; give a folder for the report")
    problem = _writable(output)
    if problem:
        raise RunError(f"--output {args.output!r} cannot be written: {problem}; choose a folder you can write")
    setup_datasets([str(train), str(val)])  # the json files and image folders exist
    check_output_dir(
        output,
        {"image folder of --train": train.image_root, "image folder of --val": val.image_root},
        option="--output",
    )
    summaries = check_datasets([train.name], [val.name], None, "")  # each json; the same classes in the same order
    classes = list(summaries[train.name].classes)
    dicts = DatasetCatalog.get(train.name)
    key = "MODEL.ROI_HEADS.NUM_CLASSES"
    check_training_data({train.name: dicts}, len(classes), key)  # boxes and every training image
    val_dicts = DatasetCatalog.get(val.name)
    check_dataset_images(val_dicts, val.name)
    to_contiguous = MetadataCatalog.get(train.name).get("thing_dataset_id_to_contiguous_id") or {}
    category_ids = [k for k, _ in sorted(to_contiguous.items(), key=lambda kv: kv[1])] or list(range(len(classes)))
    preset = PRESETS[args.preset]
    opts = list(args.opts)
    load_config(preset.student, opts)  # the overrides exist and fit (OverrideError otherwise)
    if args.teacher_config:
        teacher_cfg = load_config(args.teacher_config)
        if is_defeat_config(teacher_cfg):
            raise RunError(
                f"--teacher-config {args.teacher_config} is a DeFeat config (a student with its teacher): give the "
                "config the teacher was trained with"
            )
        num, tkey = num_classes(teacher_cfg)
        check_datasets([train.name], [val.name], num, f"{tkey} of --teacher-config {args.teacher_config}")
    data_digest = file_digest(train.json_file) + file_digest(val.json_file)
    plan = Plan(
        train=train,
        val=val,
        classes=classes,
        category_ids=category_ids,
        num_images=len(dicts),
        val_images=[r["file_name"] for r in val_dicts],
        output=output,
        preset=preset,
        opts=opts,
        teacher_config=os.path.abspath(args.teacher_config) if args.teacher_config else "",
        teacher_weights=os.path.abspath(args.teacher_weights) if args.teacher_weights else "",
        data_digest=data_digest,
    )
    check_run_configs(plan, args.iters)
    return plan


def inspect(plan: Plan, scale_base: Optional[float]) -> float:
    """Write ``inspect.txt`` and ``inspect.png`` (the training set's sizes and levels for the
    preset's DeFeat student); return the ``SCALE_BASE`` to train with: ``scale_base`` if given,
    else the suggested one."""
    from detectron2.data import DatasetCatalog

    from ..analysis.dataset_stats import config_stats, format_report, stats_figure
    from ..config.files import defeat_settings, load_config, set_run_values

    cfg = set_run_values(load_config(plan.preset.student, plan.opts), device="cpu")
    neck = defeat_settings(load_config(plan.preset.defeat, plan.opts))["neck"]
    stats = config_stats(cfg, neck, DatasetCatalog.get(plan.train.name), plan.train.name, plan.classes, scale_base)
    # A base above the largest box puts every box on the first level, as the largest box itself
    # does: the suggestion is capped there (the same levels, a readable number).
    largest = float(stats.sides.max()) if len(stats.sides) else float(stats.suggested[0])
    chosen = float(scale_base) if scale_base is not None else round(min(float(stats.suggested[0]), largest), 2)
    text = format_report(stats) + f"\n\nSCALE_BASE used: {chosen}" + (" (--scale-base)" if scale_base else "")
    with open(os.path.join(plan.output, "inspect.txt"), "w") as f:
        f.write(text + "\n")
    stats_figure(stats, os.path.join(plan.output, "inspect.png"))
    print(f"[inspect] {plan.num_images} training images; SCALE_BASE {chosen}: {plan.output}/inspect.txt", flush=True)
    return chosen


def _yaml_config(base: str, settings: Dict[str, object]) -> str:
    """A YAML config: ``_BASE_`` and ``KEY VALUE`` settings (dotted keys, values as overrides)."""
    tree: dict = {}
    for key, value in settings.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def lines(node, indent):
        out = []
        for k, v in node.items():
            if isinstance(v, dict):
                out += [f"{'  ' * indent}{k}:", *lines(v, indent + 1)]
            else:
                out.append(f"{'  ' * indent}{k}: {json.dumps(str(v))}")
        return out

    return "\n".join([f"_BASE_: {json.dumps(os.path.abspath(base))}", *lines(tree, 0)]) + "\n"


def run_settings(plan: Plan, scale_base: float, iters: Optional[int], teacher_config: str = "") -> Dict[str, tuple]:
    """``{role: (preset config file, {KEY: value})}`` of the runs trained here: the datasets, the
    number of classes, the schedule (:func:`defeat.config.presets.schedule`), ``SCALE_BASE``, the
    teacher (``teacher_config``: the config the DeFeat student reads it with; default the one
    written to the report) and the trailing overrides, which win."""
    from ..config.files import load_config

    base = load_config(plan.preset.student, plan.opts)
    rule = schedule(plan.num_images, base.SOLVER.IMS_PER_BATCH, base.SOLVER.WARMUP_ITERS, iters)
    common = {
        "MODEL.ROI_HEADS.NUM_CLASSES": len(plan.classes),
        "DATASETS.TRAIN": f"('{plan.train.name}',)",
        "DATASETS.TEST": f"('{plan.val.name}',)",
        "SOLVER.MAX_ITER": rule.max_iter,
        "SOLVER.STEPS": str(tuple(rule.steps)),
        "SOLVER.WARMUP_ITERS": rule.warmup_iters,
    }
    overrides = dict(zip(plan.opts[0::2], plan.opts[1::2]))
    runs = {role: os.path.join(plan.output, "runs", RUN_DIRS[role]) for role in ROLES}
    if plan.teacher_config:
        teacher_config, teacher_weights = plan.teacher_config, plan.teacher_weights
    else:
        teacher_config = teacher_config or os.path.join(plan.output, "configs", CONFIG_NAMES["teacher"])
        teacher_weights = os.path.join(runs["teacher"], "model_final.pth")
    defeat = {
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE": teacher_config,
        "MODEL.DEFEAT.TEACHER.WEIGHTS": teacher_weights,
        "MODEL.DEFEAT.NECK.SCALE_BASE": scale_base,
    }
    out = {
        "teacher": (plan.preset.teacher, {**common, "OUTPUT_DIR": runs["teacher"], **overrides}),
        "alone": (plan.preset.student, {**common, "OUTPUT_DIR": runs["alone"], **overrides}),
        "defeat": (plan.preset.defeat, {**common, **defeat, "OUTPUT_DIR": runs["defeat"], **overrides}),
    }
    if plan.teacher_config:
        del out["teacher"]
    return out


def check_run_configs(plan: Plan, iters: Optional[int]) -> None:
    """Load the configs of the runs as :func:`write_configs` will write them (the preset's teacher
    config standing in for the one not written yet): an override or a schedule that the loader
    refuses is refused before anything is written."""
    from ..config.files import load_config

    for base, settings in run_settings(plan, 1.0, iters, os.path.abspath(plan.preset.teacher)).values():
        load_config(base, [str(x) for kv in settings.items() for x in kv])


def write_configs(plan: Plan, scale_base: float, iters: Optional[int]) -> Dict[str, str]:
    """The configs of :func:`run_settings` in ``<output>/configs``; returns ``{role: config file}``
    (the student alone's too: the DeFeat student is evaluated, exported and traced with it)."""
    folder = os.path.join(plan.output, "configs")
    os.makedirs(folder, exist_ok=True)
    files = {}
    for role, (base, settings) in run_settings(plan, scale_base, iters).items():
        files[role] = os.path.join(folder, CONFIG_NAMES[role])
        with open(files[role], "w") as f:
            f.write(f"# the {role} run of {PROG} (preset {plan.preset.name}), written by it\n")
            f.write(_yaml_config(base, settings))
    return files


def _digest(plan: Plan, config_file: str, extra: str = "") -> str:
    """The cache key of a run: its config and the bytes of the two jsons (and ``extra``)."""
    return config_digest(config_file, []) + plan.data_digest + extra


def _teacher(plan: Plan, files: Dict[str, str], later_s: float):
    """``(RunResult, weights)`` of the teacher: trained here (or reused), or the given one
    evaluated on the validation set (or its evaluation reused)."""
    from ..analysis.evaluation import box_results, check_evaluation, evaluate_weights, evaluation_config
    from ..analysis.run_summary import RunResult, read_run

    out = os.path.join(plan.output, "runs", RUN_DIRS["teacher"])
    if plan.teacher_config:
        digest = config_digest(plan.teacher_config, []) + file_digest(plan.teacher_weights) + plan.data_digest
        record = read_stamp(out, digest, STAMP)
        source = f"weights {plan.teacher_weights} with config {plan.teacher_config}"
        if record and record.get("metrics"):
            print(f"[teacher] reusing the evaluation in {out}", flush=True)
            metrics = record["metrics"]
        else:
            import torch

            device = "" if torch.cuda.is_available() else "cpu"
            cfg = evaluation_config(
                plan.teacher_config, plan.teacher_weights, out, test_set=plan.val.name, device=device
            )
            check_evaluation(cfg, plan.teacher_config, overwrite=True, option="--teacher-config")
            print(f"[teacher] evaluating {source} on {plan.val.name}", flush=True)
            metrics = box_results(evaluate_weights(cfg, plan.teacher_weights, "--teacher-weights"), source)
            os.makedirs(out, exist_ok=True)
            write_stamp(out, digest, metrics, STAMP)
        return RunResult("teacher", source, metrics, [plan.val.name]), plan.teacher_weights
    config = files["teacher"]
    digest = _digest(plan, config)
    if read_stamp(out, digest, STAMP):
        print(f"[teacher] reusing the finished run in {out}", flush=True)
    else:
        n = max_iter(config)
        print(f"[teacher] {config} ({n} iterations)", flush=True)
        t0 = time.time()
        run_job(config, out, on_progress=Progress(later_s).callback("teacher", n, t0))
        write_stamp(out, digest, None, STAMP)
        print(f"    teacher done in {elapsed(t0)}", flush=True)
    return read_run(out, "teacher", "the teacher's run"), os.path.join(out, "model_final.pth")


def _students(plan: Plan, files: Dict[str, str], roles: List[str], teacher_weights: str) -> Dict[str, object]:
    """``{role: RunResult}`` of the students, trained side by side (or reused)."""
    from ..analysis.run_summary import read_run

    extra = {"alone": "", "defeat": file_digest(teacher_weights)}
    outs = {role: os.path.join(plan.output, "runs", RUN_DIRS[role]) for role in roles}
    digests = {role: _digest(plan, files[role], extra[role]) for role in roles}
    todo = [role for role in roles if not read_stamp(outs[role], digests[role], STAMP)]
    for role in roles:
        if role not in todo:
            print(f"[{role}] reusing the finished run in {outs[role]}", flush=True)
    if todo:
        t0 = time.time()
        progress = Progress(0.0, workers=2)
        n = {role: max_iter(files[role]) for role in todo}
        print(f"[students] {', '.join(files[r] for r in todo)} ({max(n.values())} iterations)", flush=True)

        def job(role):
            on_progress = progress.callback(role, n[role])

            def train(threads):  # stamped as soon as it ends: kept if the other run fails
                run_job(
                    files[role],
                    outs[role],
                    on_progress=on_progress,
                    on_start=lambda: progress.start(role),
                    threads=threads,
                )
                write_stamp(outs[role], digests[role], None, STAMP)

            return train

        run_parallel([job(role) for role in todo], workers=min(2, len(todo)))
        print(f"    students done in {elapsed(t0)}", flush=True)
    return {role: read_run(outs[role], role, f"the {role} run") for role in roles}


def write_summary(plan: Plan, runs: Dict[str, object]) -> dict:
    """``summary.md`` and ``summary.json`` in the report: the model-zoo table with the AP per
    class (when every run has it); without the student alone, the teacher and the DeFeat student."""
    from ..analysis.run_summary import LABELS, class_aps, format_summary, format_table, summarize, summary_json

    per_class = all(class_aps(r.metrics) for r in runs.values())
    if "alone" in runs:
        summary = summarize(runs, per_class)
        text = format_summary(summary)
    else:
        from ..engine.metrics_file import METRICS

        rows = {LABELS[role]: {k: runs[role].metrics[k] for k in METRICS} for role in runs}
        summary = {"title": f"DeFeat results: COCO box AP on {plan.val.name}", "rows": rows, "warnings": []}
        text = format_table(rows, summary["title"]) + "\n"
        if per_class:
            aps = {role: class_aps(runs[role].metrics) for role in runs}
            summary["per_class"] = {c: {role: aps[role][c] for role in runs} for c in aps["teacher"]}
            text += "\n#### Per-class AP\n\n| class | teacher | student + DeFeat |\n|---|---|---|\n"
            text += "".join(
                f"| {c} | {v['teacher']:.2f} | {v['defeat']:.2f} |\n" for c, v in summary["per_class"].items()
            )
    if not per_class:
        text += "\nNo AP per class: a run had no detections on the validation set (AP nan).\n"
    with open(os.path.join(plan.output, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(plan.output, "summary.json"), "w") as f:
        f.write(summary_json(summary) + "\n")
    print("\n" + text, flush=True)
    return summary


def _tool(name: str):
    """The module of ``tools/<name>.py`` (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"defeat_tool_{name}", os.path.join("tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stale(target: str, source: str) -> bool:
    """``target`` is missing or older than ``source``."""
    return not os.path.isfile(target) or os.path.getmtime(target) < os.path.getmtime(source)


def deploy(plan: Plan, student_config: str, score_threshold: float, pictures: int) -> None:
    """Export the DeFeat student (``student.pth``), trace it (``student.ts``) and draw its
    detections with the ground truth on the first ``pictures`` validation images
    (``predictions/``); each step is skipped when its output is newer than its input."""
    checkpoint = os.path.join(plan.output, "runs", RUN_DIRS["defeat"], "model_final.pth")
    student = os.path.join(plan.output, "student.pth")
    traced = os.path.join(plan.output, "student.ts")
    drawn = os.path.join(plan.output, "predictions")
    if _stale(student, checkpoint):
        options = ["--verify-config", student_config, "--dataset", plan.train.name, "--overwrite"]
        _tool("export_student").main([*options, checkpoint, student])
    images = plan.val_images[:pictures]
    if _stale(traced, student):
        args = ["--config-file", student_config, "--weights", student, "--output", traced, "--overwrite"]
        _tool("trace_student").main([*args, "--image", images[0], "--dataset", plan.train.name])
    if _stale(os.path.join(drawn, "predictions.json"), student):
        folder = tempfile.mkdtemp(prefix="defeat-run-pictures-")
        try:  # links to the chosen images: predict.py draws a folder, and matches the ground truth by real path
            for path in images:
                os.symlink(os.path.abspath(path), os.path.join(folder, os.path.basename(path)))
            if os.path.isdir(drawn):
                shutil.rmtree(drawn)
            _tool("predict").main(
                [
                    *("--config-file", student_config, "--weights", student, "--input", folder),
                    *("--output", drawn, "--dataset", plan.val.name, "--show-gt", "--overwrite"),
                    *("--score-threshold", str(score_threshold)),
                ]
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"[deploy] {student}, {traced}, {drawn}/", flush=True)


README = """# DeFeat report: {train} -> {val}

Written by `{prog}` (preset `{preset}`: {description}). Run the same command again to resume: finished
runs are reused (each run's `defeat_run.json` stamp: the digest of its config, the two jsons and
the teacher), only what is missing or out of date is made again.

| path | what it is |
|---|---|
| `summary.md`, `summary.json` | box AP of the three runs on `{val}`, the gain, the gap closed, the AP per class |
| `inspect.txt`, `inspect.png` | the training set: boxes per class, sizes, FPN levels, `SCALE_BASE` ({scale_base}) |
| `configs/` | the configs of the runs trained here (the preset's files with your data and schedule) |
| `runs/` | the training runs (`log_stdout.txt`, `metrics.json`, `model_final.pth`) |
| `student.pth` | the DeFeat student as a plain Detectron2 checkpoint, for `configs/student.yaml` |
| `student.ts` | the same student traced to TorchScript (runs without Detectron2) |
| `predictions/` | detections (solid) and ground truth (dashed) on {pictures} validation images; `predictions.json` |
| `classes.json` | class index -> name and your json's category id (also inside `student.pth`, `student.ts`) |

## Results

{table}
## Use the student

Evaluate it (from the repository root):

```bash
.venv/bin/python train_net.py --config-file {student_config} --eval-only MODEL.WEIGHTS {student} \\
    --dataset {val_spec} OUTPUT_DIR {output}/eval_student
```

Draw its detections on your images:

```bash
.venv/bin/python tools/predict.py --config-file {student_config} --weights {student} \\
    --input IMAGES/ --output {output}/my_predictions --dataset {val_spec}
```

Run the traced model without this package (one BGR image, resized as at test time: short side
{min_size}, long side at most {max_size}; boxes come in the resized image's pixels):

```python
import json, torch
extra = {{"defeat_trace.json": ""}}
model = torch.jit.load("{traced}", _extra_files=extra)
info = json.loads(extra["defeat_trace.json"])  # input format, test-time resize, outputs, classes
outputs = dict(zip(info["outputs"], model(image)))  # image: float32 [3, H, W]
for box, c, s in zip(outputs["pred_boxes"], outputs["pred_classes"], outputs["scores"]):
    print(info["classes"][int(c)], info["category_ids"][int(c)], float(s), box.tolist())
```
"""


def write_readme(plan: Plan, scale_base: float, student_config: str, pictures: int) -> None:
    """``README.md`` and ``classes.json`` of the report."""
    from ..config.files import load_config

    cfg = load_config(student_config)
    classes = [
        {"index": i, "name": n, "category_id": c} for i, (n, c) in enumerate(zip(plan.classes, plan.category_ids))
    ]
    with open(os.path.join(plan.output, "classes.json"), "w") as f:
        json.dump(classes, f, indent=1)
    with open(os.path.join(plan.output, "summary.md")) as f:
        table = f.read()
    text = README.format(
        train=plan.train.name,
        val=plan.val.name,
        prog=PROG,
        preset=plan.preset.name,
        description=plan.preset.description,
        scale_base=scale_base,
        pictures=min(pictures, len(plan.val_images)),
        table=table.replace("### ", "#### "),
        student_config=student_config,
        student=os.path.join(plan.output, "student.pth"),
        traced=os.path.join(plan.output, "student.ts"),
        val_spec=str(plan.val),
        output=plan.output,
        min_size=cfg.INPUT.MIN_SIZE_TEST,
        max_size=cfg.INPUT.MAX_SIZE_TEST,
    )
    with open(os.path.join(plan.output, "README.md"), "w") as f:
        f.write(text)


def main(argv=None) -> dict:
    """Run the command; return the summary (see :func:`write_summary`)."""
    args = parse_args(argv)
    from ..engine.quiet import quiet_logs

    quiet_logs()
    t_start = time.time()
    try:
        plan = check_inputs(args)
    except DeFeatError as e:
        raise SystemExit(f"{PROG}: error: {e}") from e
    print(f"[checks] {plan.train} and {plan.val}: {len(plan.classes)} classes, passed", flush=True)
    os.makedirs(plan.output, exist_ok=True)
    scale_base = inspect(plan, args.scale_base)
    files = write_configs(plan, scale_base, args.iters)
    roles = ["alone", "defeat"] if args.alone else ["defeat"]
    students_s = max_iter(files["defeat"]) * plan.preset.s_per_iter[1]  # the ETA's prior for the students
    teacher, teacher_weights = _teacher(plan, files, later_s=students_s)
    runs = {"teacher": teacher, **_students(plan, files, roles, teacher_weights)}
    summary = write_summary(plan, {role: runs[role] for role in ROLES if role in runs})
    deploy(plan, files["alone"], args.score_threshold, args.pictures)
    write_readme(plan, scale_base, files["alone"], args.pictures)
    print(f"[report] {plan.output}/README.md ({elapsed(t_start)})", flush=True)
    return summary


if __name__ == "__main__":
    from ..engine.entry import run_entry_point

    run_entry_point(main, script=PROG)
    sys.exit(0)
