"""What ``train_net.py`` and ``lazy_train_net.py`` share: their command line, the datasets every
process registers, the training sets checked before any model is built, the guard of a resumed
run's ``config.yaml``, and the launch."""

import argparse
import contextlib
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser, launch

from .checkpoint import restore_on_failure
from .data_checks import IMAGE_CHECKS, check_training_data
from .datasets import add_dataset_argument, register_provided_datasets, setup_datasets, take_dataset_options

__all__ = [
    "argument_parser",
    "parse_args",
    "launch_main",
    "register_datasets",
    "load_and_check_training_data",
    "resume_guard",
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
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments; ``--dataset`` is also accepted among the trailing config overrides."""
    return take_dataset_options(argument_parser().parse_args(argv))


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
    ``names`` (``defeat.engine.datasets.PROVIDED_DATASETS``)."""
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


def resume_guard(output_dir: str, args: argparse.Namespace):
    """``default_setup`` rewrites ``OUTPUT_DIR/config.yaml`` first; a resume refused while setting
    up (another model than the checkpoint's, no readable checkpoint) puts the run's own back."""
    if not args.resume or not comm.is_main_process():
        return contextlib.nullcontext()
    return restore_on_failure(os.path.join(output_dir, "config.yaml"))
