"""What ``train_net.py`` and ``lazy_train_net.py`` share: their command line, the datasets every
process registers, the hold on the output folder (:func:`hold_output_dir`: its lock, a failed
start undone), the checks before anything is written or built (:func:`preflight`), the training
sets checked after loading, the guard of a resumed run's ``config.yaml``, and the launch."""

import argparse
import contextlib
import logging
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser, launch
from detectron2.utils.logger import setup_logger

from ..config.files import key_of, output_dir
from ..data.checks import IMAGE_CHECKS, check_training_data
from ..data.datasets import add_dataset_argument, register_provided_datasets, setup_datasets
from .preflight import check_run
from .quiet import announce
from .run_folder import RunFolder, set_aside_files

__all__ = [
    "argument_parser",
    "parse_args",
    "launch_main",
    "register_datasets",
    "load_and_check_training_data",
    "preflight",
    "hold_output_dir",
    "take_trailing_options",
    "check_launch_options",
    "setup_defeat_logger",
    "HeldLogRecords",
    "hold_log_records",
]


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` plus ``--dataset`` and ``--check-images``."""
    parser = add_dataset_argument(default_argument_parser())
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


def preflight(cfg, args: argparse.Namespace, run: Optional[RunFolder] = None) -> None:
    """On the main process, before anything is written or built: the output guard, the batch
    against the processes, the device, the weights and every dataset of the run
    (``defeat.engine.preflight.check_run``); then, with ``--overwrite``, the earlier run's files
    moved aside: by ``run`` (moved back if the start fails), else for good, and logged."""
    if not comm.is_main_process():
        return
    replaced = check_run(cfg, args, comm.get_world_size())
    if not replaced:
        return
    if run is not None:
        run.set_aside(replaced)
        return
    target, moved = set_aside_files(output_dir(cfg), replaced)
    logging.getLogger(__name__).warning("--overwrite: the earlier run's %s moved to %s", ", ".join(moved), target)


def hold_output_dir(cfg) -> RunFolder:
    """The :class:`~defeat.engine.run_folder.RunFolder` of the run of ``cfg`` (its lock, and its
    start undone on error), held by the main process only."""
    return RunFolder(output_dir(cfg), key_of(cfg, "output_dir"), enabled=comm.is_main_process())


def launch_main(main: Callable, args: argparse.Namespace) -> None:
    """Register ``--dataset`` (errors before any process starts; exported to the workers), then
    run ``main(args)`` in every process of Detectron2's ``launch``."""
    print("Command Line Args:", args)
    setup_datasets(args.dataset)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def register_datasets(args: argparse.Namespace, names: Iterable[str]) -> None:
    """In every process (each DDP worker too): the ``--dataset`` specs (``args``; exported to
    ``$DEFEAT_COCO_DATASETS`` for processes started later) and the generated datasets among
    ``names`` (``defeat.data.datasets.PROVIDED_DATASETS``)."""
    setup_datasets(getattr(args, "dataset", None))
    register_provided_datasets(names)


def load_and_check_training_data(
    names: Sequence[str], num_classes: Optional[int], key: str, images: str = "verify"
) -> Optional[Dict[str, List[dict]]]:
    """The training sets' dicts, loaded once and checked against the model's ``num_classes``
    (``key``: its config key) on the main process (a failed check stops the other processes
    too, as ``launch()`` ends them); ``None`` elsewhere."""
    if not comm.is_main_process():
        return None
    dicts = {name: DatasetCatalog.get(name) for name in names}
    check_training_data(dicts, num_classes, key, images=images)
    return dicts


def setup_defeat_logger(output_dir: str) -> logging.Logger:
    """The ``defeat`` logger on the console and in ``output_dir``'s ``log.txt`` (Detectron2's
    ``setup_logger``, after ``default_setup``), and the line that says which known-harmless
    messages of the pinned stack are hidden (``defeat.engine.quiet``)."""
    logger = setup_logger(output_dir, distributed_rank=comm.get_rank(), name="defeat")
    announce(logger)
    return logger


class HeldLogRecords(logging.Handler):
    """The INFO (and higher) records of the ``defeat`` loggers made inside a
    :func:`hold_log_records` block, before the run's logger is set up (``setup_logger(OUTPUT_DIR,
    name="defeat")``), such as the config loader's line about a rescaled schedule; :meth:`replay`
    logs them again once it is."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        """Log the held records (once) through the handlers their loggers have now."""
        records, self.records = self.records, []
        for record in records:
            logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def hold_log_records(name: str = "defeat") -> Iterator[HeldLogRecords]:
    """Inside the block, keep the INFO records of logger ``name`` and its children, which would be
    dropped while it has no handler; call ``replay()`` on the result after ``setup_logger``. When
    the logger already shows INFO records (set up earlier), nothing is held."""
    logger, held = logging.getLogger(name), HeldLogRecords()
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        yield held
        return
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(held)
    try:
        yield held
    finally:
        logger.removeHandler(held)
        logger.setLevel(level)
