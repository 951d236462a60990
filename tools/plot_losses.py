#!/usr/bin/env python
"""Plot a run's losses and the KD weight schedule from its metrics.json as a PNG.

    python tools/plot_losses.py output/demo/defeat_slimR18_from_R18/metrics.json \
        --output output/demo/defeat_losses.png [--width 1000 --height 900]

Panels (each only if the run logged it): the student's own losses, the DeFeat neck losses, the
DeFeat head losses (``loss_defeat_*``, as added to the total: weighted and scheduled) and
``defeat/kd_weight``. Values are those Detectron2 wrote (median over its logging window).
"""
import argparse
import logging
import os

import cv2

from defeat.plots import loss_figure, read_metrics

logger = logging.getLogger("defeat.tools.plot_losses")


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", help="metrics.json of a Detectron2 run")
    p.add_argument("--output", default="", help="PNG path (default: losses.png beside metrics.json)")
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--height", type=int, default=900)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "losses.png")
    figure = loss_figure(read_metrics(args.metrics), args.width, args.height)
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    if not cv2.imwrite(out, figure):
        raise SystemExit(f"could not write {out}")
    logger.info("wrote %s (%dx%d)", out, figure.shape[1], figure.shape[0])
    return out


if __name__ == "__main__":
    main()
