#!/usr/bin/env python
"""Summarize your teacher, student-alone and DeFeat runs as the demo's model-zoo table.

    python tools/summarize_runs.py --teacher output/shapes/teacher --alone output/shapes/student \
        --defeat output/shapes/defeat [--per-class] [--output output/summary] [--overwrite]
    python tools/summarize_runs.py --teacher-weights T.pth --teacher-config T.yaml \
        --alone-weights S.pth --alone-config S.yaml --defeat-weights D.pth --defeat-config S.yaml \
        [--test-set NAME] [--dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT]] [--device cpu] ...

Each of the three runs is either a run folder (``--teacher DIR``: the last ``bbox`` evaluation
of the last run in its ``metrics.json``) or weights with their config (``--teacher-weights W
--teacher-config C``), evaluated here on the test set (``--test-set``, default the config's) by
the ``--eval-only`` path of ``train_net.py`` / ``lazy_train_net.py`` (strict weight loading; a
DeFeat config evaluates its student) into ``<output>/eval_<run>``. Prints the table with the gain
row (DeFeat - alone) and the share of the teacher-student AP gap closed, and writes it to
``<output>/summary.md`` and ``<output>/summary.json`` (kept unless ``--overwrite``);
``--per-class`` adds the AP per class that Detectron2's COCO evaluator logs. Runs evaluated on
different test sets are refused, and so are runs whose saved configs contradict their roles (a
DeFeat run as the teacher or the student alone, a run without DeFeat as the DeFeat run, a
student alone and a DeFeat run of different students, one run for two roles). A run folder
still training or stopped before its final evaluation, a run without detections (AP NaN) and a
gap share outside 0-100 % are named in the summary. The output folder is checked before any
work. The computation is ``defeat.analysis.run_summary``.
"""

import argparse
import logging
import os

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import ToolArgumentParser, add_overwrite_argument
from defeat.analysis.run_summary import LABELS, ROLES
from defeat.data.datasets import add_dataset_argument
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat


def parse_args(argv=None):
    p = ToolArgumentParser(prog="summarize_runs.py", description=__doc__.splitlines()[0])
    for role in ROLES:
        what = LABELS[role]
        p.add_argument(f"--{role}", default="", metavar="DIR", help=f"the {what}'s run folder (its OUTPUT_DIR)")
        p.add_argument(f"--{role}-weights", default="", metavar="FILE", help=f"or: the {what}'s weights to evaluate")
        p.add_argument(f"--{role}-config", default="", metavar="FILE", help="... with this config (YAML or .py)")
    p.add_argument("--test-set", default="", help="dataset the weights are evaluated on (default: each config's)")
    add_dataset_argument(p)
    p.add_argument("--device", default="", help="device the weights are evaluated on (default: each config's)")
    p.add_argument("--per-class", action="store_true", help="add the AP of each class")
    p.add_argument("--output", default="output/summary", help="folder for summary.md and summary.json")
    add_overwrite_argument(p)
    args = p.parse_args(argv)
    for role in ROLES:
        folder, weights, config = (getattr(args, f"{role}{s}") for s in ("", "_weights", "_config"))
        if folder and (weights or config):
            p.error(f"--{role} and --{role}-weights/--{role}-config both given; name the run one way")
        if not folder and not (weights and config):
            p.error(
                f"the {LABELS[role]} run is missing: give --{role} DIR (its run folder) or "
                f"--{role}-weights FILE with --{role}-config CONFIG"
            )
    if not any(getattr(args, f"{role}_weights") for role in ROLES):
        for option in ("test_set", "dataset", "device"):
            if getattr(args, option):
                p.error(f"--{option.replace('_', '-')} is only used to evaluate weights (--ROLE-weights)")
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="summarize_runs.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
from defeat.analysis.run_summary import RunResult, format_summary, read_run, summarize, summary_json
from defeat.checkpoint import atomic_write
from defeat.data.datasets import setup_datasets
from defeat.engine.outputs import check_output_dir, check_output_files
from defeat.errors import (
    ConfigFileError,
    DataCheckError,
    DatasetSpecError,
    DeFeatConfigError,
    OutputError,
    OverrideError,
    SummaryError,
    WeightsError,
)

logger = logging.getLogger("defeat.tools.summarize_runs")


def _check_outputs(args, targets):
    """The output guard: not into a run folder, no input replaced, nothing kept replaced unasked."""
    folders, inputs = {}, {}
    for role in ROLES:
        folder, weights, config = (getattr(args, f"{role}{s}") for s in ("", "_weights", "_config"))
        if folder:
            folders[f"{LABELS[role]} run folder (--{role})"] = folder
            inputs[f"metrics file of --{role}"] = os.path.join(folder, "metrics.json")
        else:
            inputs[f"weights of the {LABELS[role]} (--{role}-weights)"] = weights
            inputs[f"config of the {LABELS[role]} (--{role}-config)"] = config
    check_output_dir(args.output, folders)
    check_output_files(targets, inputs, args.overwrite)


def _evaluate(args, runs):
    """``{role: RunResult}`` of the evaluated weights. Every config is loaded, its test set compared
    with the others' (those of the run folders in ``runs`` too) and checked before any evaluation."""
    from defeat.analysis.evaluation import box_results, check_evaluation, evaluate_weights, evaluation_config
    from defeat.analysis.run_summary import check_comparable, check_roles, config_identity
    from defeat.config.files import test_dataset_names

    setup_datasets(args.dataset)
    planned = {}
    for role in ROLES:
        weights, config = getattr(args, f"{role}_weights"), getattr(args, f"{role}_config")
        if weights:
            out = os.path.join(args.output, f"eval_{role}")
            option = f"--{role}-config"
            cfg = evaluation_config(config, weights, out, test_set=args.test_set, device=args.device, option=option)
            identity = config_identity(cfg)
            if identity is not None:
                identity.origin = f"{option} {config!r}"
                if role != "teacher":  # DeFeat weights may be evaluated with the plain student config
                    identity.defeat = None
            planned[role] = (cfg, weights, config, f"weights {weights} with config {config}", identity)
    given = {r: RunResult(r, p[3], {}, test_dataset_names(p[0]), identity=p[4]) for r, p in planned.items()}
    check_comparable({**runs, **given})
    check_roles({**runs, **given})
    for role, (cfg, _, config, _, _) in planned.items():
        check_evaluation(cfg, config, args.overwrite, f"--{role}-config")
    results = {}
    for role, (cfg, weights, _, source, identity) in planned.items():
        logger.info("evaluating the %s: %s", LABELS[role], source)
        metrics = box_results(evaluate_weights(cfg, weights, f"--{role}-weights"), source)
        results[role] = RunResult(role, source, metrics, test_dataset_names(cfg), identity=identity)
    return results


def main(argv=None) -> dict:
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    targets = [os.path.join(args.output, name) for name in ("summary.md", "summary.json")]
    try:
        runs = {role: read_run(getattr(args, role), role, f"--{role}") for role in ROLES if getattr(args, role)}
        _check_outputs(args, targets)
        if len(runs) < len(ROLES):
            runs.update(_evaluate(args, runs))
        summary = summarize(runs, args.per_class)
    except (
        SummaryError,
        OutputError,
        ConfigFileError,
        OverrideError,
        DeFeatConfigError,
        DatasetSpecError,
        DataCheckError,
        WeightsError,
    ) as e:
        raise SystemExit(f"summarize_runs.py: error: {e}") from e
    for warning in summary["warnings"]:
        logger.warning(warning)
    text = format_summary(summary)
    os.makedirs(args.output, exist_ok=True)
    atomic_write(targets[0], lambda f: f.write(text), mode="w")
    atomic_write(targets[1], lambda f: f.write(summary_json(summary) + "\n"), mode="w")
    print("\n" + text)
    print(f"wrote {targets[0]} and {targets[1]}")
    return summary


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="summarize_runs.py")
