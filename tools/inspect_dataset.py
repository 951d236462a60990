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

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

import defeat  # noqa: F401  (registers the DeFeat meta-architectures and backbones)
from defeat.analysis.dataset_stats import compute_stats, format_report, stats_figure
from defeat.config.files import (
    build_backbone_from_config,
    defeat_settings,
    inference_augmentations,
    load_config,
    train_dataset_names,
)
from defeat.engine.datasets import dataset_from_argument, register_provided_datasets
from defeat.errors import ConfigFileError, DeFeatConfigError, OverrideError

logger = logging.getLogger("defeat.tools.inspect_dataset")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    p.add_argument("--output", default="", help="PNG of the histograms (default: output/inspect/<dataset>.png)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (YAML), key=value (.py)")
    return p.parse_args(argv)


def _inputs(name, dicts):
    """Files the tool reads: it must not write over any of them."""
    meta = MetadataCatalog.get(name)
    paths = {os.path.abspath(r["file_name"]) for r in dicts if "file_name" in r}
    return paths | {os.path.abspath(meta.get(k)) for k in ("json_file",) if meta.get(k)}


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config_file, args.opts)
    except (ConfigFileError, OverrideError, DeFeatConfigError) as e:
        raise SystemExit(f"--config-file: {e}") from e
    if isinstance(cfg, CfgNode):
        cfg.MODEL.DEVICE = "cpu"
    else:
        cfg.train.device = "cpu"
    names = train_dataset_names(cfg)
    if not (args.dataset or names):
        raise SystemExit(f"--dataset: {args.config_file} names no training set; name the dataset to inspect")
    name = dataset_from_argument(args.dataset or names[0])
    register_provided_datasets([name])
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes") or [
        str(c) for c in range(1 + max((a["category_id"] for r in dicts for a in r.get("annotations", ())), default=0))
    ]
    out = os.path.abspath(args.output or os.path.join("output", "inspect", f"{name}.png"))
    image_root = meta.get("image_root")
    if out in _inputs(name, dicts) or (image_root and out.startswith(os.path.abspath(image_root) + os.sep)):
        raise SystemExit(
            f"--output {out} is an input of dataset {name} or inside its image folder: choose another path"
        )
    backbone = build_backbone_from_config(cfg)  # the student's levels and strides, as the distiller uses them
    shapes = backbone.output_shape()
    neck = defeat_settings(cfg)["neck"]
    features = list(neck["in_features"])
    missing = [f for f in features if f not in shapes]
    if missing:
        raise SystemExit(f"MODEL.DEFEAT.NECK.IN_FEATURES {missing} are not backbone outputs {sorted(shapes)}")
    resize = next((a for a in inference_augmentations(cfg) if isinstance(a, T.ResizeShortestEdge)), None)
    if resize is None:
        raise SystemExit(f"{args.config_file}: its test-time augmentations have no ResizeShortestEdge to size boxes by")
    stats = compute_stats(
        dicts,
        name,
        classes,
        resize.short_edge_length[0],
        resize.max_size,
        features,
        [shapes[f].stride for f in features],
        backbone.size_divisibility,
        neck["mask_assign"],
        neck["scale_base"],
    )
    print(format_report(stats))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stats_figure(stats, out)
    print(f"\nwrote {out}")
    return stats


if __name__ == "__main__":
    main()
