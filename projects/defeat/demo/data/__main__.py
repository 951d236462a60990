"""Generate the demo dataset and print a summary.

Usage: ``python -m defeat.demo.data [--dataset shapes|glyphs|photos] [--root DIR] [--seed S]
[--num-train N] [--num-val M] [--image-size P] [--num-classes K] [--force]``
"""

import argparse
import logging
import os
import time

from . import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_CLASSES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    DEFAULT_STYLE,
    STYLE_PREFIXES,
    STYLES,
    dataset_stats,
    default_root,
    generate_dataset,
)


def _parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m defeat.demo.data", description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset",
        choices=STYLES,
        default=DEFAULT_STYLE,
        help="which generated dataset: shapes (registered as defeat_demo_*), glyphs (defeat_glyphs_*) or photos "
        "(defeat_photos_*)",
    )
    where = os.path.dirname(default_root())
    p.add_argument("--root", default=None, help=f"output folder (default: {where}/<prefix of the dataset>)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    p.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help=f"keep the first K classes (default: all; {DEFAULT_NUM_CLASSES} for shapes and glyphs)",
    )
    p.add_argument("--force", action="store_true", help="regenerate even if up to date")
    return p.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    paths = generate_dataset(
        args.root or default_root(args.dataset),
        style=args.dataset,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
        num_classes=args.num_classes,
        force=args.force,
    )
    print(
        f"{args.dataset} dataset at {paths['root']} ready in {time.perf_counter() - start:.1f}s "
        f"(registered by train_net.py as {STYLE_PREFIXES[args.dataset]}_train / _val)"
    )
    for split in ("train", "val"):
        st = dataset_stats(paths[f"{split}_json"])
        print(
            f"\n[{split}] {st['images']} images, {st['annotations']} objects "
            f"({st['annotations'] / max(st['images'], 1):.2f} per image)"
        )
        print("  per size : " + ", ".join(f"{k}={v}" for k, v in st["per_size"].items()))
        print("  per class: " + ", ".join(f"{k}={v}" for k, v in st["per_class"].items()))


if __name__ == "__main__":
    from ...engine.entry import run_entry_point

    run_entry_point(main, script="python -m defeat.demo.data")
