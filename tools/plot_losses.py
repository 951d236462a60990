#!/usr/bin/env python
"""Plot a run's losses, their KD/detection balance and the KD weight schedule from its metrics.json.

    python tools/plot_losses.py output/demo/runs/student_defeat/metrics.json \
        --output output/demo/defeat_losses.png [--width 1000 --height 900]

Panels (each only if the run logged it): the student's own losses, the DeFeat neck losses, the
DeFeat head losses (``loss_defeat_*``, as added to the total: weighted and scheduled), their
balance (the KD terms' sum over the detection terms' sum, log scale, with the training log's
warning threshold dashed) and ``defeat/kd_weight``. Values are those Detectron2 wrote (median over its logging window).
Drawn with matplotlib (Agg); ``--output`` may end in .png, .jpg, .pdf or .svg.
"""

import argparse
import logging
import os

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import (
    FIGURE_FORMATS,
    LOSS_FIGURE_MIN_SIZE,
    ToolArgumentParser,
    add_overwrite_argument,
    check_figure_output,
    input_file_problem,
    setup_tool_logging,
)
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat


def parse_args(argv=None):
    p = ToolArgumentParser(prog="plot_losses.py", description=__doc__.splitlines()[0])
    p.add_argument("metrics", help="metrics.json of a Detectron2 run")
    p.add_argument(
        "--output",
        default="",
        help=f"image path (default: losses.png beside metrics.json); extension one of {', '.join(FIGURE_FORMATS)}",
    )
    p.add_argument("--width", type=int, default=1000, help=f"pixels, at least {LOSS_FIGURE_MIN_SIZE[0]}")
    p.add_argument("--height", type=int, default=900, help=f"pixels, at least {LOSS_FIGURE_MIN_SIZE[1]}")
    add_overwrite_argument(p)
    args = p.parse_args(argv)
    problem = input_file_problem(args.metrics, "metrics file")
    if problem:
        p.error(problem)
    width, height = LOSS_FIGURE_MIN_SIZE
    if args.width < width or args.height < height:
        p.error(f"--width {args.width} --height {args.height}: the figure needs at least {width}x{height} pixels")
    args.output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "losses.png")
    check_figure_output(p, args.output, {"metrics file": args.metrics}, args.overwrite)
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="plot_losses.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split

from defeat.analysis.loss_figures import loss_figure, read_metrics, save_figure
from defeat.engine.metrics_file import split_runs

logger = logging.getLogger("defeat.tools.plot_losses")


def main(argv=None) -> str:
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    setup_tool_logging()
    try:
        runs = split_runs(read_metrics(args.metrics))
        if len(runs) > 1:  # runs appended to one file: plot one run, never a merged curve
            logger.warning(
                "%s holds %d runs (the iteration starts again %d times); plotting the last one (%d rows)",
                args.metrics,
                len(runs),
                len(runs) - 1,
                len(runs[-1]),
            )
        figure = loss_figure(runs[-1] if runs else [], args.width, args.height)
    except ValueError as e:
        raise SystemExit(f"plot_losses.py: error: {args.metrics}: {e}") from e
    save_figure(figure, args.output)
    logger.info("wrote %s (%dx%d)", args.output, args.width, args.height)
    return args.output


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="plot_losses.py")
