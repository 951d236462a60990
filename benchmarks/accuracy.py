#!/usr/bin/env python
"""Accuracy benchmark: baseline vs DeFeat variants over several seeds, mean +- std box AP.

    python benchmarks/accuracy.py                       # demo data, 3 seeds, all variants
    python benchmarks/accuracy.py --family retinanet    # the same for the demo RetinaNets
    python benchmarks/accuracy.py --family cascade      # ... Cascade R-CNNs (YAML)
    python benchmarks/accuracy.py --family fcos         # ... FCOS (LazyConfigs, lazy_train_net.py)
    python benchmarks/accuracy.py --data glyphs         # the Faster R-CNNs on the second demo dataset
    python benchmarks/accuracy.py --data photos         # ... on the third (objects cut from real photos)
    python benchmarks/accuracy.py --variants baseline defeat --seeds 0 1 --iters 300
    python benchmarks/accuracy.py --train-set my_train --test-set my_val \
        --student cfg.yaml --defeat cfg_defeat.yaml --teacher-weights t.pth --opts SOLVER.BASE_LR 0.01
    python benchmarks/accuracy.py --dataset my_train=data/train.json --dataset my_val=data/val.json \
        --train-set my_train --test-set my_val ...   # a COCO-format dataset named on the spot

Every run is a ``train_net.py`` subprocess (``lazy_train_net.py`` for a ``.py`` LazyConfig, with
the same YAML-style overrides translated, see ``defeat.demo.experiments.lazy_overrides``); a
finished run of the same config (same digest of its saved ``config.yaml``) is reused (delete its
folder to redo). While runs train, each prints its iteration and ETA every 20 iterations with
the ETA of all runs (``defeat.demo.progress``). Results go to
``<output>/accuracy.json`` and a Markdown table to ``<output>/accuracy.md``.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import ToolArgumentParser, at_least, distinct
from defeat.data.datasets import add_dataset_argument, check_dataset_specs, setup_datasets, take_dataset_options
from defeat.demo.data import DEFAULT_STYLE, STYLES
from defeat.demo.experiments import (
    METRICS,
    config_digest,
    elapsed,
    evaluate_job,
    is_lazy,
    iters_opts,
    max_iter,
    read_box_metrics,
    run_job,
    run_parallel,
)
from defeat.demo.progress import Progress
from defeat.engine.entry import run_entry_point
from defeat.engine.metrics_file import measured_box_ap
from defeat.engine.quiet import load_defeat

# name -> (which config, extra overrides). "defaults" is the DeFeat config as it is; the neck
# ablations turn the prediction terms off. "coupled" keeps the same total neck weight.
_CROSS_OFF = ["MODEL.DEFEAT.CROSS_HEAD.ENABLED", "False"]
_NECK_ONLY = ["MODEL.DEFEAT.HEAD.ENABLED", "False", *_CROSS_OFF]
VARIANTS = {
    "baseline": ("student", []),
    "defaults": ("defeat", []),
    "defeat": ("defeat", ["MODEL.DEFEAT.HEAD.ENABLED", "True"]),
    "neck": ("defeat", _NECK_ONLY),
    "head": ("defeat", ["MODEL.DEFEAT.NECK.ENABLED", "False", *_CROSS_OFF, "MODEL.DEFEAT.HEAD.ENABLED", "True"]),
    "coupled": ("defeat", [*_NECK_ONLY, "MODEL.DEFEAT.NECK.MASK_ASSIGN", "coupled"]),
    # the neck's two regions on their own (the defaults' weight for the region kept)
    "obj": ("defeat", [*_NECK_ONLY, "MODEL.DEFEAT.NECK.BG_WEIGHT", "0.0"]),
    "bg": ("defeat", [*_NECK_ONLY, "MODEL.DEFEAT.NECK.OBJ_WEIGHT", "0.0"]),
}
# Run without --variants: all but "defaults", which repeats "neck" for the demo configs (their
# prediction terms are off) and is there for configs of yours that turn some on.
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "defaults"]


# --family: default student, DeFeat student and teacher (config, weights) on the demo data.
FAMILIES = {
    "rcnn": (
        "configs/demo/student_slimR18.yaml",
        "configs/demo/defeat_slimR18_from_R18.yaml",
        "configs/demo/teacher_R18.yaml",
        "output/demo/runs/teacher/model_final.pth",
    ),
    "retinanet": (
        "configs/demo/retinanet_student_slimR18.yaml",
        "configs/demo/defeat_retinanet_slimR18_from_R18.yaml",
        "configs/demo/retinanet_teacher_R18.yaml",
        "output/demo/retinanet/runs/teacher/model_final.pth",
    ),
    "cascade": (
        "configs/demo/cascade_student_slimR18.yaml",
        "configs/demo/defeat_cascade_slimR18_from_R18.yaml",
        "configs/demo/cascade_teacher_R18.yaml",
        "output/demo/cascade_teacher_R18/model_final.pth",
    ),
    "fcos": (
        "configs/lazy/demo_fcos_student_slimR18.py",
        "configs/lazy/demo_defeat_fcos_slimR18_from_R18.py",
        "configs/lazy/demo_fcos_teacher_R18.py",
        "output/lazy/demo_fcos_teacher_R18/model_final.pth",
    ),
}
FAMILY_ARGS = ("student", "defeat", "teacher_config", "teacher_weights")
# --data glyphs: the same four for the second generated dataset (python -m defeat.demo.data --dataset glyphs)
GLYPHS_FAMILIES = {
    "rcnn": (
        "configs/demo/glyphs_student_slimR18.yaml",
        "configs/demo/glyphs_defeat_slimR18_from_R18.yaml",
        "configs/demo/glyphs_teacher_R18.yaml",
        "output/demo/glyphs_teacher_R18/model_final.pth",
    ),
}
# --data photos: the same for the third, of real photographs (python -m defeat.demo.data --dataset photos)
PHOTOS_FAMILIES = {
    "rcnn": (
        "configs/demo/photos_student_slimR18.yaml",
        "configs/demo/photos_defeat_slimR18_from_R18.yaml",
        "configs/demo/photos_teacher_R18.yaml",
        "output/demo/photos_teacher_R18/model_final.pth",
    ),
}
# --data -> its families (the shapes data, the default, takes FAMILIES)
DATA_FAMILIES = {"glyphs": GLYPHS_FAMILIES, "photos": PHOTOS_FAMILIES}


def _coupled_weights(defeat_cfg, opts):
    """OBJ_WEIGHT = obj + bg of the decoupled config, BG_WEIGHT = 0 (same total weight)."""
    neck = defeat_settings(load_with_yaml_overrides(defeat_cfg, opts))["neck"]
    total = neck["obj_weight"] + neck["bg_weight"]
    return ["MODEL.DEFEAT.NECK.OBJ_WEIGHT", str(total), "MODEL.DEFEAT.NECK.BG_WEIGHT", "0.0"]


def _finished_with(out, config_file, opts) -> bool:
    """True when ``out`` holds a finished run of exactly this config (its saved ``config.yaml``
    has the same digest), so it can be reused; a run of another config is trained again."""
    try:
        read_box_metrics(out)
        saved = config_digest(os.path.join(out, "config.yaml"), [], lazy=is_lazy(config_file))
    except (OSError, RuntimeError):
        return False
    if saved != config_digest(config_file, opts):
        print(f"{out} holds a run of another config (e.g. an older schedule): training it again", flush=True)
        return False
    return True


def _split_top_level(text: str) -> list:
    """``text`` split at commas outside brackets and quotes: ``A=(1,2),B=x`` -> ``["A=(1,2)", "B=x"]``."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0 and not quote:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth or quote:
        raise ValueError(f"unbalanced brackets or quotes in {text!r}")
    return parts + [current]


def parse_define(spec: str, known) -> tuple:
    """``NAME:BASE:KEY=VAL,KEY=VAL`` -> ``(name, base, [KEY, VAL, ...])``; a value may be a tuple
    (``MODEL.DEFEAT.NECK.IN_FEATURES=('p2','p3')``). Raises ValueError with what is wrong."""
    fields = spec.split(":", 2)
    if len(fields) != 3 or not fields[0] or not fields[1]:
        raise ValueError(f"{spec!r} is not NAME:BASE:KEY=VAL,... (e.g. neck_bg8:neck:MODEL.DEFEAT.NECK.BG_WEIGHT=8)")
    name, base, pairs = fields
    if base not in known:
        raise ValueError(f"{spec!r}: base variant {base!r} is not one of {sorted(known)}")
    if name in known:
        raise ValueError(f"{spec!r}: variant {name!r} exists already; choose a new name")
    extra = []
    for kv in (x.strip() for x in _split_top_level(pairs)):
        key, sep, value = kv.partition("=")
        if not kv or not sep or not key or not value:
            raise ValueError(f"{spec!r}: {kv!r} is not KEY=VALUE")
        extra += [key, value]
    if not extra:
        raise ValueError(f"{spec!r} sets no key; give at least one KEY=VALUE")
    return name, base, extra


TEACHER_SCHEDULE = "teacher"  # --iters: the students train as long as the teacher did
CONFIG_SCHEDULE = "config"  # --iters: each student config's own SOLVER.MAX_ITER


def student_iters(text: str):
    """An argparse ``type`` for ``--iters``: an integer >= 1, or ``teacher`` or ``config``."""
    if text in (TEACHER_SCHEDULE, CONFIG_SCHEDULE):
        return text
    try:
        return at_least(1)(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e} (or {TEACHER_SCHEDULE!r} or {CONFIG_SCHEDULE!r})") from None


# Keys each run sets itself (after --opts): an --opts value of one would be ignored or would put
# every run into one folder.
SET_PER_RUN = {
    "OUTPUT_DIR": "each run has its folder under --output (named by --tag)",
    "SEED": "each run's seed comes from --seeds",
    "MODEL.DEFEAT.TEACHER.WEIGHTS": "give the teacher with --teacher-weights",
}


def parse_args(argv=None):
    p = ToolArgumentParser(prog="accuracy.py", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=at_least(0), nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        help=f"from {list(VARIANTS)} and names given with --define (default: {DEFAULT_VARIANTS})",
    )
    p.add_argument(
        "--define",
        nargs="+",
        default=[],
        metavar="NAME:BASE:KEY=VAL,...",
        help="extra variants, e.g. defeat_T2:defeat:MODEL.DEFEAT.HEAD.TEMPERATURE=2",
    )
    p.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        default="rcnn",
        help="demo configs whose defaults the next four options take",
    )
    p.add_argument(
        "--data",
        choices=STYLES,
        default=DEFAULT_STYLE,
        help="which generated demo dataset the family's configs train on (glyphs, photos: --family rcnn)",
    )
    p.add_argument("--student", default=None)
    p.add_argument("--defeat", default=None)
    p.add_argument("--teacher-config", default=None)
    p.add_argument(
        "--teacher-weights", default=None, help="trained teacher; trained with --teacher-config first if missing"
    )
    p.add_argument(
        "--no-eval-teacher",
        dest="eval_teacher",
        action="store_false",
        help="do not evaluate given teacher weights on the test set before the students train",
    )
    add_dataset_argument(p)
    p.add_argument("--train-set", default=None, help="dataset name (default: the configs')")
    p.add_argument("--test-set", default=None)
    p.add_argument(
        "--iters",
        type=student_iters,
        default=TEACHER_SCHEDULE,
        help=f"SOLVER.MAX_ITER of the students: a number, {TEACHER_SCHEDULE!r} (default: as long as the "
        "teacher trained: its run's saved config.yaml, else --teacher-config) or "
        f"{CONFIG_SCHEDULE!r} (the student configs' own, e.g. the demo's 500); "
        "their LR steps and warm-ups scale with it (docs/configs.md)",
    )
    p.add_argument("--output", default="output/bench_accuracy")
    p.add_argument("--tag", default="", help="suffix of run folders, to keep sweeps apart")
    p.add_argument("--jobs", type=at_least(1), default=2, help="runs side by side, one CPU thread each")
    p.add_argument(
        "--threads",
        type=at_least(1),
        default=None,
        help="CPU threads per run (default: 1 when --jobs > 1, else all); set 1 when another job shares the CPU",
    )
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="overrides for every student run")
    args = take_dataset_options(p.parse_args(argv))
    families = FAMILIES
    if args.data in DATA_FAMILIES:
        families = DATA_FAMILIES[args.data]
        if args.family not in families:
            p.error(
                f"--data {args.data} has demo configs for --family {', '.join(families)} only; for --family "
                f"{args.family} pass --student, --defeat, --teacher-config and --teacher-weights"
            )
    for name, default in zip(FAMILY_ARGS, families[args.family]):
        if getattr(args, name) is None:
            setattr(args, name, default)
    distinct(p, "--seeds", args.seeds)
    distinct(p, "--variants", args.variants)
    if os.sep in args.tag or args.tag in (".", ".."):
        p.error(f"--tag {args.tag!r} is a suffix of the run folders' names: it may not hold {os.sep!r} or be . or ..")
    if len(args.opts) % 2:
        p.error(f"--opts must be KEY VALUE pairs, got {args.opts}")
    for key in args.opts[0::2]:
        if key in SET_PER_RUN:
            p.error(f"--opts {key}: {SET_PER_RUN[key]}")
    if args.teacher_weights and os.path.isdir(args.teacher_weights):
        p.error(f"--teacher-weights {args.teacher_weights!r} is a folder; give the weights file (e.g. model_final.pth)")
    for spec in args.define:
        try:
            name, base, extra = parse_define(spec, VARIANTS)
        except ValueError as e:
            p.error(f"--define {e}")
        VARIANTS[name] = (VARIANTS[base][0], VARIANTS[base][1] + extra)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    return args


def parse_command_line(argv=None):
    """:func:`parse_args`, then the ``--dataset`` specs (and ``$DEFEAT_COCO_DATASETS``) checked as
    :func:`main` would register them: before the heavy imports."""
    args = parse_args(argv)
    check_dataset_specs(args.dataset)
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_command_line, script="accuracy.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
from defeat.config.files import defeat_settings, load_with_yaml_overrides, saved_model_fields


def teacher_schedule(args, common) -> tuple:
    """``(iterations, where from)`` of the teacher's training: ``SOLVER.MAX_ITER`` (or
    ``train.max_iter``) of the ``config.yaml`` its run saved beside ``--teacher-weights``, else of
    ``--teacher-config`` with ``common`` (the overrides it trains with here)."""
    import yaml

    saved = os.path.join(os.path.dirname(args.teacher_weights), "config.yaml")
    if os.path.isfile(args.teacher_weights) and os.path.isfile(saved):
        try:
            with open(saved) as f:
                fields = saved_model_fields(yaml.safe_load(f) or {})
        except (OSError, yaml.YAMLError):
            fields = None
        if fields is not None and fields.max_iter:
            return fields.max_iter, f"the teacher's run, {saved}"
    return max_iter(args.teacher_config, common), f"the teacher config, {args.teacher_config}"


def students_schedule(args, common) -> tuple:
    """``(SOLVER.MAX_ITER of the students, where from)`` for ``--iters`` (``common``: the
    overrides of every run): the number given, the teacher's schedule, or the DeFeat config's own."""
    if args.iters == TEACHER_SCHEDULE:
        n, source = teacher_schedule(args, common)
        return n, f"as long as the teacher: {source}"
    if args.iters == CONFIG_SCHEDULE:
        return max_iter(args.defeat, common), f"the student configs' own, {args.defeat}"
    return args.iters, "--iters"


def main(argv=None):
    """``argv``: the command line, or its parsed arguments (:func:`parse_command_line`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    t0 = time.time()
    setup_datasets(args.dataset)  # checked now; exported to $DEFEAT_COCO_DATASETS for the train_net.py runs
    common = list(args.opts)
    if args.train_set:
        common += ["DATASETS.TRAIN", f"('{args.train_set}',)"]
    if args.test_set:
        common += ["DATASETS.TEST", f"('{args.test_set}',)"]
    teacher_ap, teacher_note = None, "AP unknown (--no-eval-teacher and no evaluation of these weights beside them)"
    if not os.path.isfile(args.teacher_weights):
        print(f"training the teacher: {args.teacher_config}", flush=True)
        n = max_iter(args.teacher_config, common)
        on_progress = Progress().callback("teacher", n, time.time())
        teacher_ap = run_job(
            args.teacher_config, os.path.dirname(args.teacher_weights), common, on_progress=on_progress
        )["AP"]
        teacher_note = "evaluated at the end of its training"
    elif args.eval_teacher:  # given weights are measured before any student trains on them
        out = os.path.join(args.output, f"teacher_eval{args.tag}")
        teacher_ap = evaluate_job(args.teacher_config, args.teacher_weights, out, common)["AP"]
        teacher_note = "evaluated on the test set before the students"
    else:  # only an evaluation of these very weights (the checkpoint's iteration) counts
        teacher_ap = measured_box_ap(args.teacher_weights)
        if teacher_ap is not None:
            teacher_note = "as its training run evaluated these weights (metrics.json)"
    shown = "?" if teacher_ap is None else f"{teacher_ap:.2f}"
    print(f"teacher: {args.teacher_config}, weights {args.teacher_weights}, AP {shown} ({teacher_note})", flush=True)
    n_student, schedule_source = students_schedule(args, common)
    print(f"students: {n_student} iterations ({schedule_source})", flush=True)
    common += iters_opts(n_student)
    planned, todo = [], []
    progress = Progress(workers=args.jobs)  # each run's iteration and the ETA of all of them
    for seed in args.seeds:
        for name in args.variants:
            which, extra = VARIANTS[name]
            cfg = args.student if which == "student" else args.defeat
            teacher = ["MODEL.DEFEAT.TEACHER.WEIGHTS", args.teacher_weights] if which == "defeat" else []
            opts = common + teacher + extra + ["SEED", str(seed)]  # a variant may name another teacher
            if "coupled" in extra:  # the coupled ablation or a variant defined on top of it
                opts += _coupled_weights(cfg, opts)
            out = os.path.join(args.output, f"{name}{args.tag}_seed{seed}")
            planned.append((name, out))
            if _finished_with(out, cfg, opts):
                print(f"[{name} seed {seed}] reusing {out}", flush=True)
            else:
                run, total = os.path.basename(out), max_iter(cfg, opts)
                progress.add(run, total)
                todo.append(
                    dict(
                        config_file=cfg,
                        output_dir=out,
                        opts=opts,
                        on_start=functools.partial(progress.start, run),
                        on_progress=progress.callback(run, total),
                        **({"threads": args.threads} if args.threads else {}),
                    )
                )
    print(f"{len(todo)} runs to train, {args.jobs} at a time ({elapsed(t0)} so far)", flush=True)
    run_parallel(todo, workers=args.jobs)
    if todo:
        print(f"{len(todo)} runs trained ({elapsed(t0)} so far)", flush=True)
    runs = {}
    for name, out in planned:
        runs.setdefault(name, []).append(read_box_metrics(out))
    summary = {}
    for name, ms in runs.items():
        ap = [m["AP"] for m in ms]
        summary[name] = {
            "mean": {k: statistics.mean(m[k] for m in ms) for k in METRICS},
            "std_AP": statistics.stdev(ap) if len(ap) > 1 else 0.0,
            "AP_per_seed": ap,
        }
    base = summary.get("baseline", {}).get("mean", {}).get("AP")
    lines = [
        f"seeds {args.seeds}; students {n_student} iterations ({schedule_source}); teacher "
        f"{args.teacher_config}, weights {args.teacher_weights}, AP {shown} ({teacher_note})",
        "",
        "| variant | AP (mean +- std) | AP50 | AP75 | gain | gap closed | per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        m = s["mean"]
        gain = "" if base is None or name == "baseline" else f"{m['AP'] - base:+.2f}"
        closed = ""
        if base is not None and teacher_ap is not None and name != "baseline" and teacher_ap > base:
            closed = f"{100 * (m['AP'] - base) / (teacher_ap - base):.0f}%"
        lines.append(
            f"| {name} | {m['AP']:.2f} +- {s['std_AP']:.2f} | {m['AP50']:.2f} | {m['AP75']:.2f} | {gain} | {closed} | "
            + ", ".join(f"{a:.1f}" for a in s["AP_per_seed"])
            + " |"
        )
    table = "\n".join(lines)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "accuracy.json"), "w") as f:
        json.dump(
            {"teacher_AP": teacher_ap, "student_iters": n_student, "summary": summary, "args": vars(args)}, f, indent=2
        )
    with open(os.path.join(args.output, "accuracy.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return summary


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="accuracy.py")
    sys.exit(0)
