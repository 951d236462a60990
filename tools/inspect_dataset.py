#!/usr/bin/env python
"""Inspect a dataset for a DeFeat config: classes, box sizes, FPN levels, object cells, SCALE_BASE.

    python tools/inspect_dataset.py --config-file configs/demo/defeat_slimR18_from_R18.yaml \
        --dataset my_train=data/train.json:data/images [--output output/inspect/my_train.png] [KEY VALUE ...]

Prints boxes per class, the distribution of box sizes after the config's test-time resize,
how many boxes each FPN level of ``MODEL.DEFEAT.NECK.IN_FEATURES`` gets under
``MASK_ASSIGN: scale`` with the config's ``SCALE_BASE``, the share of object cells per level
and a suggested ``SCALE_BASE``; writes a PNG of the same histograms. Reads the dataset only.
The computation is ``defeat.analysis.dataset_stats``.
"""

import argparse
import logging
import os

DEFEAT_LIGHT_START = True  # `import defeat` waits for load_defeat() below (defeat/__init__.py)

from defeat.analysis.cli import (
    FIGURE_FORMATS,
    ToolArgumentParser,
    add_overwrite_argument,
    check_figure_output,
    setup_tool_logging,
)
from defeat.config.paths import check_config_file
from defeat.data.datasets import check_dataset_specs
from defeat.engine.arguments import take_trailing_options
from defeat.engine.entry import run_entry_point
from defeat.engine.quiet import load_defeat
from defeat.errors import (
    ConfigFileError,
    DataCheckError,
    DatasetSpecError,
    DeFeatConfigError,
    OutputError,
    OverrideError,
)


def build_parser():
    p = ToolArgumentParser(prog="inspect_dataset.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config-file", required=True, metavar="FILE", help="DeFeat (or plain) YAML or LazyConfig (.py) config"
    )
    p.add_argument(
        "--dataset",
        default="",
        metavar="NAME or NAME=ANNOTATIONS.json[:IMAGE_ROOT]",
        help="dataset to inspect: a known name or a COCO json named on the spot "
        "(default: the config's first training set)",
    )
    p.add_argument(
        "--output",
        default="",
        help=f"figure of the histograms (default: output/inspect/<dataset>.png); {', '.join(FIGURE_FORMATS)}",
    )
    add_overwrite_argument(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (YAML), key=value (.py)")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = take_trailing_options(p, p.parse_args(argv))
    args.parser = p
    try:  # before the heavy imports, in the words main would use
        check_config_file(args.config_file)
    except ConfigFileError as e:
        raise SystemExit(f"--config-file: {e}") from e
    check_dataset_specs([args.dataset] if "=" in args.dataset else [], environment=False)
    return args


if __name__ == "__main__":  # --help, a bad argument, a missing file: answered before the heavy imports
    ARGS = run_entry_point(parse_args, script="inspect_dataset.py")

load_defeat()  # torch, Detectron2, the models registered; the pinned stack's known-harmless messages hidden

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog

from defeat.analysis.dataset_stats import config_stats, format_report, stats_figure
from defeat.config.files import (
    defeat_settings,
    load_config,
    set_run_values,
    train_dataset_names,
)
from defeat.data.datasets import check_images_under_root, dataset_from_argument, register_provided_datasets
from defeat.engine.outputs import check_output_dir
from defeat.engine.preflight import check_datasets

logger = logging.getLogger("defeat.tools.inspect_dataset")


def main(argv=None):
    """``argv``: the command line, or its parsed arguments (:func:`parse_args`)."""
    args = argv if isinstance(argv, argparse.Namespace) else parse_args(argv)
    setup_tool_logging()
    try:
        cfg = load_config(args.config_file, args.opts)
    except (ConfigFileError, OverrideError, DeFeatConfigError) as e:
        raise SystemExit(f"--config-file: {e}") from e
    set_run_values(cfg, device="cpu")
    names = train_dataset_names(cfg)
    if not (args.dataset or names):
        raise SystemExit(f"--dataset: {args.config_file} names no training set; name the dataset to inspect")
    name = dataset_from_argument(args.dataset or names[0])
    register_provided_datasets([name])
    meta = MetadataCatalog.get(name)
    out = os.path.abspath(args.output or os.path.join("output", "inspect", f"{name}.png"))
    try:  # the one dataset check (json as written) and the one output guard, before reading images
        check_datasets([name], [], None, "")
        check_output_dir(os.path.dirname(out), {f"image folder of dataset {name!r}": meta.get("image_root", "")})
    except (DataCheckError, OutputError) as e:
        raise SystemExit(f"inspect_dataset.py: error: {e}") from e
    check_figure_output(
        args.parser,
        out,
        {"config file": args.config_file, f"annotations of dataset {name!r}": meta.get("json_file", "")},
        args.overwrite,
    )
    dicts = DatasetCatalog.get(name)
    if meta.get("image_root", None):
        try:  # its figure is guarded against the image folder only
            check_images_under_root(dicts, name, str(meta.image_root))
        except DatasetSpecError as e:
            raise SystemExit(f"inspect_dataset.py: error: {e}") from e
    classes = meta.get("thing_classes") or [
        str(c) for c in range(1 + max((a["category_id"] for r in dicts for a in r.get("annotations", ())), default=0))
    ]
    try:
        stats = config_stats(cfg, defeat_settings(cfg)["neck"], dicts, name, classes)
    except DeFeatConfigError as e:
        raise SystemExit(str(e)) from e
    except ConfigFileError as e:
        raise SystemExit(f"{args.config_file}: {e}") from e
    print(format_report(stats))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stats_figure(stats, out)
    print(f"\nwrote {out}")
    return stats


if __name__ == "__main__":
    run_entry_point(main, ARGS, script="inspect_dataset.py")
