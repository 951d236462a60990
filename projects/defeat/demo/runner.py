"""``python -m defeat demo`` (``make demo``): ``python -m defeat run`` on the embedded dataset.

    python -m defeat demo [--family rcnn|retinanet] [--output output/demo] [OPTIONS OF python -m defeat run]

The demo is :mod:`defeat.demo.pipeline` with a demo preset of ``defeat.config.presets`` on the
generated ``defeat_demo_train`` / ``defeat_demo_val`` (written to ``datasets/defeat_demo`` on first
use): ``--family rcnn`` (the default) runs preset ``demo`` with its report in ``--output``;
``--family retinanet`` runs preset ``demo-retinanet`` with its report in ``<output>/retinanet``,
its teacher starting from the ``rcnn`` demo's teacher (``<output>/runs/teacher``, trained there
first when missing). Every other option goes to ``python -m defeat run`` as it is: ``--teacher-iters``,
``--student-iters``, ``--teacher-processes``, ``--precision``, ``--fresh-teacher``,
``--no-eval-teacher``, ...
"""

import os
import sys
from typing import List, Optional, Sequence

FAMILIES = {"rcnn": "demo", "retinanet": "demo-retinanet"}  # family -> preset
DEFAULT_OUTPUT = "output/demo"


def run_argv(argv: Optional[Sequence[str]] = None) -> List[str]:
    """The arguments of ``python -m defeat run`` that ``python -m defeat demo argv`` stands for."""
    from ..analysis.cli import ToolArgumentParser

    p = ToolArgumentParser(
        prog="python -m defeat demo",
        description="make demo: python -m defeat run on the embedded dataset, with a demo preset",
        epilog="Every other option is one of python -m defeat run (python -m defeat run --help).",
    )
    p.add_argument("--family", choices=sorted(FAMILIES), default="rcnn", help="detector family of the demo")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="the report folder of the rcnn demo")
    args, rest = p.parse_known_args(argv)
    if args.family == "rcnn":
        return ["--preset", FAMILIES["rcnn"], "--output", args.output, *rest]
    from .pipeline import RUN_DIRS

    report = os.path.join(args.output, args.family)
    start = os.path.join(args.output, "runs", RUN_DIRS["teacher"])  # the rcnn demo's teacher
    return ["--preset", FAMILIES[args.family], "--output", report, "--init-teacher-run", start, *rest]


def main(argv=None) -> dict:
    """Run the demo; return the summary of ``python -m defeat run``."""
    from . import pipeline

    return pipeline.main(run_argv(argv))


if __name__ == "__main__":
    from ..engine.entry import run_entry_point

    sys.exit(0 if run_entry_point(main, script="python -m defeat.demo") else 1)
