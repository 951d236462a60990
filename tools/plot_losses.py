#!/usr/bin/env python
"""Plot a run's losses, their KD/detection balance and the KD weight schedule from its metrics.json.

    python tools/plot_losses.py output/demo/defeat_slimR18_from_R18/metrics.json \
        --output output/demo/defeat_losses.png [--width 1000 --height 900]

Panels (each only if the run logged it): the student's own losses, the DeFeat neck losses, the
DeFeat head losses (``loss_defeat_*``, as added to the total: weighted and scheduled), their
balance (the KD terms' sum over the detection terms' sum, log scale, with the training log's
warning threshold dashed) and ``defeat/kd_weight``. Values are those Detectron2 wrote (median over its logging window).
Drawn with matplotlib (Agg); ``--output`` may end in .png, .jpg, .pdf or .svg.
"""

import logging
import os
import warnings

with warnings.catch_warnings(record=True) as _early:  # the pinned stack's import-time warnings
    import defeat  # noqa: F401  (registers the models)
    from defeat.engine.quiet import quiet_logs
quiet_logs(_early)  # hides the pinned stack's known-harmless messages (defeat.engine.quiet)

from defeat.analysis.cli import (
    ToolArgumentParser,
    add_overwrite_argument,
    check_figure_output,
    input_file_problem,
    setup_tool_logging,
)
from defeat.analysis.loss_figures import IMAGE_FORMATS, MIN_SIZE, loss_figure, read_metrics, save_figure
from defeat.engine.metrics_file import split_runs

logger = logging.getLogger("defeat.tools.plot_losses")


def parse_args(argv=None):
    p = ToolArgumentParser(prog="plot_losses.py", description=__doc__.splitlines()[0])
    p.add_argument("metrics", help="metrics.json of a Detectron2 run")
    p.add_argument(
        "--output",
        default="",
        help=f"image path (default: losses.png beside metrics.json); extension one of {', '.join(IMAGE_FORMATS)}",
    )
    p.add_argument("--width", type=int, default=1000, help=f"pixels, at least {MIN_SIZE[0]}")
    p.add_argument("--height", type=int, default=900, help=f"pixels, at least {MIN_SIZE[1]}")
    add_overwrite_argument(p)
    args = p.parse_args(argv)
    problem = input_file_problem(args.metrics, "metrics file")
    if problem:
        p.error(problem)
    if args.width < MIN_SIZE[0] or args.height < MIN_SIZE[1]:
        p.error(
            f"--width {args.width} --height {args.height}: the figure needs at least {MIN_SIZE[0]}x{MIN_SIZE[1]} pixels"
        )
    args.output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "losses.png")
    check_figure_output(p, args.output, {"metrics file": args.metrics}, args.overwrite)
    return args


def main(argv=None) -> str:
    args = parse_args(argv)
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
    from defeat.engine.entry import run_entry_point

    run_entry_point(main, script="plot_losses.py")
