"""What ``train_net.py`` and ``lazy_train_net.py`` share: their command line and their launch."""

import argparse
from typing import Callable, Optional, Sequence

from detectron2.engine import default_argument_parser, launch

from .data_checks import IMAGE_CHECKS
from .datasets import add_dataset_argument, setup_datasets, take_dataset_options

__all__ = ["argument_parser", "parse_args", "launch_main"]


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
