#!/usr/bin/env python
"""Export the student of a DeFeat checkpoint as a plain Detectron2 checkpoint.

    python tools/export_student.py output/defeat_run/model_final.pth student_final.pth \
        [--verify-config configs/demo/student_slimR18.yaml] [--dataset NAME=ANNOTATIONS.json] [KEY VALUE ...]

The output holds ``{"model": ...}`` without adapters (``distiller.*``), teacher, optimizer,
scheduler or iteration; use it as ``MODEL.WEIGHTS`` of the plain student config. It also holds
``"classes"``: ``{"dataset", "names", "category_ids"}``, item ``i`` of each list the model's class
``i`` (the dataset's own COCO category ids), from ``--dataset``, else from the verify config's
training or test set when it is registered (``$DEFEAT_COCO_DATASETS``); without either the export
carries no classes (a warning says so). Classes of another count than the model's are refused. With
``--verify-config`` (a YAML or LazyConfig ``.py`` file; options may come in any order) the
weights are first loaded into that config's model, and nothing is written if any key is
missing, unexpected or of the wrong shape. Trailing overrides apply to the verify config
(``KEY VALUE`` pairs for YAML, ``key=value`` for a LazyConfig).
"""

import argparse
import logging
import os
import sys

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import (
    ToolArgumentParser,
    add_overwrite_argument,
    input_file_problem,
    overwritten_input,
    setup_tool_logging,
)
from defeat.engine.entry import run_entry_point
from defeat.engine.outputs import check_output_files
from defeat.engine.quiet import load_defeat
from defeat.errors import OutputError


def parse_args(argv=None):
    p = ToolArgumentParser(prog="export_student.py", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="DeFeat checkpoint (e.g. model_final.pth of a DeFeat run)")
    p.add_argument("output", help="path of the exported student checkpoint (its folder is created)")
    p.add_argument(
        "--verify-config",
        default="",
        metavar="FILE",
        help="plain student config (YAML or LazyConfig .py) to load the export into before writing it",
    )
    p.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="OVERRIDE",
        help="overrides for --verify-config: KEY VALUE pairs (YAML) or key=value (LazyConfig)",
    )
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT]",
        help="the dataset the student was trained on: its class names and category ids go into the export",
    )
    add_overwrite_argument(p)
    args = p.parse_intermixed_args(argv)
    problem = input_file_problem(args.checkpoint, "checkpoint")
    if problem:
        p.error(problem)
    clash = overwritten_input(args.output, input_checkpoint=args.checkpoint, verify_config=args.verify_config)
    if clash:
        p.error(clash)
    if os.path.isdir(args.output):
        p.error(f"the output {args.output!r} is a folder; give a file path such as {args.output}/student.pth")
    try:
        check_output_files([args.output], {}, args.overwrite, "the output")
    except OutputError as e:
        p.error(str(e))
    if args.verify_config and not os.path.isfile(args.verify_config):
        p.error(f"--verify-config file not found: {args.verify_config!r}")
    if args.opts and not args.verify_config:
        p.error(f"config overrides {args.opts} given without --verify-config")
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="export_student.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
from defeat.analysis.export import (
    ExportError,
    check_export_classes,
    classes_in_state,
    export_classes,
    read_student_state,
    write_student,
)
from defeat.config.files import (
    ConfigFileError,
    architecture,
    build_model_from_config,
    is_defeat_config,
    load_config,
    num_classes,
    set_run_values,
    test_dataset_names,
    train_dataset_names,
)

logger = logging.getLogger("defeat.tools.export_student")


def verify(config_file: str, state, opts=()):
    """Load ``state`` strictly into the model of ``config_file``; raise ``SystemExit`` on any
    key or shape problem (the message names the config). Returns the config."""
    try:
        cfg = load_config(config_file, opts)
    except ConfigFileError as e:
        raise SystemExit(f"--verify-config: {e}") from e
    set_run_values(cfg, device="cpu")
    if is_defeat_config(cfg):
        raise SystemExit(
            f"--verify-config wants the plain student config, got {architecture(cfg).__name__} "
            f"in {config_file!r} (a DeFeat config)"
        )
    model = build_model_from_config(cfg)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        raise SystemExit(f"export does not fit {config_file}: {' '.join(str(e).split())}") from e
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(
            f"export does not fit {config_file}: missing {result.missing_keys[:10]}, "
            f"unexpected {result.unexpected_keys[:10]}"
        )
    print(f"verified: all {len(state)} tensors load into {type(model).__name__} of {config_file}")
    return cfg


def main(argv=None) -> int:
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    setup_tool_logging()
    try:
        state = read_student_state(args.checkpoint)
        cfg = verify(args.verify_config, state, args.opts) if args.verify_config else None
        names = [*train_dataset_names(cfg), *test_dataset_names(cfg)] if cfg is not None else []
        classes, source = export_classes(args.dataset, names)
        if cfg is not None:
            check_export_classes(classes, source, *num_classes(cfg))
        else:
            check_export_classes(classes, source, classes_in_state(state), "the checkpoint's box predictor")
        if classes is None:
            logger.warning(
                "the export carries no class names or category ids (no --dataset, and no registered dataset in "
                "--verify-config); pass --dataset NAME=ANNOTATIONS.json[:IMAGE_ROOT] to keep them with the weights"
            )
        write_student(state, args.output, args.checkpoint, classes)
    except ExportError as e:
        raise SystemExit(f"export_student.py: error: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, ARGS, script="export_student.py"))
