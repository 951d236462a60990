"""The command line of ``train_net.py`` and ``lazy_train_net.py``, importable without torch or
Detectron2: the scripts read it, and refuse a bad argument or a missing file, before their heavy
imports (``--help`` answers in a fraction of a second instead of the seconds they take).

:func:`detectron2_argument_parser` has the options of Detectron2's ``default_argument_parser``
(a test compares the two); :func:`argument_parser` adds ``--dataset``, ``--check-images`` and
``--overwrite``; :func:`take_trailing_options` reads options given among the trailing overrides.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from ..config.paths import check_config_file
from ..data.datasets import IMAGE_CHECKS, add_dataset_argument, check_dataset_specs

__all__ = [
    "detectron2_argument_parser",
    "argument_parser",
    "take_trailing_options",
    "parse_args",
    "parse_command_line",
]


def detectron2_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """The options, defaults and help of ``detectron2.engine.default_argument_parser``, built
    without importing Detectron2: ``--config-file``, ``--resume``, ``--eval-only``, ``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url`` (a port fixed by the user id) and the
    trailing ``opts``."""
    prog = sys.argv[0]
    parser = argparse.ArgumentParser(
        epilog=epilog
        or f"""
Examples:

Run on single machine:
    $ {prog} --num-gpus 8 --config-file cfg.yaml

Change some config options:
    $ {prog} --config-file cfg.yaml MODEL.WEIGHTS /path/to/weight.pth SOLVER.BASE_LR 0.001

Run on multiple machines:
    (machine0)$ {prog} --machine-rank 0 --num-machines 2 --dist-url <URL> [--other-flags]
    (machine1)$ {prog} --machine-rank 1 --num-machines 2 --dist-url <URL> [--other-flags]
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Whether to attempt to resume from the checkpoint directory. "
        "See documentation of `DefaultTrainer.resume_or_load()` for what it means.",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of gpus *per machine*")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    # Detectron2's deterministic port: an orphan process of an earlier run shows as a port in use.
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    parser.add_argument(
        "--dist-url",
        default="tcp://127.0.0.1:{}".format(port),
        help="initialization URL for pytorch distributed backend. See "
        "https://pytorch.org/docs/stable/distributed.html for details.",
    )
    parser.add_argument(
        "opts",
        help="""
Modify config options at the end of the command. For Yacs configs, use
space-separated "PATH.KEY VALUE" pairs.
For python-based LazyConfig, use "path.key=value".
        """.strip(),
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` plus ``--dataset``, ``--check-images`` and ``--overwrite``."""
    parser = add_dataset_argument(detectron2_argument_parser())
    parser.add_argument(
        "--check-images",
        choices=IMAGE_CHECKS,
        default="verify",
        help="how the training images are read before training (see docs/tools.md)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train a new run in an OUTPUT_DIR that holds one (its files are moved to "
        "OUTPUT_DIR/.replaced-<time>/, and back if the new run fails to start; without it such a run "
        "is refused unless --resume)",
    )
    return parser


def take_trailing_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Parse the options that argparse left among the trailing config overrides (``args.opts``,
    an ``argparse.REMAINDER``: ``train_net.py ... MODEL.X 1 --resume`` would otherwise train
    without resuming and fail on the override ``--resume``). An unknown ``--option`` there is
    refused with argparse's one-line error."""
    opts, rest, flags = list(getattr(args, "opts", None) or []), [], []
    i = 0
    while i < len(opts):
        item = opts[i]
        if not item.startswith("--"):
            rest.append(item)
            i += 1
            continue
        name = item.split("=", 1)[0]
        action = parser._option_string_actions.get(name)
        if action is None:
            parser.error(f"unrecognized option {item!r} among the config overrides {opts}")
        takes_value = action.nargs != 0 and "=" not in item
        if takes_value and (i + 1 >= len(opts) or opts[i + 1].startswith("--")):
            parser.error(f"{name} needs a value (found among the config overrides)")
        flags += [item, opts[i + 1]] if takes_value else [item]
        i += 2 if takes_value else 1
    args.opts = rest
    if flags:
        required = [a for a in parser._actions if a.required]  # given before the overrides already
        for action in required:
            action.required = False
        try:
            extra = parser.parse_args(flags)
        finally:
            for action in required:
                action.required = True
        for action in parser._actions:
            if action.dest == "opts" or action.dest == "help":
                continue
            value = getattr(extra, action.dest, None)
            if value != action.default:
                if isinstance(value, list) and isinstance(getattr(args, action.dest, None), list):
                    value = [*getattr(args, action.dest), *value]  # repeatable options (--dataset)
                setattr(args, action.dest, value)
    return args


def check_launch_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (``parser.error``) process counts ``launch`` would misread: ``--num-gpus`` below 0
    (0 runs one process, as 1 does), ``--num-machines`` below 1, ``--machine-rank`` outside
    ``0 .. --num-machines - 1``."""
    if args.num_gpus < 0:
        parser.error(f"--num-gpus {args.num_gpus}: give the number of processes per machine (1 or more)")
    if args.num_machines < 1:
        parser.error(f"--num-machines {args.num_machines}: give the number of machines (1 or more)")
    if not 0 <= args.machine_rank < args.num_machines:
        parser.error(
            f"--machine-rank {args.machine_rank}: with --num-machines {args.num_machines} it is one of "
            f"0..{args.num_machines - 1} (this machine's place among them)"
        )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments; options are also accepted among the trailing config overrides;
    the process counts checked (:func:`check_launch_options`)."""
    parser = argument_parser()
    args = take_trailing_options(parser, parser.parse_args(argv))
    check_launch_options(parser, args)
    return args


def parse_command_line(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """:func:`parse_args`, then what the scripts can refuse before their heavy imports, in the
    order the run would: a ``--dataset`` spec (or one of ``$DEFEAT_COCO_DATASETS``) that does not
    parse or names missing files, and a config file that does not exist.

    Raises:
        ConfigFileError, DatasetSpecError: as the run would raise them later.
    """
    args = parse_args(argv)
    check_dataset_specs(args.dataset)  # launch_main registers them before the config is read
    check_config_file(args.config_file)
    return args
