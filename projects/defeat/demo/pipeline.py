"""``python -m defeat run``: from a COCO dataset of yours to a distilled, exported student and its report.

    python -m defeat run --train NAME=train.json[:IMAGES] --val NAME=val.json[:IMAGES] --output report/
        [--preset cpu|demo|demo-retinanet] [--teacher-config C --teacher-weights W] [--iters N]
        [--teacher-iters N] [--student-iters N] [--no-alone] [--scale-base S] [--pictures 4]
        [--score-threshold 0.5] [--teacher-processes N] [--precision auto|fp32|bf16] [--fresh-teacher]
        [--eval-teacher | --no-eval-teacher] [--init-teacher-run DIR] [KEY VALUE ...]

Run from the repository root (it runs ``train_net.py`` and the scripts of ``tools/``). A dataset
is a spec, or the name alone of one this package generates on first use (``defeat_demo_train``,
``defeat.data.datasets.PROVIDED_DATASETS``); a preset that names its datasets (the demo presets)
needs neither ``--train`` nor ``--val``. ``python -m defeat demo`` (``defeat.demo.runner``) is this
command with a demo preset on the embedded dataset. In order:

1. checks, before anything is written: the two dataset specs (``defeat.data.datasets``), the
   validation set is not the training set, the output folder is not an input and can be written,
   every dataset's json (``defeat.engine.preflight.check_datasets``), the training images and boxes
   (``defeat.data.checks.check_training_data``), the validation images, a given teacher's config
   (its classes; not a DeFeat config) and weights, the preset configs with the trailing ``KEY VALUE``
   overrides (not of the keys it sets for each run: ``OUTPUT_DIR``, the datasets, the number of
   classes, the teacher), ``--score-threshold`` and ``--scale-base``;
2. inspects the training set (``defeat.analysis.dataset_stats``; ``inspect.txt``, ``inspect.png``)
   and takes ``MODEL.DEFEAT.NECK.SCALE_BASE`` from ``--scale-base``, else the suggested one (or,
   for a preset that keeps its configs' own, the DeFeat config's);
3. writes the configs of the runs (``configs/``: the preset's files with the dataset, the number
   of classes, the precision and the schedule: :func:`defeat.config.presets.schedule`, or the
   files' own for a preset that keeps it) and trains (``runs/``) the teacher (or evaluates the
   given one; a preset's starting teacher first, whose weights start it), in one process or
   data-parallel in N one-thread processes whose saved weights are then evaluated beside the
   students; then the student alone and the DeFeat student side by side, one thread each, each
   evaluated on the validation set at its end; a run finished earlier with the same config, data
   (and teacher, and starting weights) is reused (its stamp, ``defeat_run.json``); a reused
   teacher is evaluated again with ``--eval-teacher``;
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
from typing import Callable, Dict, List, Optional

from ..analysis.cli import ToolArgumentParser, at_least, input_file_problem
from ..config.presets import PRECISIONS, PRESETS, schedule
from ..engine.metrics_file import record_box_metrics
from ..errors import DeFeatError
from .experiments import (
    config_digest,
    elapsed,
    evaluate_job,
    file_digest,
    max_iter,
    read_stamp,
    run_job,
    run_parallel,
    write_stamp,
)
from .progress import Progress

PROG = "python -m defeat run"
STAMP = "defeat_run.json"  # a finished run's record in its folder (digest, metrics)
ROLES = ("teacher", "alone", "defeat")
RUN_DIRS = {"teacher": "teacher", "alone": "student_alone", "defeat": "student_defeat"}
INIT_RUN_DIR = "init_teacher"  # the default run folder of a teacher that starts the preset's teacher
CONFIG_NAMES = {
    "init": "init_teacher.yaml",
    "teacher": "teacher.yaml",
    "alone": "student.yaml",
    "defeat": "defeat.yaml",
}


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


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (``defeat.engine.mixed_precision``, imported on use:
    this module imports without torch, so that ``--help`` answers at once)."""
    from ..engine.mixed_precision import cpu_bf16_supported as supported

    return supported()


class RunError(DeFeatError, ValueError):
    """Input that ``python -m defeat run`` refuses before it writes anything."""


def build_parser() -> argparse.ArgumentParser:
    p = ToolArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    spec = "NAME=ANNOTATIONS.json[:IMAGE_ROOT]"
    p.add_argument("--train", default=None, metavar=spec, help="the training set (IMAGE_ROOT: the json's folder)")
    p.add_argument("--val", default=None, metavar=spec, help="the validation set every run is evaluated on")
    p.add_argument("--output", required=True, help="the report folder (created; runs inside it are reused)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="configs and schedule of the three runs")
    p.add_argument("--teacher-config", default="", metavar="FILE", help="a trained teacher's config (with its weights)")
    p.add_argument("--teacher-weights", default="", metavar="FILE", help="... and its weights: not trained here")
    p.add_argument(
        "--iters", type=at_least(1), default=None, help="iterations of every run (default: the preset's schedule)"
    )
    p.add_argument("--teacher-iters", type=at_least(1), default=None, help="iterations of the teacher (over --iters)")
    p.add_argument("--student-iters", type=at_least(1), default=None, help="iterations of both students (over --iters)")
    p.add_argument("--no-alone", dest="alone", action="store_false", help="skip the student trained alone")
    p.add_argument("--scale-base", type=float, default=None, help="MODEL.DEFEAT.NECK.SCALE_BASE (default: suggested)")
    p.add_argument("--pictures", type=at_least(1), default=4, help="validation images drawn with their detections")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detections drawn from this score")
    p.add_argument(
        "--teacher-processes",
        type=at_least(1),
        default=None,
        help="train the teacher data-parallel in N one-thread processes, its saved weights then evaluated beside "
        "the students (default: the preset's; 2 cores: two processes about 20%% faster than one)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16 autocast on a CPU with native bf16 (auto), or always fp32 / bf16 (default: the preset's)",
    )
    p.add_argument("--fresh-teacher", action="store_true", help="train the teacher again even if a finished one exists")
    p.add_argument(
        "--eval-teacher",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate a reused teacher again, beside the students (default: the preset's); without, its AP is "
        "the one recorded when it was last evaluated",
    )
    p.add_argument(
        "--init-teacher-run",
        default="",
        metavar="DIR",
        help="run folder of the teacher whose weights start this preset's teacher, trained there unless finished "
        "(a preset with a starting teacher only; default: runs/init_teacher of the report)",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides of the runs trained here")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    from ..engine.arguments import take_trailing_options

    p = build_parser()
    args = take_trailing_options(p, p.parse_args(argv))
    preset = PRESETS[args.preset]
    for option, index in (("train", 0), ("val", 1)):
        if getattr(args, option) is None:
            if not preset.datasets:
                p.error(f"--{option} is required (preset {preset.name} names no dataset)")
            setattr(args, option, preset.datasets[index])
    if bool(args.teacher_config) != bool(args.teacher_weights):
        p.error("--teacher-config and --teacher-weights go together (a trained teacher), or neither (one is trained)")
    for option in ("teacher_config", "teacher_weights"):
        path = getattr(args, option)
        problem = input_file_problem(path, f"--{option.replace('_', '-')}") if path else None
        if problem:
            p.error(problem)
    if args.init_teacher_run and not preset.init_teacher:
        p.error(f"--init-teacher-run: preset {preset.name}'s teacher starts from no other teacher")
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
    """What the checks found (the datasets, their classes and training images, the configs) and
    how the runs train."""

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
    iters: Dict[str, Optional[int]] = field(default_factory=dict)  # role -> iterations (None: the schedule's)
    amp: bool = False  # bf16 autocast (SOLVER.AMP.ENABLED)
    teacher_processes: int = 1
    remeasure_teacher: bool = False
    fresh_teacher: bool = False
    init_run: str = ""  # the run folder of the teacher that starts this one's ("" for none)

    def run_dir(self, role: str) -> str:
        """The run folder of ``role`` (``init``: :attr:`init_run`)."""
        return self.init_run if role == "init" else os.path.join(self.output, "runs", RUN_DIRS[role])


def run_options(args, preset) -> dict:
    """The :class:`Plan` fields from the options, the preset's defaults filled in: the iterations
    of each role, the precision (``auto``: bf16 where the CPU has native bf16), the teacher's
    processes, whether a reused teacher is evaluated again and whether it is trained again."""
    precision = args.precision or preset.precision
    teacher_iters = args.teacher_iters or args.iters
    student_iters = args.student_iters or args.iters
    return dict(
        iters={"init": teacher_iters, "teacher": teacher_iters, "alone": student_iters, "defeat": student_iters},
        amp=precision == "bf16" or (precision == "auto" and cpu_bf16_supported()),
        teacher_processes=args.teacher_processes or preset.teacher_processes,
        remeasure_teacher=preset.remeasure_teacher if args.eval_teacher is None else args.eval_teacher,
        fresh_teacher=args.fresh_teacher,
    )


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


def _is_provided(text: str) -> bool:
    """Whether ``--train`` / ``--val`` ``text`` names a dataset this package provides (no ``=``, a
    prefix of ``defeat.data.datasets.PROVIDED_DATASETS``) rather than a spec of one's own."""
    from ..data.datasets import PROVIDED_DATASETS

    return "=" not in text and any(text.startswith(prefix) for prefix in PROVIDED_DATASETS)


def dataset_spec(text: str, option: str):
    """``(CocoDatasetSpec, provided)`` of ``--train`` / ``--val`` (``option``, for messages): a spec, or the name
    of a dataset this package provides (generated on first use and registered here; the training
    runs register it the same way, from its name in their config).

    Raises:
        DeFeatError: a spec that cannot be read (``DatasetSpecError``).
    """
    from ..data.datasets import parse_dataset_spec

    if not _is_provided(text):
        return parse_dataset_spec(text), False
    from detectron2.data import MetadataCatalog

    from ..data.datasets import CocoDatasetSpec, register_provided_datasets

    register_provided_datasets([text])
    meta = MetadataCatalog.get(text)
    return CocoDatasetSpec(text, meta.json_file, meta.image_root), True


def _check_output(args, json_files) -> None:
    """The output folder is no input (``json_files``: the jsons known so far; the teacher's files),
    not a file, and can be written."""
    output = os.path.abspath(args.output)
    inputs = {
        **json_files,
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


def _check_pair_and_output(args, train, val) -> None:
    """The validation set is another dataset and json than the training set; :func:`_check_output`."""
    if train.name == val.name:
        raise RunError(f"--train and --val both name the dataset {train.name!r}; give the validation set another name")
    if os.path.realpath(train.json_file) == os.path.realpath(val.json_file):
        raise RunError(
            f"--val {val.json_file} is the training json: evaluating on the training images measures nothing; "
            "give a validation json of other images"
        )
    _check_output(
        args, {"training annotations (--train)": train.json_file, "validation annotations (--val)": val.json_file}
    )


def check_arguments(args) -> None:
    """The checks of :func:`check_inputs` that need no torch (the command runs them before its heavy
    imports, and before a dataset this package provides is generated): each dataset spec and its
    files, the output folder (:func:`_check_output`), and, when neither names a provided dataset
    (known only once generated and registered), :func:`_check_pair_and_output`."""
    from ..data.datasets import check_dataset_files, parse_dataset_spec

    specs = [None if _is_provided(text) else parse_dataset_spec(text) for text in (args.train, args.val)]
    for spec in specs:
        if spec is not None:
            check_dataset_files(spec)  # the json files and image folders exist
    if None not in specs:
        _check_pair_and_output(args, *specs)
    else:
        option = {0: "training annotations (--train)", 1: "validation annotations (--val)"}
        _check_output(args, {option[i]: spec.json_file for i, spec in enumerate(specs) if spec is not None})


def check_inputs(args) -> Plan:
    """Every check before the command writes anything (:func:`check_arguments` first); returns the
    :class:`Plan`.

    Raises:
        DeFeatError: a dataset spec, a dataset, the output folder, the teacher or an override
            that cannot be used, naming the file or option and the fix.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..config.files import is_defeat_config, load_config, num_classes
    from ..data.checks import check_dataset_images, check_training_data
    from ..data.datasets import setup_datasets
    from ..engine.outputs import check_output_dir
    from ..engine.preflight import check_datasets

    check_arguments(args)
    (train, train_provided), (val, val_provided) = dataset_spec(args.train, "--train"), dataset_spec(args.val, "--val")
    _check_pair_and_output(args, train, val)
    output = os.path.abspath(args.output)
    # the json files and image folders exist; exported to the training runs (a provided one they name)
    setup_datasets([str(spec) for spec, provided in ((train, train_provided), (val, val_provided)) if not provided])
    check_output_dir(
        output,
        {"image folder of --train": train.image_root, "image folder of --val": val.image_root},
        option="--output",
    )
    summaries = check_datasets([train.name], [val.name], None, "")  # each json; the same classes in the same order
    classes = list(summaries[train.name].classes)
    preset = PRESETS[args.preset]
    opts = list(args.opts)
    student = load_config(preset.student, opts)  # the overrides exist and fit (OverrideError otherwise)
    dicts = DatasetCatalog.get(train.name)
    key = num_classes(student)[1]
    check_training_data({train.name: dicts}, len(classes), key)  # boxes and every training image
    val_dicts = DatasetCatalog.get(val.name)
    check_dataset_images(val_dicts, val.name)
    to_contiguous = MetadataCatalog.get(train.name).get("thing_dataset_id_to_contiguous_id") or {}
    category_ids = [k for k, _ in sorted(to_contiguous.items(), key=lambda kv: kv[1])] or list(range(len(classes)))
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
        **run_options(args, preset),
    )
    if preset.init_teacher and not plan.teacher_config:
        plan.init_run = os.path.abspath(args.init_teacher_run or os.path.join(output, "runs", INIT_RUN_DIR))
    check_run_configs(plan)
    return plan


def inspect(plan: Plan, scale_base: Optional[float]) -> float:
    """Write ``inspect.txt`` and ``inspect.png`` (the training set's sizes and levels for the
    preset's DeFeat student); return the ``SCALE_BASE`` to train with: ``scale_base`` if given,
    else the suggested one (the number ``SCALE_BASE: auto`` would take; the DeFeat config's for a
    preset without ``suggest_scale_base``)."""
    from detectron2.data import DatasetCatalog

    from ..analysis.dataset_stats import config_stats, format_report, stats_figure
    from ..config.files import defeat_settings, load_config, set_run_values

    cfg = set_run_values(load_config(plan.preset.student, plan.opts), device="cpu")
    neck = defeat_settings(load_config(plan.preset.defeat, plan.opts))["neck"]
    stats = config_stats(cfg, neck, DatasetCatalog.get(plan.train.name), plan.train.name, plan.classes, scale_base)
    # The suggestion is the rule MODEL.DEFEAT.NECK.SCALE_BASE auto resolves to when a training run
    # starts (defeat.data.box_levels.suggest_scale_base); the configs written here hold the number.
    if scale_base is not None:
        chosen, source = float(scale_base), " (--scale-base)"
    elif plan.preset.suggest_scale_base:
        chosen, source = float(stats.suggested[0]), ""
    else:
        chosen, source = float(neck["scale_base"]), f" (the config's, preset {plan.preset.name})"
    text = format_report(stats) + f"\n\nSCALE_BASE used: {chosen}{source}"
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


def _schedule_settings(plan: Plan, role: str, base: str) -> Dict[str, object]:
    """The ``SOLVER`` schedule of ``role``'s run from the preset config ``base``: the rule's
    (:func:`defeat.config.presets.schedule`, sized by the student's batch and warm-up, or to the
    role's iterations), or, for a preset that keeps its configs' own, nothing, or the file's
    schedule scaled to the role's iterations as the loader scales a ``SOLVER.MAX_ITER`` override
    (``defeat.config.iterations``; the KD warm-up too), written out."""
    from ..config.files import is_defeat_config, load_config

    iters = plan.iters.get(role)
    if plan.preset.schedule_rule:
        student = load_config(plan.preset.student, plan.opts)
        rule = schedule(
            plan.num_images,
            student.SOLVER.IMS_PER_BATCH,
            student.SOLVER.WARMUP_ITERS,
            iters,
            epochs=plan.preset.epochs,
            min_iters=plan.preset.min_iters,
        )
        return {
            "SOLVER.MAX_ITER": rule.max_iter,
            "SOLVER.STEPS": str(tuple(rule.steps)),
            "SOLVER.WARMUP_ITERS": rule.warmup_iters,
        }
    if iters is None:
        return {}
    cfg = load_config(base, [*plan.opts, "SOLVER.MAX_ITER", str(iters)])
    out = {
        "SOLVER.MAX_ITER": iters,
        "SOLVER.STEPS": str(tuple(cfg.SOLVER.STEPS)),
        "SOLVER.WARMUP_ITERS": cfg.SOLVER.WARMUP_ITERS,
    }
    if is_defeat_config(cfg):
        out["MODEL.DEFEAT.WARMUP_ITERS"] = cfg.MODEL.DEFEAT.WARMUP_ITERS
    return out


def run_settings(plan: Plan, scale_base: float, teacher_config: str = "") -> Dict[str, tuple]:
    """``{role: (preset config file, {KEY: value})}`` of the runs trained here (``init``: the
    teacher whose weights start the preset's teacher, for a preset that has one): the datasets,
    the number of classes, the schedule (:func:`_schedule_settings`), the precision, the starting
    weights, ``SCALE_BASE``, the teacher (``teacher_config``: the config the DeFeat student reads
    it with; default the one written to the report) and the trailing overrides, which win."""
    from ..config.files import floats_where_expected, load_config, num_classes

    bases = {"teacher": plan.preset.teacher, "alone": plan.preset.student, "defeat": plan.preset.defeat}
    if plan.init_run:
        bases["init"] = PRESETS[plan.preset.init_teacher].teacher
    if plan.teacher_config:
        del bases["teacher"]
    if plan.teacher_config:
        teacher_config, teacher_weights = plan.teacher_config, plan.teacher_weights
    else:
        teacher_config = teacher_config or os.path.join(plan.output, "configs", CONFIG_NAMES["teacher"])
        teacher_weights = os.path.join(plan.run_dir("teacher"), "model_final.pth")
    extra = {
        "teacher": {"MODEL.WEIGHTS": os.path.join(plan.init_run, "model_final.pth")} if plan.init_run else {},
        "defeat": {
            "MODEL.DEFEAT.TEACHER.CONFIG_FILE": teacher_config,
            "MODEL.DEFEAT.TEACHER.WEIGHTS": teacher_weights,
            "MODEL.DEFEAT.NECK.SCALE_BASE": scale_base,
        },
    }
    out = {}
    for role, base in bases.items():
        cfg = load_config(base)
        opts = floats_where_expected(cfg, plan.opts)  # read back from the file as from the command line
        settings = {
            num_classes(cfg)[1]: len(plan.classes),
            "DATASETS.TRAIN": f"('{plan.train.name}',)",
            "DATASETS.TEST": f"('{plan.val.name}',)",
            **_schedule_settings(plan, role, base),
            "SOLVER.AMP.ENABLED": plan.amp,
            **extra.get(role, {}),
            "OUTPUT_DIR": plan.run_dir(role),
            **dict(zip(opts[0::2], opts[1::2])),
        }
        out[role] = (base, settings)
    return out


def check_run_configs(plan: Plan) -> None:
    """Load the configs of the runs as :func:`write_configs` will write them (the preset's teacher
    config standing in for the one not written yet) and check what each needs of the machine
    (``defeat.engine.machine.check_machine``: its device; its weights given as URLs, other than
    those trained here): an override, a schedule, a device or a download that cannot work is
    refused before anything is written."""
    from ..config.files import load_config
    from ..engine.machine import check_machine

    for role, (base, settings) in run_settings(plan, 1.0, os.path.abspath(plan.preset.teacher)).items():
        cfg = load_config(base, [str(x) for kv in settings.items() for x in kv])
        # weights trained by this command do not exist yet (the init teacher's, the teacher's); a
        # given teacher's (--teacher-weights) may be a URL
        check_machine(
            cfg,
            model_weights_used=not (role == "teacher" and plan.init_run),
            teacher_used=role == "defeat" and bool(plan.teacher_config),
        )


def write_configs(plan: Plan, scale_base: float) -> Dict[str, str]:
    """The configs of :func:`run_settings` in ``<output>/configs``; returns ``{role: config file}``
    (the student alone's too: the DeFeat student is evaluated, exported and traced with it)."""
    folder = os.path.join(plan.output, "configs")
    os.makedirs(folder, exist_ok=True)
    files = {}
    for role, (base, settings) in run_settings(plan, scale_base).items():
        files[role] = os.path.join(folder, CONFIG_NAMES[role])
        with open(files[role], "w") as f:
            f.write(f"# the {role} run of {PROG} (preset {plan.preset.name}), written by it\n")
            f.write(_yaml_config(base, settings))
    return files


def _digest(plan: Plan, config_file: str, extra: str = "") -> str:
    """The cache key of a run: its config and the bytes of the two jsons (and ``extra``)."""
    return config_digest(config_file, []) + plan.data_digest + extra


def teacher_digest(plan: Plan, config_file: str) -> str:
    """The cache key of a teacher trained here: :func:`_digest` with the precision left out (a
    teacher trained in fp32 serves a bf16 run and back) and with the bytes of the weights it starts
    from (``MODEL.WEIGHTS``, when a file: other starting weights, another teacher)."""
    from ..config.files import load_config

    start = load_config(config_file).MODEL.WEIGHTS
    extra = file_digest(start) if start and os.path.isfile(start) else ""
    return config_digest(config_file, ["SOLVER.AMP.ENABLED", "False"]) + plan.data_digest + extra


@dataclass
class Teacher:
    """A teacher ready for the students: ``weights``; ``note``: how its AP was obtained; ``pending``:
    its evaluation left to run beside the students (``pending(threads)``), or None; ``result()``:
    its :class:`RunResult` once evaluated."""

    weights: str
    note: str
    result: Callable[[], object]
    pending: Optional[Callable[[Optional[int]], dict]] = None


def _given_teacher(plan: Plan) -> Teacher:
    """The teacher of ``--teacher-config`` / ``--teacher-weights``, evaluated on the validation set
    before the students (or its evaluation reused)."""
    from ..analysis.evaluation import box_results, check_evaluation, evaluate_weights, evaluation_config
    from ..analysis.run_summary import RunResult

    out = plan.run_dir("teacher")
    digest = config_digest(plan.teacher_config, []) + file_digest(plan.teacher_weights) + plan.data_digest
    record = read_stamp(out, digest, STAMP)
    source = f"weights {plan.teacher_weights} with config {plan.teacher_config}"
    if record and record.get("metrics") and not plan.remeasure_teacher:
        print(f"[teacher] reusing the evaluation in {out}", flush=True)
        metrics, note = record["metrics"], "its recorded evaluation (not evaluated again)"
    else:
        import torch

        device = "" if torch.cuda.is_available() else "cpu"
        cfg = evaluation_config(plan.teacher_config, plan.teacher_weights, out, test_set=plan.val.name, device=device)
        check_evaluation(cfg, plan.teacher_config, overwrite=True, option="--teacher-config")
        print(f"[teacher] evaluating {source} on {plan.val.name}", flush=True)
        metrics = box_results(evaluate_weights(cfg, plan.teacher_weights, "--teacher-weights"), source)
        os.makedirs(out, exist_ok=True)
        write_stamp(out, digest, metrics, STAMP)
        note = "evaluated on the validation set before the students"
    return Teacher(plan.teacher_weights, note, lambda: RunResult("teacher", source, metrics, [plan.val.name]))


def ensure_teacher(plan: Plan, role: str, config: str, later_s: float, defer: bool) -> Teacher:
    """Train the teacher ``role`` (``teacher``, or ``init``: the one that starts it) from ``config``
    in its run folder, or reuse a finished one (:func:`teacher_digest`; ``plan.fresh_teacher``
    trains ``teacher`` again). It trains in ``plan.teacher_processes`` processes: one evaluates it
    at its end; data-parallel ones (each with its own BatchNorm statistics) do not, and its saved
    weights are evaluated after training. A reused teacher is evaluated again when
    ``plan.remeasure_teacher`` (``teacher`` only), or when its evaluation was cut short. With
    ``defer``, such an evaluation is left to the caller (:attr:`Teacher.pending`), to run beside
    the students. Every evaluation is recorded in the run's stamp, whose metrics are the teacher's
    AP; the first after training also in its ``metrics.json`` (the AP later DeFeat runs log)."""
    from ..analysis.run_summary import read_run

    out = plan.run_dir(role)
    weights = os.path.join(out, "model_final.pth")
    digest = teacher_digest(plan, config)
    fresh = plan.fresh_teacher and role == "teacher"
    record = (None if fresh or not os.path.isfile(weights) else read_stamp(out, digest, STAMP)) or {}
    n = max_iter(config)

    def result():
        run = read_run(out, "teacher", "the teacher's run")
        run.metrics = read_stamp(out, digest, STAMP)["metrics"]  # its last evaluation, per class too
        return run

    def evaluate(threads=None, first=False):
        t0 = time.time()
        metrics = evaluate_job(config, weights, os.path.join(out, "eval"), threads=threads)
        if first:  # at model_final's iteration
            record_box_metrics(out, metrics, n - 1)
        write_stamp(out, digest, metrics, STAMP)
        print(f"[{role}] {weights} evaluated: AP {metrics['AP']:.2f} ({elapsed(t0)})", flush=True)
        return metrics

    def evaluated(note, first):
        if defer:
            return Teacher(weights, note + ", beside the students", result, lambda threads: evaluate(threads, first))
        evaluate(first=first)
        return Teacher(weights, note, result)

    if record:
        first = record.get("metrics") is None  # trained, its evaluation cut short
        if first or (plan.remeasure_teacher and role == "teacher"):
            print(f"[{role}] reusing {out}", flush=True)
            how = "its evaluation cut short, evaluated now" if first else "evaluated on the validation set again"
            return evaluated(f"reused, {how}", first)
        print(f"[{role}] reusing the finished run in {out} (AP {record['metrics']['AP']:.2f})", flush=True)
        return Teacher(weights, "reused, its AP from its last evaluation (not evaluated again)", result)
    processes = plan.teacher_processes
    print(f"[{role}] {config} ({n} iterations" + (f", {processes} processes)" if processes > 1 else ")"), flush=True)
    t0 = time.time()
    parallel = processes > 1
    run_job(
        config,
        out,
        on_progress=Progress(later_s).callback(role, n, t0),
        processes=processes,
        evaluate=not parallel,
    )
    print(f"    {role} done in {elapsed(t0)}", flush=True)
    if not parallel:
        write_stamp(out, digest, read_run(out, "teacher", "the teacher's run").metrics, STAMP)
        return Teacher(weights, "evaluated on the validation set at the end of its training", result)
    write_stamp(out, digest, None, STAMP)  # trained: reused from now on, and evaluated by the next run if cut short
    return evaluated("its saved weights evaluated on the validation set after training", True)


def _students(plan: Plan, files: Dict[str, str], roles: List[str], teacher: Teacher) -> Dict[str, object]:
    """``{role: RunResult}`` of the students, trained side by side (or reused), with the teacher's
    pending evaluation on the first worker to free up."""
    from ..analysis.run_summary import read_run

    extra = {"alone": "", "defeat": file_digest(teacher.weights)}
    outs = {role: plan.run_dir(role) for role in roles}
    digests = {role: _digest(plan, files[role], extra[role]) for role in roles}
    todo = [role for role in roles if not read_stamp(outs[role], digests[role], STAMP)]
    todo.sort(key=lambda role: role != "defeat")  # the longest run first
    for role in roles:
        if role not in todo:
            print(f"[{role}] reusing the finished run in {outs[role]}", flush=True)
    jobs = []
    if todo:
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

        jobs = [job(role) for role in todo]
    if teacher.pending is not None:
        if jobs:
            print("    the teacher's evaluation follows the first student to finish", flush=True)
        jobs.append(teacher.pending)
    if jobs:
        t0 = time.time()
        run_parallel(jobs, workers=min(2 if plan.preset.side_by_side else 1, len(jobs)))
        if todo:
            print(f"    students done in {elapsed(t0)}", flush=True)
    return {role: read_run(outs[role], role, f"the {role} run") for role in roles}


def summary_labels(plan: Plan, files: Dict[str, str], roles) -> Dict[str, str]:
    """``{role: row label}`` of the summary: the preset's labels with each run's iterations (the
    default labels when it has none)."""
    from ..analysis.run_summary import LABELS

    labels = plan.preset.labels
    return {r: labels[r].format(iters=max_iter(files[r])) if r in labels and r in files else LABELS[r] for r in roles}


def write_summary(
    plan: Plan, runs: Dict[str, object], labels: Optional[Dict[str, str]] = None, notes: List[str] = ()
) -> dict:
    """``summary.md`` and ``summary.json`` in the report: the model-zoo table with the AP per
    class (when every run has it); without the student alone, the teacher and the DeFeat student.
    ``labels``: ``{role: row label}`` (default ``run_summary.LABELS``); ``notes``: lines added
    to ``summary.md`` (how the teacher's AP was obtained)."""
    from ..analysis.run_summary import LABELS, class_aps, format_summary, format_table, summarize, summary_json

    names = {**LABELS, **(labels or {})}
    per_class = all(class_aps(r.metrics) for r in runs.values())
    if "alone" in runs:
        summary = summarize(runs, per_class, names)
        text = format_summary(summary)
    else:
        from ..engine.metrics_file import METRICS

        rows = {names[role]: {k: runs[role].metrics[k] for k in METRICS} for role in runs}
        summary = {"title": f"DeFeat results: COCO box AP on {plan.val.name}", "rows": rows, "warnings": []}
        text = format_table(rows, summary["title"]) + "\n"
        if per_class:
            aps = {role: class_aps(runs[role].metrics) for role in runs}
            summary["per_class"] = {c: {role: aps[role][c] for role in runs} for c in aps["teacher"]}
            text += f"\n#### Per-class AP\n\n| class | {names['teacher']} | {names['defeat']} |\n|---|---|---|\n"
            text += "".join(
                f"| {c} | {v['teacher']:.2f} | {v['defeat']:.2f} |\n" for c, v in summary["per_class"].items()
            )
    if not per_class:
        text += "\nNo AP per class: a run had no detections on the validation set (AP nan).\n"
    text += "".join(f"\n{line}\n" for line in notes)
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
    from ..engine.quiet import load_defeat

    args = parse_args(argv)
    t_start = time.time()
    try:
        check_arguments(args)  # before the heavy imports
        load_defeat()  # torch, Detectron2 and the models, their import-time warnings filtered
        plan = check_inputs(args)
    except DeFeatError as e:
        raise SystemExit(f"{PROG}: error: {e}") from e
    print(f"[checks] {plan.train} and {plan.val}: {len(plan.classes)} classes, passed", flush=True)
    precision = args.precision or plan.preset.precision
    print(f"[precision] {'bf16 autocast' if plan.amp else 'fp32'} (--precision {precision})", flush=True)
    os.makedirs(plan.output, exist_ok=True)
    scale_base = inspect(plan, args.scale_base)
    files = write_configs(plan, scale_base)
    roles = ["alone", "defeat"] if args.alone else ["defeat"]
    students_s = max_iter(files["defeat"]) * plan.preset.s_per_iter[1]  # the ETA's prior for the students
    if plan.teacher_config:
        teacher = _given_teacher(plan)
    else:
        teacher_s = max_iter(files["teacher"]) * plan.preset.s_per_iter[0]
        if "init" in files:  # its ETA includes the teacher it starts (which may turn out finished)
            ensure_teacher(plan, "init", files["init"], teacher_s + students_s, defer=False)
        teacher = ensure_teacher(plan, "teacher", files["teacher"], students_s, defer=True)
    students = _students(plan, files, roles, teacher)
    runs = {"teacher": teacher.result(), **students}
    source = plan.teacher_config or files["teacher"]
    notes = [f"Teacher: {source}, weights {teacher.weights}, AP {runs['teacher'].metrics['AP']:.2f} ({teacher.note})"]
    labels = summary_labels(plan, files, ROLES)
    summary = write_summary(plan, {role: runs[role] for role in ROLES if role in runs}, labels, notes)
    deploy(plan, files["alone"], args.score_threshold, args.pictures)
    write_readme(plan, scale_base, files["alone"], args.pictures)
    print(f"[report] {plan.output}/README.md ({elapsed(t_start)})", flush=True)
    return summary


if __name__ == "__main__":
    from ..engine.entry import run_entry_point

    run_entry_point(main, script=PROG)
    sys.exit(0)
