"""What ``train_net.py`` and ``lazy_train_net.py`` share: their command line (read without torch in
``defeat.engine.arguments``, re-exported here), the datasets every
process registers, the hold on the output folder (:func:`hold_output_dir`: its lock, a failed
start undone), the checks before anything is written or built (:func:`preflight`), the settings
read from the data (:func:`resolve_data_settings`), the training sets checked after loading, the
guard of a resumed run's ``config.yaml``, and the launch."""

import argparse
import contextlib
import logging
import numbers
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog
from detectron2.engine import launch
from detectron2.utils.logger import setup_logger

from ..config.files import key_of, output_dir, saved_run_setting
from ..data.box_levels import auto_scale_base_pending, resolve_scale_base
from ..data.checks import check_training_data
from ..data.datasets import register_provided_datasets, setup_datasets
from .arguments import argument_parser, parse_args, take_trailing_options  # the light command line
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
    "resolve_data_settings",
    "hold_output_dir",
    "take_trailing_options",
    "setup_defeat_logger",
    "HeldLogRecords",
    "hold_log_records",
]


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


def resolve_data_settings(cfg, args: argparse.Namespace):
    """The settings a training run reads from its data, put in ``cfg`` (in place) after the
    preflight and before ``default_setup`` saves ``config.yaml``, so the saved config holds the
    number: ``MODEL.DEFEAT.NECK.SCALE_BASE: auto`` (``defeat.data.box_levels.resolve_scale_base``).
    Returns its ``ScaleBaseChoice`` (None: nothing to resolve), whose ``log()`` the caller calls
    once the run's log is set up. A resumed run (``--resume`` with a ``last_checkpoint`` in the output folder)
    takes the number its ``config.yaml`` recorded instead of reading the data again; nothing for
    an evaluation (the plain student has no neck loss). Call it in every process.

    Raises:
        ConfigFileError, DataCheckError: see ``resolve_scale_base`` (main process).
    """
    if getattr(args, "eval_only", False) or not auto_scale_base_pending(cfg):
        return None
    saved = None
    if getattr(args, "resume", False) and os.path.isfile(os.path.join(output_dir(cfg), "last_checkpoint")):
        value, file = saved_run_setting(cfg, ("neck", "scale_base"))
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0:
            saved = (float(value), file)
    return resolve_scale_base(cfg, saved=saved, log=False)


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
